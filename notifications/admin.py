from __future__ import annotations

from django.contrib import admin

from conduit.admin import ReadOnlyAdminMixin
from notifications.models import Notification, NotificationSettings


@admin.register(Notification)
class NotificationAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["created_at", "event", "status", "summary", "account", "sent_at"]
    list_filter = ["event", "status"]
    search_fields = ["summary", "account__email", "webhook__address", "domain__name"]
    date_hierarchy = "created_at"
    list_select_related = ["account"]
    raw_id_fields = ["account", "webhook", "domain"]
    readonly_fields = [f.name for f in Notification._meta.fields]


@admin.register(NotificationSettings)
class NotificationSettingsAdmin(admin.ModelAdmin):
    # The signing secret is the account's; the admin never shows it.
    fields = ["account", "email_enabled", "webhook_url", "events", "interval_minutes"]
    list_display = ["account", "email_enabled", "webhook_url", "interval_minutes", "updated_at"]
    list_filter = ["email_enabled"]
    search_fields = ["account__email", "webhook_url"]
    raw_id_fields = ["account"]
