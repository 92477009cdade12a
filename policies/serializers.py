from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from rest_framework import serializers
from rest_framework.fields import empty

from conduit import strict
from policies.checks import (
    MASKED_PASSWORD,
    MIN_PASSWORD_LENGTH,
    Credential,
    PolicyValueError,
    normalise_domain_list,
    normalise_ip_list,
    parse_credentials,
)
from policies.models import SmtpCredential, SmtpSecurityPolicy

MAX_LIST_LENGTH = 10_000
MAX_USERNAME_LENGTH = SmtpCredential._meta.get_field("username").max_length

T = TypeVar("T")


def _checked(parse: Callable[..., T], value: str, field: str) -> T:
    try:
        return parse(value, field=field)
    except PolicyValueError as exc:
        raise serializers.ValidationError(exc.messages) from None


def _list_field(help_text: str) -> strict.CharField:
    return strict.CharField(
        required=False,
        default="",
        allow_blank=True,
        max_length=MAX_LIST_LENGTH,
        help_text=help_text + " Separated by commas, spaces or newlines; empty: no restriction.",
    )


# --- Requests -------------------------------------------------------------------


class CreateSmtpSecurityPolicyRequestSerializer(serializers.Serializer):
    name = strict.CharField(max_length=100)
    require_smtp_auth = serializers.BooleanField(
        required=False,
        default=False,
        help_text="Senders must log in (SMTP AUTH) with one of `smtp_credentials`; "
        "needs at least one credential.",
    )
    require_spf = serializers.BooleanField(
        required=False,
        default=False,
        help_text="SPF must pass, for one of `allowed_spf_domains` when that is set.",
    )
    require_dkim = serializers.BooleanField(
        required=False,
        default=False,
        help_text="A DKIM signature must verify, by one of `allowed_dkim_domains` when set.",
    )
    require_dmarc = serializers.BooleanField(
        required=False,
        default=False,
        help_text="DMARC must pass: SPF or a DKIM signature passes for a domain aligned with "
        "the From domain (RFC 7489; relaxed or strict as that domain's record asks), whatever "
        "policy the domain publishes. Mail from a domain without a DMARC record fails too.",
    )
    allowed_source_ips = _list_field("IPv4/IPv6 addresses and CIDR networks, e.g. 192.0.2.0/24.")
    allowed_spf_domains = _list_field(
        "Domains whose SPF pass counts (subdomains included); used with require_spf."
    )
    allowed_dkim_domains = _list_field(
        "Domains whose DKIM signature counts (subdomains included); used with require_dkim."
    )
    smtp_credentials = strict.CharField(
        required=False,
        default="",
        allow_blank=True,
        trim_whitespace=False,
        max_length=MAX_LIST_LENGTH,
        help_text="`username:password` entries separated by commas or newlines; usernames "
        f"unique, passwords at least {MIN_PASSWORD_LENGTH} characters. Responses show "
        f"`username:{MASKED_PASSWORD}`; sending that back keeps the stored password.",
    )

    def validate_allowed_source_ips(self, value: str) -> str:
        return _checked(normalise_ip_list, value, "allowed_source_ips")

    def validate_allowed_spf_domains(self, value: str) -> str:
        return _checked(normalise_domain_list, value, "allowed_spf_domains")

    def validate_allowed_dkim_domains(self, value: str) -> str:
        return _checked(normalise_domain_list, value, "allowed_dkim_domains")

    def validate_smtp_credentials(self, value: str) -> list[Credential]:
        credentials = _checked(parse_credentials, value, "smtp_credentials")
        too_long = [c.username for c in credentials if len(c.username) > MAX_USERNAME_LENGTH]
        if too_long:
            raise serializers.ValidationError(
                [
                    f"username {name[:20]!r}… is longer than {MAX_USERNAME_LENGTH} characters"
                    for name in too_long
                ]
            )
        return credentials


class UpdateSmtpSecurityPolicyRequestSerializer(CreateSmtpSecurityPolicyRequestSerializer):
    """Every field is optional: fields left out keep their stored values."""

    def get_fields(self) -> dict[str, serializers.Field]:
        fields = super().get_fields()
        for field in fields.values():
            # No defaults either: an absent field must not reset the stored value.
            field.required = False
            field.default = empty
        return fields


# --- Responses ------------------------------------------------------------------


class SmtpSecurityPolicyResponseSerializer(serializers.ModelSerializer):
    smtp_credentials = serializers.SerializerMethodField(
        help_text=f"The usernames, each with a masked password: `alice:{MASKED_PASSWORD}`."
    )

    class Meta:
        model = SmtpSecurityPolicy
        fields = [
            "allowed_dkim_domains",
            "allowed_source_ips",
            "allowed_spf_domains",
            "created_at",
            "id",
            "name",
            "require_dkim",
            "require_dmarc",
            "require_smtp_auth",
            "require_spf",
            "smtp_credentials",
            "updated_at",
        ]
        read_only_fields = fields

    def get_smtp_credentials(self, obj: SmtpSecurityPolicy) -> str:
        return ",".join(f"{c.username}:{MASKED_PASSWORD}" for c in obj.credentials.all())
