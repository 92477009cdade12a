from __future__ import annotations

from rest_framework import serializers

from conduit import strict
from domains.models import Domain
from policies.checks import normalise_domain_name

# --- Requests -------------------------------------------------------------------


class CreateDomainClaimRequestSerializer(serializers.Serializer):
    name = strict.CharField(
        # Generous: the 253-character rule applies to the A-label form, checked below.
        max_length=1024,
        help_text="The domain, e.g. example.com or bücher.example; stored lower-case in "
        "IDNA (A-label) form, e.g. xn--bcher-kva.example.",
    )

    def validate_name(self, value: str) -> str:
        try:
            return normalise_domain_name(value)
        except ValueError as exc:
            raise serializers.ValidationError(str(exc)) from None


# --- Responses ------------------------------------------------------------------


class DomainResponseSerializer(serializers.ModelSerializer):
    # Needs context["account"]: the token is shown to the domain's owner only.
    account_id = serializers.UUIDField(read_only=True, help_text="The owning account.")
    verification_token = serializers.SerializerMethodField(
        help_text="Publish it as TXT _conduit-verify.<name>. Empty for a public domain "
        "of another account."
    )

    class Meta:
        model = Domain
        fields = [
            "account_id",
            "created_at",
            "id",
            "is_public",
            "name",
            "updated_at",
            "verification_token",
            "verified",
        ]
        read_only_fields = fields
        extra_kwargs = {
            "is_public": {
                "help_text": "Any account may put webhook addresses on a public domain; "
                "set by operators."
            }
        }

    def get_verification_token(self, obj: Domain) -> str:
        return obj.verification_token if obj.account_id == self.context["account"].id else ""
