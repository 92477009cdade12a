"""Recoveries: a webhook's deliveries of a time window queued again, then sent at a pace.

A RecoveryJob (createRecovery, or the webhook's admin page) works in steps,
one task (RECOVER_TASK) each, under the job's lock:

1. Queue: the next QUEUE_BATCH deliveries that match its window
   (webhooks.storage.RecoveryWindow), in (created_at, id) order after its
   cursor, join the job's queue (``held``, their status left as found). A
   hundred thousand are queued in seconds; ``all_queued_at`` says when the
   last one was.
2. Send: while fewer than BACKLOG of the deliveries it sent are waiting for
   their first attempt, the oldest it holds, at most settings.
   CONDUIT_RECOVERY_RATE per second, get the replay rule
   (webhooks.delivery.replay_state: same webhook-id, attempts from zero) and
   their tasks are published after the commit.

So new mail's tasks never wait behind more than about BACKLOG recovered
deliveries, and a recovery never takes more of the workers than its rate, however
much it queued. The job is finished when it has queued every match and sent
all it queued. Cancelled, it sends nothing more: what it still holds is left as
it was found. A paused or deactivated webhook holds its recovery (looked at
every HELD_PAUSE) until it delivers again.

A step lost on the way (broker down, worker killed) leaves the job's
``updated_at`` behind; the beat's ``resume_stalled`` schedules it again.
Steps are safe to repeat: each one starts from the cursor and the queue.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from conduit.celery import app as celery_app
from webhooks import delivery, retention, storage
from webhooks.models import Delivery, RecoveryJob, Webhook

logger = logging.getLogger(__name__)

RECOVER_TASK = "webhooks.tasks.recover"

# Deliveries queued per step.
QUEUE_BATCH = 5000
# Sending waits while more than this many of the deliveries the job sent are
# still waiting for their first attempt.
BACKLOG = 20
# Seconds between steps, and between looks at a full backlog.
STEP_PAUSE = 0.1
BACKLOGGED_PAUSE = 0.5
# A step sends the rate's share of the time since the last one, up to this.
MAX_SHARE_SECONDS = 1.0
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
    """One step of the job: queue its next batch, send its next share, unless
    it is held; seconds until the next step, or None when it is over
    (finished, cancelled, gone)."""
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
        backlog = storage.recovery_backlog(job=job, limit=BACKLOG + 1)
        queued = _queue_next(job, now) if job.all_queued_at is None else 0
        sent = _send_next(job, now, room=BACKLOG - backlog) if backlog < BACKLOG else []
        if job.all_queued_at is not None and not sent and not storage.holds_any(job=job):
            job.state = RecoveryJob.State.FINISHED
            job.finished_at = now
        job.save()
        storage.after_commit(lambda: delivery.enqueue_many(sent))
    if job.state == RecoveryJob.State.FINISHED:
        return None
    return STEP_PAUSE if queued or sent else BACKLOGGED_PAUSE


def _queue_next(job: RecoveryJob, now: datetime) -> int:
    """Put the next QUEUE_BATCH matches after the cursor in the job's queue; how many."""
    after = None
    if job.cursor_id is not None and job.cursor_created_at is not None:
        after = (job.cursor_created_at, job.cursor_id)
    rows = storage.requeue_batch(
        window=window_of(job),
        after=after,
        limit=QUEUE_BATCH,
        values={"held": True, "recovery_id": job.id},
    )
    if rows:
        job.cursor_created_at, job.cursor_id = max((created, id_) for id_, created in rows)
        job.queued += len(rows)
    if len(rows) < QUEUE_BATCH:
        job.all_queued_at = now
    return len(rows)


def _send_next(job: RecoveryJob, now: datetime, *, room: int) -> list[uuid.UUID]:
    """Send again the oldest deliveries the job holds: its rate times the time
    since its last step (at least STEP_PAUSE, at most MAX_SHARE_SECONDS: a
    step is rarely on time, queuing and the broker take their share), no more
    than ``room`` left in the backlog."""
    since_last = (now - job.updated_at).total_seconds()
    share = settings.CONDUIT_RECOVERY_RATE * min(max(since_last, STEP_PAUSE), MAX_SHARE_SECONDS)
    return storage.release_held(
        job=job,
        limit=min(max(1, round(share)), room),
        values={**delivery.replay_state(now), "held": False},
    )


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
