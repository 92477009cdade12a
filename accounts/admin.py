from __future__ import annotations

from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone

from accounts.models import Account, ApiToken, AuditLogEntry, AuthSession


@admin.register(Account)
class AccountAdmin(UserAdmin):
    ordering = ["email"]
    list_display = ["email", "is_active", "is_staff", "timezone", "created_at"]
    list_filter = ["is_active", "is_staff", "is_superuser"]
    search_fields = ["email"]
    readonly_fields = ["id", "created_at", "updated_at", "last_login"]
    fieldsets = [
        (None, {"fields": ["id", "email", "password", "timezone"]}),
        ("Permissions", {"fields": ["is_active", "is_staff", "is_superuser", "groups"]}),
        ("Dates", {"fields": ["last_login", "created_at", "updated_at"]}),
    ]
    add_fieldsets = [
        (None, {"classes": ["wide"], "fields": ["email", "password1", "password2"]}),
    ]
    filter_horizontal = ["groups"]


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
