from __future__ import annotations

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from conduit.admin import ReadOnlyAdminMixin
from policies.models import SmtpCredential, SmtpSecurityPolicy


class SmtpCredentialInline(admin.TabularInline):
    # Usernames only: the password hash is never shown, and passwords are set
    # through the API, where they are validated and hashed.
    model = SmtpCredential
    fields = ["username"]
    readonly_fields = ["username"]
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(SmtpSecurityPolicy)
class SmtpSecurityPolicyAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    # Operators inspect and delete policies here; owners edit them through the API,
    # which validates, normalises and audits every change.
    list_display = [
        "name",
        "account",
        "require_smtp_auth",
        "require_spf",
        "require_dkim",
        "require_dmarc",
        "usernames",
        "updated_at",
    ]
    list_filter = ["require_smtp_auth", "require_spf", "require_dkim", "require_dmarc"]
    search_fields = ["name", "account__email", "credentials__username"]
    list_select_related = ["account"]
    ordering = ["-created_at"]
    inlines = [SmtpCredentialInline]
    readonly_fields = [
        "id",
        "account",
        "name",
        "require_smtp_auth",
        "require_spf",
        "require_dkim",
        "require_dmarc",
        "allowed_source_ips",
        "allowed_spf_domains",
        "allowed_dkim_domains",
        "created_at",
        "updated_at",
    ]

    def get_queryset(self, request: HttpRequest) -> QuerySet[SmtpSecurityPolicy]:
        return super().get_queryset(request).prefetch_related("credentials")

    @admin.display(description="SMTP usernames")
    def usernames(self, obj: SmtpSecurityPolicy) -> str:
        return ", ".join(c.username for c in obj.credentials.all())
