"""Celery tasks: thin wrappers that take ids and call the delivery engine and recoveries."""

from __future__ import annotations

import uuid
from typing import Any

from celery import shared_task
from celery.signals import task_prerun

from conduit import dbconn
from webhooks import delivery, recovery, retention


@task_prerun.connect
def _fresh_database_connection(task: Any = None, **kwargs: Any) -> None:
    # Workers keep their connection across tasks (CELERY_DB_REUSE_MAX): drop it
    # if it broke or aged out, as Django does between requests, but only when it
    # may have (conduit.dbconn). Not for eager tasks, which run inside the
    # caller's transaction.
    if task is not None and not task.request.is_eager:
        dbconn.refresh_if_idle()


@shared_task(name=delivery.DELIVER_TASK, acks_late=True, reject_on_worker_lost=True)
def deliver_task(delivery_id: str) -> str:
    return delivery.deliver(delivery_id=uuid.UUID(delivery_id))


@shared_task(name=delivery.DELIVER_MANY_TASK, acks_late=True, reject_on_worker_lost=True)
def deliver_many_task(delivery_ids: list[str]) -> list[str]:
    # One task for a few deliveries accepted together: one queue round trip
    # instead of one each. Each is claimed on its own, so a repeat is harmless.
    return [delivery.deliver(delivery_id=uuid.UUID(value)) for value in delivery_ids]


@shared_task(name="webhooks.tasks.sweep_deliveries")
def sweep_deliveries() -> int:
    return delivery.sweep()


@shared_task(name="webhooks.tasks.purge_raw_messages")
def purge_raw_messages() -> int:
    return retention.purge_raw_messages()


@shared_task(name=recovery.RECOVER_TASK, acks_late=True, reject_on_worker_lost=True)
def recover_task(job_id: str) -> bool:
    # One batch of a recovery; the step schedules the next one itself.
    return recovery.step(job_id=uuid.UUID(job_id))


@shared_task(name="webhooks.tasks.resume_recoveries")
def resume_recoveries() -> int:
    return recovery.resume_stalled()
