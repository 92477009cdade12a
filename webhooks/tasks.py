"""Celery tasks: thin wrappers that take ids and call the delivery engine."""

from __future__ import annotations

import time
import uuid
from typing import Any

from celery import shared_task
from celery.signals import task_prerun
from django.conf import settings
from django.db import close_old_connections, connection

from webhooks import delivery

# A connection idle this long is checked (one round trip) before the next task.
IDLE_CHECK_SECONDS = 1.0
_last_task_at = float("-inf")


@task_prerun.connect
def _fresh_database_connection(task: Any = None, **kwargs: Any) -> None:
    # Workers keep their connection across tasks (CELERY_DB_REUSE_MAX): drop it
    # if it broke or aged out, as Django does between requests. Not for eager
    # tasks, which run inside the caller's transaction. A busy worker (a task
    # within the last second, no error since, not past CONN_MAX_AGE) skips the
    # check's round trip; a connection that failed is checked before its next use.
    global _last_task_at
    if task is None or task.request.is_eager:
        return
    now = time.monotonic()
    busy = now - _last_task_at < IDLE_CHECK_SECONDS
    _last_task_at = now
    aged = connection.close_at is not None and now >= connection.close_at
    if busy and not aged and not connection.errors_occurred:
        return
    close_old_connections()


@shared_task(name="webhooks.tasks.deliver", acks_late=True, reject_on_worker_lost=True)
def deliver_task(delivery_id: str) -> str:
    return delivery.deliver(delivery_id=uuid.UUID(delivery_id))


@shared_task(name="webhooks.tasks.deliver_many", acks_late=True, reject_on_worker_lost=True)
def deliver_many_task(delivery_ids: list[str]) -> list[str]:
    # One task for a few deliveries accepted together: one queue round trip
    # instead of one each. Each is claimed on its own, so a repeat is harmless.
    return [delivery.deliver(delivery_id=uuid.UUID(value)) for value in delivery_ids]


@shared_task(name="webhooks.tasks.sweep_deliveries")
def sweep_deliveries() -> int:
    return delivery.sweep()


@shared_task(name="webhooks.tasks.purge_raw_messages")
def purge_raw_messages() -> int:
    return delivery.purge_raw_messages(older_than_days=settings.CONDUIT_RAW_MESSAGE_RETENTION_DAYS)
