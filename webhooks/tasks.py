"""Celery tasks: thin wrappers that take ids and call the delivery engine."""

from __future__ import annotations

import uuid

from celery import shared_task
from django.conf import settings

from webhooks import delivery


@shared_task(name="webhooks.tasks.deliver", acks_late=True, reject_on_worker_lost=True)
def deliver_task(delivery_id: str) -> str:
    return delivery.deliver(delivery_id=uuid.UUID(delivery_id))


@shared_task(name="webhooks.tasks.sweep_deliveries")
def sweep_deliveries() -> int:
    return delivery.sweep()


@shared_task(name="webhooks.tasks.purge_raw_messages")
def purge_raw_messages() -> int:
    return delivery.purge_raw_messages(older_than_days=settings.CONDUIT_RAW_MESSAGE_RETENTION_DAYS)
