"""What an account is told when something is wrong, and how it wants to be told."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q

from conduit.fields import EncryptedTextField
from webhooks.health import Event

EVENTS = [event.value for event in Event]
EVENT_CHOICES = [(event, event) for event in EVENTS]
DEFAULT_INTERVAL_MINUTES = 60


def all_events() -> list[str]:
    return list(EVENTS)


class NotificationSettings(models.Model):
    """An account's channels and events. No row: the defaults (email on, every
    event, one notice per webhook and event per hour)."""

    account = models.OneToOneField(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        primary_key=True,
        related_name="notification_settings",
    )
    # To the account's own address, through Django's email backend.
    email_enabled = models.BooleanField(default=True)
    # The operational webhook: the same events as JSON, signed (Standard
    # Webhooks) with its own secret, encrypted at rest like a webhook's.
    webhook_url = models.URLField(max_length=2048, blank=True)
    webhook_secret = EncryptedTextField(blank=True)
    events = models.JSONField(default=all_events)
    # At most one notice per webhook (or domain) and event in this many minutes.
    interval_minutes = models.PositiveIntegerField(default=DEFAULT_INTERVAL_MINUTES)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "notification settings"

    def __str__(self) -> str:
        return f"notification settings of {self.account_id}"


class Notification(models.Model):
    """One notice: what happened to which webhook or domain, and how it went out.

    Written ``pending``; sent (or cancelled by a recovery) once the digest window
    (CONDUIT_NOTIFY_DIGEST_SECONDS) has passed, together with the account's
    other pending notices.
    """

    class Status(models.TextChoices):
        PENDING = "pending"
        SENT = "sent"
        CANCELLED = "cancelled"  # a recovery came before it was sent

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    account = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="notifications",
        db_index=False,  # the page index below leads with it
    )
    webhook = models.ForeignKey(
        "webhooks.Webhook",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        db_index=False,
        related_name="notifications",
    )
    domain = models.ForeignKey(
        "domains.Domain",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        db_index=False,
        related_name="notifications",
    )
    event = models.CharField(max_length=32, choices=EVENT_CHOICES)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.PENDING)
    # One line for lists and the digest; the facts the mail and the JSON carry.
    summary = models.CharField(max_length=500)
    details = models.JSONField(default=dict)
    # Per channel: "sent", "off", or what went wrong ("failed: ...").
    channels = models.JSONField(default=dict)
    created_at = models.DateTimeField()
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["account", "-created_at", "-id"], name="notification_page_idx"),
            # The debounce: this subject's last notice of this event.
            models.Index(fields=["webhook", "event", "-created_at"], name="notification_hook_idx"),
            models.Index(
                fields=["domain", "event", "-created_at"],
                name="notification_domain_idx",
                condition=Q(domain__isnull=False),
            ),
            # What is waiting to be sent: only pending rows are in it.
            models.Index(
                fields=["created_at"],
                name="notification_pending_idx",
                condition=Q(status="pending"),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.event} ({self.status}): {self.summary[:60]}"
