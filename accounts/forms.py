"""Forms of the accounts app outside the API: the admin's sign-in with a second factor."""

from __future__ import annotations

from django import forms
from django.contrib.admin.forms import AdminAuthenticationForm
from django.core.exceptions import ValidationError

from accounts import twofactor
from accounts.models import Account
from conduit.errors import ApiError
from conduit.net import client_ip


class TwoFactorAdminAuthenticationForm(AdminAuthenticationForm):
    """The admin login form; staff with 2FA on also give a code (or a backup code)."""

    otp_token = forms.CharField(
        required=False,
        max_length=32,
        label="Two-factor code",
        widget=forms.TextInput(attrs={"autocomplete": "one-time-code"}),
    )

    def clean(self) -> dict:
        cleaned_data = super().clean()
        account = self.get_user()
        if account is not None and twofactor.totp_is_enabled(account=account):
            self._verify_second_factor(account, cleaned_data.get("otp_token") or "")
        return cleaned_data

    def _verify_second_factor(self, account: Account, code: str) -> None:
        try:
            if not code:
                raise ValidationError(
                    "This account has two-factor authentication: enter the code from your "
                    "authenticator app, or a backup code.",
                    code="otp_token_required",
                )
            try:
                device = twofactor.totp_verify_for_admin(
                    account=account, code=code, ip=client_ip(self.request)
                )
            except ApiError as exc:  # a wrong code, or too many of them
                raise ValidationError(exc.message, code=exc.code) from None
        except ValidationError:
            # Not signed in after all (django-otp's template also reads this).
            self.user_cache = None
            raise
        # django-otp's user_logged_in handler keeps the device in the session, and
        # OTPMiddleware then marks the user verified on each request.
        account.otp_device = device
