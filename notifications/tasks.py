"""Background work of the notifications: thin tasks that call the services."""

from __future__ import annotations

import uuid

from celery import shared_task
from django.conf import settings
from django.utils import timezone

from notifications import services
from notifications.models import Notification
from webhooks.health import Event

SEND_TASK = "notifications.tasks.send_account"


def _send_later(notices: list[Notification]) -> None:
    """Each account's pending notices go out once the digest window has passed
    (the first such task sends them all; the others find nothing)."""
    for account_id in {notice.account_id for notice in notices}:
        send_account.apply_async(
            args=[str(account_id)], countdown=settings.CONDUIT_NOTIFY_DIGEST_SECONDS
        )


@shared_task(name="notifications.tasks.webhook_event")
def webhook_event(event: str, webhook_id: str, facts: dict) -> None:
    """An event of the delivery engine (webhooks.delivery.WEBHOOK_EVENT_TASK)."""
    notice = services.webhook_event_record(
        event=Event(event), webhook_id=uuid.UUID(webhook_id), facts=facts
    )
    if notice is not None:
        _send_later([notice])


@shared_task(name=SEND_TASK)
def send_account(account_id: str) -> int:
    return services.notifications_send(account_id=uuid.UUID(account_id))


@shared_task(name="notifications.tasks.send_due")
def send_due() -> int:
    """Notices whose sending task was lost go out now."""
    sent = 0
    for account_id in services.accounts_with_due_notices(now=timezone.now()):
        sent += services.notifications_send(account_id=account_id)
    return sent


@shared_task(name="notifications.tasks.check_silence")
def check_silence() -> int:
    notices = services.silence_check()
    _send_later(notices)
    return len(notices)


@shared_task(name="notifications.tasks.recheck_domains")
def recheck_domains() -> int:
    notices = services.domains_recheck()
    _send_later(notices)
    return len(notices)
