from __future__ import annotations

from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin
from django.db.models import Exists, OuterRef, QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django_otp.plugins.otp_static.models import StaticDevice
from django_otp.plugins.otp_totp.models import TOTPDevice

from accounts import twofactor
from accounts.models import Account, AccountTOTPDevice, ApiToken, AuditLogEntry, AuthSession
from conduit.admin import ReadOnlyAdminMixin
from conduit.net import client_ip

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
    ordering = ["-created_at"]
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
    ordering = ["-created_at"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


@admin.register(AuthSession)
class AuthSessionAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
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
    ordering = ["-created_at"]
    actions = ["revoke"]

    @admin.action(description="Revoke selected sessions", permissions=["operate"])
    def revoke(self, request: HttpRequest, queryset: QuerySet[AuthSession]) -> None:
        count = queryset.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())
        self.message_user(request, f"Revoked {count} session(s).", messages.SUCCESS)


@admin.register(AuditLogEntry)
class AuditLogEntryAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["created_at", "action", "account", "ip"]
    list_filter = ["action"]
    search_fields = ["account__email", "ip", "action"]
    list_select_related = ["account"]
    date_hierarchy = "created_at"
    ordering = ["-created_at"]

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False
