from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from conduit.admin import ReadOnlyAdminMixin
from conduit.errors import ApiError
from conduit.net import client_ip
from domains import services
from domains.models import Domain


@admin.register(Domain)
class DomainAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    # Owners claim domains through the API (validated, audited); operators verify
    # them and decide which are public, through the actions only, so that the
    # rules of domains.services (one verified owner per name, public only when
    # verified) hold here too.
    list_display = ["name", "account", "verified", "is_public", "verified_at", "created_at"]
    list_filter = ["verified", "is_public"]
    search_fields = ["name", "account__email"]
    list_select_related = ["account"]
    ordering = ["-created_at"]
    readonly_fields = [
        "id",
        "name",
        "account",
        "verified",
        "verified_at",
        "is_public",
        "verification_token",
        "created_at",
        "updated_at",
    ]
    actions = ["mark_public", "mark_not_public", "verify_now"]

    @admin.action(description="Mark public (any account may use it)", permissions=["operate"])
    def mark_public(self, request: HttpRequest, queryset: QuerySet[Domain]) -> None:
        unverified = queryset.filter(verified=False).count()
        changed = services.domain_set_public(domains=queryset, is_public=True)
        self.message_user(request, f"Marked {changed} domain(s) public.", messages.SUCCESS)
        if unverified:
            self.message_user(
                request,
                f"Skipped {unverified} unverified domain(s): verify a domain before making "
                "it public.",
                messages.WARNING,
            )

    @admin.action(description="Mark not public", permissions=["operate"])
    def mark_not_public(self, request: HttpRequest, queryset: QuerySet[Domain]) -> None:
        changed = services.domain_set_public(domains=queryset, is_public=False)
        self.message_user(request, f"Marked {changed} domain(s) not public.", messages.SUCCESS)

    @admin.action(description="Verify now (DNS check)", permissions=["operate"])
    def verify_now(self, request: HttpRequest, queryset: QuerySet[Domain]) -> None:
        ip = client_ip(request)
        for domain in queryset.select_related("account"):
            if domain.verified:
                self.message_user(request, f"{domain.name} is already verified.", messages.INFO)
                continue
            try:
                services.domain_verify(domain=domain, ip=ip)
            except ApiError as exc:
                self.message_user(request, exc.message, messages.WARNING)
            else:
                self.message_user(request, f"{domain.name} is verified.", messages.SUCCESS)
