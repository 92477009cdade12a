"""Reads of the notifications: an account's settings and its notices."""

from __future__ import annotations

from django.db.models import QuerySet

from accounts.models import Account
from notifications.models import Notification, NotificationSettings


def notification_settings_for(*, account: Account) -> NotificationSettings:
    """The account's settings; the defaults (not saved) while it has changed none."""
    found = NotificationSettings.objects.filter(account=account).first()
    return found or NotificationSettings(account=account)


def notification_list(*, account: Account) -> QuerySet[Notification]:
    """The account's notices, newest first (on notification_page_idx)."""
    return Notification.objects.filter(account=account).order_by("-created_at", "-id")
