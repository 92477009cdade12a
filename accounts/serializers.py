from __future__ import annotations

import zoneinfo

from rest_framework import serializers

from accounts.models import Account, ApiToken, AuditLogEntry
from accounts.services import normalise_ip_entries
from accounts.tokens import mask_token
from conduit import strict

# --- Requests -------------------------------------------------------------------


class CreateAccountRequestSerializer(serializers.Serializer):
    email = strict.EmailField(max_length=254)
    password = strict.CharField(max_length=256, trim_whitespace=False)


class CreateSessionRequestSerializer(serializers.Serializer):
    email = strict.CharField(max_length=254)
    password = strict.CharField(max_length=256, trim_whitespace=False)


class RefreshSessionRequestSerializer(serializers.Serializer):
    refresh_token = strict.CharField(max_length=256)


class DeleteSessionRequestSerializer(serializers.Serializer):
    refresh_token = strict.CharField(
        max_length=256,
        required=False,
        help_text="Also revoke this refresh token (the session's own is always revoked).",
    )


class ChangePasswordRequestSerializer(serializers.Serializer):
    current_password = strict.CharField(max_length=256, trim_whitespace=False)
    new_password = strict.CharField(max_length=256, trim_whitespace=False)
    revoke_api_tokens = serializers.BooleanField(
        required=False, default=False, help_text="Also revoke every API token of the account."
    )


class RequestPasswordResetRequestSerializer(serializers.Serializer):
    email = strict.CharField(max_length=254)


class ConfirmPasswordResetRequestSerializer(serializers.Serializer):
    token = strict.CharField(max_length=256)
    new_password = strict.CharField(max_length=256, trim_whitespace=False)


class UpdateTimezoneRequestSerializer(serializers.Serializer):
    timezone = strict.CharField(max_length=64, help_text="An IANA time zone, e.g. Europe/Paris")

    def validate_timezone(self, value: str) -> str:
        if value not in zoneinfo.available_timezones():
            raise serializers.ValidationError(
                f"'{value}' is not an IANA time zone name; use one like 'Europe/Paris' or 'UTC'."
            )
        return value


class DeleteAccountRequestSerializer(serializers.Serializer):
    confirm = serializers.BooleanField(help_text="Must be true.")
    password = strict.CharField(max_length=256, trim_whitespace=False)

    def validate_confirm(self, value: bool) -> bool:
        if value is not True:
            raise serializers.ValidationError("Set confirm to true to delete the account.")
        return value


class CreateAPITokenRequestSerializer(serializers.Serializer):
    name = strict.CharField(max_length=100)
    expires_in = serializers.IntegerField(
        required=False,
        allow_null=True,
        min_value=60,
        max_value=10 * 365 * 24 * 3600,
        help_text="Lifetime in seconds; omit for a token that does not expire.",
    )
    allowed_ips = serializers.ListField(
        child=strict.CharField(max_length=64),
        required=False,
        default=list,
        max_length=100,
        help_text="IPs or CIDR networks the token may be used from; empty for anywhere.",
    )

    def validate_allowed_ips(self, value: list[str]) -> list[str]:
        try:
            return normalise_ip_entries(value)
        except ValueError as exc:
            raise serializers.ValidationError(str(exc)) from None


# --- Responses ------------------------------------------------------------------


class PingResponseSerializer(serializers.Serializer):
    status = strict.CharField(help_text="`ok` when the API is up.")


# Response serializers mark every field read-only: drf-spectacular then lists them all
# as required, which they are (every response carries every field, null or not).


class AccountResponseSerializer(serializers.ModelSerializer):
    class Meta:
        model = Account
        fields = ["id", "email", "timezone", "created_at", "updated_at"]
        read_only_fields = fields


class SessionResponseSerializer(serializers.Serializer):
    access_token = strict.CharField()
    refresh_token = strict.CharField()
    expires_in = serializers.IntegerField(help_text="Seconds until the access token expires.")


class APITokenResponseSerializer(serializers.ModelSerializer):
    token = serializers.SerializerMethodField(
        help_text="The whole token on creation only; a masked form afterwards."
    )
    allowed_ips = serializers.ListField(child=strict.CharField(), read_only=True)

    class Meta:
        model = ApiToken
        fields = ["id", "name", "token", "allowed_ips", "expires_at", "last_used_at", "created_at"]
        read_only_fields = fields

    def get_token(self, obj: ApiToken) -> str:
        plain = self.context.get("plain_token")
        return plain if plain else mask_token(obj.token_start)


class AuditLogEntryResponseSerializer(serializers.ModelSerializer):
    # A JSON object (never a list or a scalar): documented as one.
    metadata = serializers.DictField(read_only=True)

    class Meta:
        model = AuditLogEntry
        fields = ["id", "action", "ip", "metadata", "created_at"]
        read_only_fields = fields


# --- Two-factor authentication ----------------------------------------------------

_CODE_HELP = (
    "The current 6-digit code from the authenticator app, or an unused backup code "
    "(e.g. `k7m2q-x9fhd`; case, spaces and dashes do not matter)."
)


class TOTPCodeRequestSerializer(serializers.Serializer):
    code = strict.CharField(max_length=32, help_text=_CODE_HELP)


class CompleteTOTPSessionRequestSerializer(serializers.Serializer):
    totp_token = strict.CharField(
        max_length=256, help_text="The challenge returned by POST /api/v1/sessions."
    )
    code = strict.CharField(max_length=32, help_text=_CODE_HELP)


class SetupTOTPResponseSerializer(serializers.Serializer):
    secret = strict.CharField(help_text="Base32 secret, for typing into the app by hand.")
    otpauth_url = strict.CharField(
        help_text="`otpauth://totp/Conduit:<email>?secret=...&issuer=Conduit`"
    )
    qr_code_png = strict.CharField(help_text="The otpauth URL as a QR code: base64 PNG.")


class BackupCodesResponseSerializer(serializers.Serializer):
    backup_codes = serializers.ListField(
        child=strict.CharField(),
        help_text="Ten single-use codes, shown only now; each replaces a TOTP code once.",
    )


class TOTPChallengeResponseSerializer(serializers.Serializer):
    totp_required = serializers.BooleanField(
        help_text="Always true: the password was right, and a TOTP code is needed."
    )
    totp_token = strict.CharField(
        help_text="Send it with a code to POST /api/v1/sessions/2fa within 5 minutes (by "
        "default); it works once."
    )
