from __future__ import annotations

from django.contrib import admin, messages
from django.db import models, transaction
from django.db.models import QuerySet
from django.http import HttpRequest

from webhooks import delivery
from webhooks.models import Delivery, DeliveryLog, InboundMessage, Webhook


class RecentLogsInline(admin.TabularInline):
    model = DeliveryLog
    fields = ["attempted_at", "http_status", "duration_ms", "error", "sender", "simulated"]
    readonly_fields = fields
    ordering = ["-attempted_at"]
    extra = 0
    max_num = 0
    can_delete = False
    show_change_link = True
    verbose_name_plural = "recent delivery logs (last 20)"

    def get_queryset(self, request: HttpRequest) -> QuerySet[DeliveryLog]:
        queryset = super().get_queryset(request)
        # The inline cannot slice its own queryset; pick the newest 20 by id.
        webhook_id = (
            request.resolver_match.kwargs.get("object_id") if request.resolver_match else None
        )
        if not webhook_id:
            return queryset.none()
        recent = (
            DeliveryLog.objects.filter(webhook_id=webhook_id)
            .order_by("-attempted_at")
            .values_list("id", flat=True)[:20]
        )
        return queryset.filter(id__in=list(recent))


@admin.register(Webhook)
class WebhookAdmin(admin.ModelAdmin):
    list_display = ["address", "account", "target_url", "active", "rate_limit", "created_at"]
    list_filter = ["active"]
    search_fields = ["address", "target_url", "account__email", "name"]
    list_select_related = ["account"]
    readonly_fields = ["id", "log_count", "created_at", "updated_at"]
    exclude = ["secret"]
    raw_id_fields = ["account", "domain", "smtp_security_policy"]
    inlines = [RecentLogsInline]
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}


@admin.register(Delivery)
class DeliveryAdmin(admin.ModelAdmin):
    list_display = ["id", "webhook", "status", "attempts", "next_attempt_at", "created_at"]
    list_filter = ["status"]
    search_fields = ["id", "webhook__address", "message__mail_from"]
    list_select_related = ["webhook"]
    readonly_fields = [
        "id",
        "message",
        "webhook",
        "rcpt_to",
        "status",
        "attempts",
        "next_attempt_at",
        "enqueued_at",
        "leased_until",
        "last_error",
        "delivered_at",
        "created_at",
        "updated_at",
    ]
    actions = ["redeliver"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.action(description="Redeliver (same webhook-id)")
    def redeliver(self, request: HttpRequest, queryset: QuerySet[Delivery]) -> None:
        count = 0
        with transaction.atomic():
            for item in queryset.exclude(status=Delivery.Status.DELIVERING):
                delivery.redeliver(delivery=item)
                count += 1
        self.message_user(request, f"{count} deliveries queued again.", messages.SUCCESS)


@admin.register(InboundMessage)
class InboundMessageAdmin(admin.ModelAdmin):
    list_display = ["received_at", "mail_from", "client_ip", "size", "spf_result"]
    search_fields = ["mail_from", "message_id_header", "client_ip"]
    date_hierarchy = "received_at"
    exclude = ["raw"]

    def get_readonly_fields(self, request: HttpRequest, obj: object = None) -> list[str]:
        return [f.name for f in InboundMessage._meta.fields if f.name != "raw"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(DeliveryLog)
class DeliveryLogAdmin(admin.ModelAdmin):
    list_display = ["attempted_at", "webhook", "http_status", "duration_ms", "simulated"]
    list_filter = ["simulated", "http_status"]
    search_fields = ["webhook__address", "sender", "smtp_message_id"]
    list_select_related = ["webhook"]

    def get_readonly_fields(self, request: HttpRequest, obj: object = None) -> list[str]:
        return [f.name for f in DeliveryLog._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False
