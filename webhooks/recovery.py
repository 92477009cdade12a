"""Recoveries: a webhook's deliveries of a time window queued again, in batches.

A RecoveryJob (createRecovery, or the webhook's admin page) walks the
deliveries that match its window (webhooks.storage.RecoveryWindow) in
(created_at, id) order. Each step, one task (RECOVER_TASK), takes the job's
lock and queues the next BATCH after its cursor with the replay rule
(webhooks.delivery.replay_state: same webhook-id, attempts from zero), then
publishes their tasks after the commit and schedules the next step.

Pacing, so that new mail keeps flowing: a step queues nothing while more than
BACKLOG of the job's deliveries are still waiting for their first attempt; it
looks again after BACKLOGGED_PAUSE. New mail's tasks therefore never wait
behind more than about BACKLOG recovered deliveries on the queue, and the
recovery goes as fast as the workers have room for. A paused or deactivated
webhook holds its recovery (looked at every HELD_PAUSE) until it delivers again.

A step lost on the way (broker down, worker killed) leaves the job's
``updated_at`` behind; the beat's ``resume_stalled`` schedules it again.
Steps are safe to repeat: each one starts from the cursor under the job's lock.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from datetime import datetime, timedelta

from django.db import transaction
from django.utils import timezone

from conduit.celery import app as celery_app
from webhooks import delivery, retention, storage
from webhooks.models import Delivery, RecoveryJob, Webhook

logger = logging.getLogger(__name__)

RECOVER_TASK = "webhooks.tasks.recover"

# Deliveries queued per step.
BATCH = 500
# The next batch waits while more than this many of the job's deliveries wait
# for their first attempt.
BACKLOG = 1000
# Seconds between steps, and before looking again at a held job.
STEP_PAUSE = 0.1
BACKLOGGED_PAUSE = 0.5
# A job whose webhook was paused or deactivated after it started waits for it.
HELD_PAUSE = 10.0
# A running job not stepped for this long lost its task; the beat re-sends it.
STALLED_AFTER = timedelta(seconds=60)

# What a recovery may queue again: finished deliveries, and pending ones (a
# retry waiting its turn is sent now, with a fresh schedule). Never one being sent.
RECOVERABLE = (Delivery.Status.FAILED, Delivery.Status.DELIVERED, Delivery.Status.PENDING)
DEFAULT_STATUSES = (Delivery.Status.FAILED,)
# As a field's choices (createRecovery's `statuses`).
RECOVERABLE_CHOICES = [(status.value, status.label) for status in RECOVERABLE]


def request_key(*, since: datetime, until: datetime | None, statuses: list[str]) -> str:
    """What makes two recover requests identical: the window as asked (an
    omitted ``until`` is "up to now") and the set of statuses."""
    text = f"{since.isoformat()}|{until.isoformat() if until else ''}|{','.join(sorted(statuses))}"
    return hashlib.sha256(text.encode()).hexdigest()


def window_problem(*, webhook: Webhook, since: datetime, until: datetime) -> tuple[str, str] | None:
    """Why [since, until) is not a window this webhook can recover (the field
    at fault and the reason), or None."""
    if until <= since:
        return "until", "until must be later than since; swap them or widen the window."
    days = retention.retention_days(webhook)
    if until - since > timedelta(days=days):
        return "since", (
            f"The window is {(until - since).total_seconds() / 86400:.1f} days wide; this "
            f"webhook keeps raw messages {days} days, so nothing older can be sent again. "
            f"Ask for at most {days} days (since no earlier than until minus {days} days)."
        )
    return None


def window_of(job: RecoveryJob) -> storage.RecoveryWindow:
    return storage.RecoveryWindow(
        webhook_id=job.webhook_id, since=job.since, until=job.until, statuses=tuple(job.statuses)
    )


def count_matches(job: RecoveryJob) -> int:
    return storage.recovery_matches(window_of(job)).count()


def advance(*, job_id: uuid.UUID) -> float | None:
    """One step of the job: queue its next batch unless it is held; seconds
    until the next step, or None when it is over (finished, cancelled, gone)."""
    now = timezone.now()
    # The job's lock orders its steps: a repeated step waits, then starts
    # from the cursor the first one moved.
    with transaction.atomic():
        job = (
            RecoveryJob.objects.select_for_update(of=("self",))
            .select_related("webhook")
            .filter(id=job_id)
            .first()
        )
        if job is None or job.state != RecoveryJob.State.RUNNING:
            return None
        webhook = job.webhook
        if webhook.paused or not webhook.active:
            job.save(update_fields=["updated_at"])  # alive: the beat leaves it alone
            return HELD_PAUSE
        if storage.recovery_backlog(job=job, limit=BACKLOG + 1) > BACKLOG:
            job.save(update_fields=["updated_at"])
            return BACKLOGGED_PAUSE
        after = None
        if job.cursor_id is not None and job.cursor_created_at is not None:
            after = (job.cursor_created_at, job.cursor_id)
        rows = storage.requeue_batch(
            window=window_of(job),
            after=after,
            limit=BATCH,
            values={**delivery.replay_state(now), "recovery_id": job.id},
        )
        if rows:
            job.cursor_created_at, job.cursor_id = max((created, id_) for id_, created in rows)
            job.queued += len(rows)
        if len(rows) < BATCH:
            job.state = RecoveryJob.State.FINISHED
            job.finished_at = now
        job.save()
        ids = [row[0] for row in rows]
        storage.after_commit(lambda: delivery.enqueue_many(ids))
    return None if job.state == RecoveryJob.State.FINISHED else STEP_PAUSE


def schedule(*, job_id: uuid.UUID, countdown: float | None = None) -> None:
    """Queue the job's next step; a failure is logged, the beat re-sends it."""
    try:
        celery_app.signature(RECOVER_TASK).apply_async(args=[str(job_id)], countdown=countdown)
    except Exception:
        logger.warning("Could not queue recovery %s; the beat will retry", job_id)


def step(*, job_id: uuid.UUID) -> bool:
    """Run one step and schedule the next; whether the job goes on."""
    wait = advance(job_id=job_id)
    if wait is not None:
        schedule(job_id=job_id, countdown=wait)
    return wait is not None


def resume_stalled() -> int:
    """Schedule the running jobs whose step was lost; how many (the beat)."""
    stalled = RecoveryJob.objects.filter(
        state=RecoveryJob.State.RUNNING, updated_at__lt=timezone.now() - STALLED_AFTER
    ).values_list("id", flat=True)
    ids = list(stalled)
    for job_id in ids:
        schedule(job_id=job_id)
    return len(ids)
