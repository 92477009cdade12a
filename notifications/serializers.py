"""Request and response shapes of the notification settings and notices."""

from __future__ import annotations

from django.conf import settings
from rest_framework import serializers

from conduit import strict
from notifications.models import EVENT_CHOICES, EVENTS, Notification, NotificationSettings
from webhooks.serializers import checked_target_url
from webhooks.signing import mask_secret

MAX_INTERVAL_MINUTES = 7 * 24 * 60
EVENTS_HELP = (
    "The events notified: `webhook_failing` (CONDUIT_NOTIFY_FAILING_AFTER, default 3, "
    "failed attempts in a row), `delivery_gave_up` (a delivery's last attempt failed), "
    "`webhook_deactivated` (a 410, or every attempt failing for "
    "CONDUIT_DEACTIVATE_FAILING_AFTER_HOURS), `webhook_recovered` (a success after "
    "`webhook_failing`), `mail_silent` (a webhook's `expect_mail_every_hours` passed without "
    "mail) and `domain_dns_changed` (a verified domain's MX or TXT no longer points here). "
    "Default: all."
)


class UpdateNotificationSettingsRequestSerializer(serializers.Serializer):
    """Fields left out keep their values."""

    email_enabled = serializers.BooleanField(
        required=False, help_text="Mail notices to the account's address."
    )
    webhook_url = strict.CharField(
        max_length=2048,
        required=False,
        allow_blank=True,
        help_text="The operational webhook: every notice as signed JSON. Must accept a signed "
        "`notification.test` event when set (422 `webhook_url_unreachable` otherwise); empty "
        "turns it off.",
    )
    rotate_webhook_secret = serializers.BooleanField(
        required=False, help_text="true: a new signing secret, returned in this response only."
    )
    events = serializers.ListField(
        child=serializers.ChoiceField(choices=EVENT_CHOICES), required=False, help_text=EVENTS_HELP
    )
    interval_minutes = serializers.IntegerField(
        required=False,
        max_value=MAX_INTERVAL_MINUTES,
        help_text="At most one notice per webhook (or domain) and event in this many minutes; "
        "default 60, at least the service's minimum (5 unless the operator set another).",
    )

    def validate_webhook_url(self, value: str) -> str:
        return checked_target_url(value) if value else value

    def validate_interval_minutes(self, value: int) -> int:
        minimum = settings.CONDUIT_NOTIFY_MIN_INTERVAL_MINUTES
        if value < minimum:
            raise serializers.ValidationError(
                f"{value} minutes is below the minimum of {minimum}: notices of one event about "
                f"one webhook are at most one per {minimum} minutes. Choose {minimum} or more."
            )
        return value

    def validate_events(self, value: list[str]) -> list[str]:
        return [event for event in EVENTS if event in set(value)]


class NotificationSettingsResponseSerializer(serializers.ModelSerializer):
    email = serializers.EmailField(
        source="account.email", read_only=True, help_text="Where notices are mailed."
    )
    webhook_url = serializers.CharField(
        read_only=True, help_text="The operational webhook's URL; empty when there is none."
    )
    webhook_secret = serializers.SerializerMethodField(
        help_text="Signs the operational webhook's events (Standard Webhooks). Whole in the "
        "response that set a new URL or rotated it, masked afterwards; empty without a URL."
    )
    events = serializers.ListField(
        child=serializers.ChoiceField(choices=EVENT_CHOICES), read_only=True
    )

    class Meta:
        model = NotificationSettings
        fields = [
            "email_enabled",
            "email",
            "webhook_url",
            "webhook_secret",
            "events",
            "interval_minutes",
        ]
        read_only_fields = fields

    def get_webhook_secret(self, obj: NotificationSettings) -> str:
        if not obj.webhook_secret:
            return ""
        shown = self.context.get("new_secret")
        return shown if shown else mask_secret(obj.webhook_secret)


class NotificationResponseSerializer(serializers.ModelSerializer):
    webhook_id = serializers.UUIDField(allow_null=True, read_only=True)
    domain_id = serializers.UUIDField(allow_null=True, read_only=True)
    details = serializers.DictField(
        read_only=True,
        help_text="The facts the notice gave (since when, messages waiting, the last error, "
        "...) and `fix`: the API calls that fix or recover.",
    )
    channels = serializers.DictField(
        child=serializers.CharField(),
        read_only=True,
        help_text='Per channel (`email`, `webhook`): "sent", "off" or "failed: <why>"; empty '
        "while pending or when cancelled.",
    )

    class Meta:
        model = Notification
        fields = [
            "id",
            "event",
            "status",
            "summary",
            "webhook_id",
            "domain_id",
            "details",
            "channels",
            "created_at",
            "sent_at",
        ]
        read_only_fields = fields
