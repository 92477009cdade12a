from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.admin import UserAdmin
from django.core.exceptions import ValidationError
from django.db.models import Exists, OuterRef, QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django_otp.plugins.otp_static.models import StaticDevice
from django_otp.plugins.otp_totp.models import TOTPDevice

from accounts import twofactor
from accounts.models import Account, AccountTOTPDevice, ApiToken, AuditLogEntry, AuthSession
from conduit.errors import ApiError
from conduit.net import client_ip

# --- The admin site: a second factor for staff who have 2FA on ----------------------


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


class TwoFactorAdminSite(admin.AdminSite):
    """The admin, which staff with 2FA on enter only after giving a code at login.

    conduit/urls.py makes this the class of ``admin.site``, so every app's
    registrations stay. Unlike django_otp.admin.OTPAdminSite, staff without 2FA
    still get in with their password alone.
    """

    login_form = TwoFactorAdminAuthenticationForm
    # django-otp's login template: the admin's own shows no field beyond the password.
    login_template = "otp/admin111/login.html"

    def has_permission(self, request: HttpRequest) -> bool:
        if not super().has_permission(request):
            return False
        # is_verified() comes from OTPMiddleware: true once a code was given at login.
        # Without it, a password-only session (e.g. from /api-auth/login/) would do.
        return request.user.is_verified() or not twofactor.totp_is_enabled(account=request.user)


# Operators see and reset 2FA on the account page below. The plugins' own pages
# would show every user's TOTP secret (as a QR code) and let devices be added by
# hand, so they are not offered.
admin.site.unregister(TOTPDevice)
admin.site.unregister(StaticDevice)


class TwoFactorFilter(admin.SimpleListFilter):
    title = "two-factor authentication"
    parameter_name = "two_factor"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list:
        return [("on", "On"), ("off", "Off")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Account]) -> QuerySet[Account]:
        if self.value() in ("on", "off"):
            return queryset.filter(has_two_factor=self.value() == "on")
        return queryset


@admin.register(Account)
class AccountAdmin(UserAdmin):
    ordering = ["email"]
    list_display = ["email", "is_active", "is_staff", "two_factor", "timezone", "created_at"]
    list_filter = ["is_active", "is_staff", "is_superuser", TwoFactorFilter]
    search_fields = ["email"]
    readonly_fields = ["id", "created_at", "updated_at", "last_login", "two_factor"]
    fieldsets = [
        (None, {"fields": ["id", "email", "password", "timezone"]}),
        ("Permissions", {"fields": ["is_active", "is_staff", "is_superuser", "groups"]}),
        (
            "Two-factor authentication",
            {
                "fields": ["two_factor"],
                "description": "To reset it for a user who lost both the app and the backup "
                "codes, use the action “Reset two-factor authentication” on the account list.",
            },
        ),
        ("Dates", {"fields": ["last_login", "created_at", "updated_at"]}),
    ]
    add_fieldsets = [
        (None, {"classes": ["wide"], "fields": ["email", "password1", "password2"]}),
    ]
    filter_horizontal = ["groups"]
    actions = ["reset_two_factor"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Account]:
        confirmed_device = AccountTOTPDevice.objects.filter(user=OuterRef("pk"), confirmed=True)
        return super().get_queryset(request).annotate(has_two_factor=Exists(confirmed_device))

    @admin.display(boolean=True, description="2FA", ordering="has_two_factor")
    def two_factor(self, obj: Account) -> bool:
        return obj.has_two_factor  # type: ignore[attr-defined]

    @admin.action(description="Reset two-factor authentication", permissions=["change"])
    def reset_two_factor(self, request: HttpRequest, queryset: QuerySet[Account]) -> None:
        reset = [
            account.email
            for account in queryset
            if twofactor.totp_reset_by_operator(
                account=account, operator=request.user, ip=client_ip(request)
            )
        ]
        if reset:
            self.message_user(
                request,
                f"Two-factor authentication reset for {', '.join(reset)}; they sign in with "
                "their password alone until they set it up again.",
                messages.SUCCESS,
            )
        else:
            self.message_user(
                request,
                "None of the selected accounts had two-factor authentication.",
                messages.INFO,
            )


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    # Only the hash is stored; the admin shows the first characters, never a secret.
    list_display = ["name", "account", "token_start", "expires_at", "last_used_at", "created_at"]
    search_fields = ["name", "account__email", "token_start"]
    readonly_fields = ["id", "account", "token_start", "last_used_at", "created_at"]
    exclude = ["token_hash"]
    list_select_related = ["account"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


@admin.register(AuthSession)
class AuthSessionAdmin(admin.ModelAdmin):
    list_display = ["id", "account", "created_at", "ip", "revoked_at", "rotated_at"]
    list_filter = [("revoked_at", admin.EmptyFieldListFilter)]
    search_fields = ["account__email", "ip"]
    exclude = ["access_token_hash", "refresh_token_hash"]
    readonly_fields = [
        "id",
        "account",
        "chain_id",
        "access_expires_at",
        "refresh_expires_at",
        "created_at",
        "rotated_at",
        "revoked_at",
        "ip",
        "user_agent",
    ]
    list_select_related = ["account"]
    actions = ["revoke"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.action(description="Revoke selected sessions")
    def revoke(self, request: HttpRequest, queryset: QuerySet[AuthSession]) -> None:
        count = queryset.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())
        self.message_user(request, f"Revoked {count} session(s).", messages.SUCCESS)


@admin.register(AuditLogEntry)
class AuditLogEntryAdmin(admin.ModelAdmin):
    list_display = ["created_at", "action", "account", "ip"]
    list_filter = ["action"]
    search_fields = ["account__email", "ip", "action"]
    list_select_related = ["account"]
    date_hierarchy = "created_at"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False
