"""The delivery engine: claim a due delivery, POST it, record the attempt.

State machine (the database is the source of truth, Celery only carries ids):

    pending --claim--> delivering --> delivered
                                  \\-> pending (next_attempt_at = retry time)
                                  \\-> failed

A task claims its row with one conditional UPDATE that matches only while the
row is still due, so duplicate tasks (a sweep re-send, a redelivered message
after a worker died) are harmless: one of them gets the row, the others skip.
The HTTP request runs with no transaction or lock held; a lease on the row lets
the sweep take it back if the worker dies in the middle.

Read top to bottom: deliver() claims (_claim), sends (send), decides the next
state from the attempt's outcome (next_state, a pure function) and records it
(_record). Every statement runs in webhooks/storage.py.
"""

from __future__ import annotations

import base64
import logging
import random
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from conduit import metrics
from conduit.celery import app as celery_app
from conduit.logs import log_ids
from webhooks import (
    attachments,
    formats,
    health,
    outbound,
    ratelimit,
    rawstore,
    retention,
    retry,
    storage,
)
from webhooks.models import Delivery, DeliveryLog, InboundMessage, PayloadFormat, Webhook
from webhooks.payload import AuthResults, Envelope
from webhooks.signing import signature_headers
from webhooks.templating import JSON_CONTENT_TYPE, TemplateRenderProblem, render_payload

logger = logging.getLogger(__name__)

# The tasks are published by name (webhooks/tasks.py registers them under
# these): the engine needs the queue, not the module that wraps it. Where the
# task is registered (a worker) its own apply_async runs; elsewhere (the
# ingress) the signature falls back to send_task.
DELIVER_TASK = "webhooks.tasks.deliver"
DELIVER_MANY_TASK = "webhooks.tasks.deliver_many"
# What the notifications (an app above this one) are told through, also by name.
WEBHOOK_EVENT_TASK = "notifications.tasks.webhook_event"

# Retries sooner than this are queued with a countdown; later ones wait for the sweep.
COUNTDOWN_LIMIT = timedelta(seconds=60)
# An inactive webhook's deliveries wait; they are looked at again this often.
INACTIVE_RECHECK = timedelta(hours=1)


@dataclass(frozen=True)
class SendResult:
    attempt: outbound.AttemptResult
    attempted_at: datetime


def _requeue_after() -> timedelta:
    # A task enqueued but not run after this long is taken to be lost.
    return timedelta(seconds=settings.CONDUIT_REQUEUE_AFTER)


def _lease() -> timedelta:
    return timedelta(
        seconds=settings.CONDUIT_DELIVERY_TIMEOUT + settings.CONDUIT_DELIVERY_LEASE_MARGIN
    )


def message_source(
    *,
    message: InboundMessage,
    rcpt_to: list[str],
    simulated: bool,
    webhook: Webhook | None = None,
) -> formats.Source:
    """One delivery of a stored message, ready for any format (for ``webhook``:
    its large attachments as links, if it asks for that and takes the default
    format). RawMessageGone when its raw content was purged, RawStoreUnavailable
    when its object store cannot be read now (webhooks.rawstore.raw_bytes)."""
    envelope = Envelope(
        mail_from=message.mail_from,
        rcpt_to=list(rcpt_to),
        client_ip=message.client_ip,
        helo=message.helo or None,
    )
    auth = AuthResults(
        spf=message.spf_result or None,
        dkim=list(message.dkim_domains or []),
        smtp_auth_user=message.smtp_auth_user or None,
        dmarc=message.dmarc_result,
        arc=message.arc_result or None,
    )
    raw = rawstore.raw_bytes(message)
    links = None
    if webhook is not None and webhook.payload_format == PayloadFormat.CONDUIT:
        links = attachments.links_for(webhook=webhook, message=message)
    return formats.Source(
        raw=bytes(raw), envelope=envelope, auth=auth, simulated=simulated, links=links
    )


def message_payload(
    *,
    message: InboundMessage,
    rcpt_to: list[str],
    simulated: bool,
    webhook: Webhook | None = None,
) -> dict:
    """The default payload of one delivery of a stored message (message_source's)."""
    return message_source(
        message=message, rcpt_to=rcpt_to, simulated=simulated, webhook=webhook
    ).payload


@dataclass(frozen=True)
class ReceivedBody:
    """What a delivery POSTs before signing: its default payload and, with a
    payload template, the body that renders to (or why it did not)."""

    payload: dict
    content_type: str | None
    body: str | None
    template_error: str | None


# Formats whose body is shown as text on the message page (the form-data ones carry
# attachments' bytes; their fields are the payload's).
_TEXT_FORMATS = frozenset({PayloadFormat.RAW, PayloadFormat.POSTMARK})


def received_body(
    *, webhook: Webhook, source: formats.Source, webhook_message_id: str = ""
) -> ReceivedBody:
    """The body ``send`` would POST for ``source`` to ``webhook``, rendered the same way:
    its template's output, or the body of a format other than conduit shown as text
    (raw, postmark) or described by its content type only (multipart, mailgun, sendgrid)."""
    payload = source.payload
    payload_format = webhook.payload_format
    if payload_format == PayloadFormat.CONDUIT and not webhook.payload_template:
        return ReceivedBody(payload, JSON_CONTENT_TYPE, None, None)
    if payload_format == PayloadFormat.CONDUIT:
        try:
            body, content_type = render_payload(template=webhook.payload_template, payload=payload)
        except TemplateRenderProblem as exc:
            return ReceivedBody(payload, None, None, str(exc))
        return ReceivedBody(payload, content_type, body.decode("utf-8", "replace"), None)
    if payload_format not in _TEXT_FORMATS:
        content_type = "multipart/form-data"
        return ReceivedBody(payload, content_type, None, None)
    options = formats.Options(authserv_id=settings.CONDUIT_MX_HOST, event_id=webhook_message_id)
    rendered = formats.render(payload_format, source, options)
    return ReceivedBody(
        payload, rendered.content_type, rendered.body.decode("utf-8", "replace"), None
    )


def _not_sent(error: str, *, kind: outbound.ErrorKind) -> SendResult:
    """An attempt that ended before any request was made."""
    failed = outbound.AttemptResult(
        http_status=None,
        duration_ms=0,
        error=error,
        error_kind=kind,
        response_body="",
        retry_after=None,
    )
    return SendResult(attempt=failed, attempted_at=timezone.now())


def send(*, webhook: Webhook, source: formats.Source, webhook_message_id: str) -> SendResult:
    """Render in the webhook's format, sign and POST one delivery: the one code
    path for real and simulated sends."""
    attempted_at = timezone.now()
    options = formats.Options(
        template=webhook.payload_template,
        mailgun_signing_key=webhook.mailgun_signing_key,
        authserv_id=settings.CONDUIT_MX_HOST,
        event_id=webhook_message_id,
    )
    try:
        rendered = formats.render(webhook.payload_format, source, options)
    except TemplateRenderProblem as exc:
        message = f"The payload template failed to render: {exc}"
        return _not_sent(message, kind=outbound.ErrorKind.TEMPLATE)
    except formats.FormatProblem as exc:
        return _not_sent(str(exc), kind=outbound.ErrorKind.TEMPLATE)  # final, like a template
    body = rendered.body
    headers: dict[str, str | bytes] = dict(webhook.custom_headers or {})
    headers.update(rendered.headers)
    if webhook.target_auth:
        # The credentials of the target URL as given (stored apart from it).
        token = base64.b64encode(webhook.target_auth.encode("utf-8")).decode("ascii")
        headers["Authorization"] = f"Basic {token}"
    headers.update(
        signature_headers(
            secret=webhook.secret,
            msg_id=webhook_message_id,
            timestamp=int(time.time()),
            body=body,
        )
    )
    headers["Content-Type"] = rendered.content_type
    result = outbound.post(
        url=webhook.target_url,
        body=body,
        headers=headers,
        connect_timeout=settings.CONDUIT_DELIVERY_CONNECT_TIMEOUT,
        total_timeout=settings.CONDUIT_DELIVERY_TIMEOUT,
        allow_private=settings.CONDUIT_ALLOW_PRIVATE_TARGETS,
        max_body_bytes=settings.CONDUIT_DELIVERY_MAX_RESPONSE_BYTES,
        name_private_setting=settings.DEBUG,
    )
    return SendResult(attempt=result, attempted_at=attempted_at)


def attempt_log(
    *,
    webhook: Webhook,
    sent: SendResult,
    sender: str,
    smtp_message_id: str,
    delivery: Delivery | None = None,
    attempt: int = 1,
    simulated: bool = False,
) -> DeliveryLog:
    """The log row of one attempt, not yet written (storage.record_attempt writes it)."""
    result = sent.attempt
    return DeliveryLog(
        webhook=webhook,
        delivery=delivery,
        attempt=attempt,
        attempted_at=sent.attempted_at,
        duration_ms=result.duration_ms,
        http_status=result.http_status,
        error=result.error or "",
        response_body=result.response_body,
        sender=sender,
        smtp_message_id=smtp_message_id,
        simulated=simulated,
        payload_format=webhook.payload_format,
    )


# --- Claim -------------------------------------------------------------------


def _claim(delivery_id: uuid.UUID) -> Delivery | None:
    """Move the delivery to 'delivering' under a lease if it is due; None otherwise.

    One conditional UPDATE that only matches while the row is still
    claimable (storage.claimable): of two workers holding the same id (a
    sweep re-send, a redelivered task), exactly one gets the row. No
    transaction or lock is held beyond that statement. On PostgreSQL the
    usual case is that one statement (storage.claim_due); otherwise, and for
    the rest, one read decides what to do.
    """
    now = timezone.now()
    claimed = storage.claim_due(delivery_id, now, lease=_lease())
    if claimed is not None:
        return claimed
    delivery = storage.read_claimable(delivery_id, now)
    if delivery is None:
        return None  # gone, not due, or taken
    # Every write below matches only while the row is still claimable.
    claimable = storage.claimable_row(delivery.id, now)
    webhook = delivery.webhook
    if not webhook.active:
        # Kept, not dropped: reactivating the webhook delivers it.
        claimable.update(
            status=Delivery.Status.PENDING,
            next_attempt_at=now + INACTIVE_RECHECK,
            enqueued_at=None,
            leased_until=None,
            last_error="The webhook is inactive; waiting for it to be reactivated.",
            updated_at=now,
        )
        return None
    if not webhook.rate_limit:
        return _lease_row(delivery, claimable, now)
    # Counting the webhook's slots and taking one in one transaction, its row
    # locked (on SQLite every transaction locks the database: IMMEDIATE), so
    # two workers never both take the last slot when the database counts.
    with transaction.atomic():
        storage.lock_webhook(webhook.id)
        wait = ratelimit.acquire(webhook_id=webhook.id, limit=webhook.rate_limit)
        if wait > 0:
            # Over the limit: deferred, not an attempt, nothing logged.
            later = now + timedelta(seconds=wait)
            if claimable.update(
                status=Delivery.Status.PENDING,
                next_attempt_at=later,
                enqueued_at=later,
                leased_until=None,
                updated_at=now,
            ):
                transaction.on_commit(
                    lambda: enqueue(delivery_id=delivery.id, countdown=wait), robust=True
                )
            return None
        return _lease_row(delivery, claimable, now)


def _lease_row(delivery: Delivery, claimable: Any, now: datetime) -> Delivery | None:
    leased_until = now + _lease()
    if not claimable.update(
        status=Delivery.Status.DELIVERING, leased_until=leased_until, updated_at=now
    ):
        return None  # another worker took it meanwhile
    delivery.status = Delivery.Status.DELIVERING
    delivery.leased_until = leased_until
    return delivery


# --- Decide: the attempt's outcome → the delivery's next state ------------------


@dataclass(frozen=True)
class NextState:
    """What an attempt leads to: the delivery's new fields, when to queue the
    retry's task (seconds; None when the sweep will), and why to deactivate
    the webhook (a 410), if so."""

    update: dict
    countdown: float | None = None
    deactivate: str = ""


def next_state(
    *,
    attempt: outbound.AttemptResult,
    attempts_made: int,
    now: datetime,
    rng: random.Random | None = None,
) -> NextState:
    """The pure rule of the state machine: delivered, pending again for a
    retry, or failed. ``attempts_made`` includes this attempt."""
    outcome = retry.classify(http_status=attempt.http_status, error_kind=attempt.error_kind)
    last_error = attempt.error or ""
    if attempt.http_status is not None and not last_error:
        last_error = f"HTTP {attempt.http_status}"
    update: dict = {
        "attempts": attempts_made,
        "leased_until": None,
        "last_error": last_error,
        "updated_at": now,
    }
    if outcome == "delivered":
        update.update(
            status=Delivery.Status.DELIVERED, delivered_at=now, next_attempt_at=None, last_error=""
        )
        return NextState(update)
    if outcome == "retry":
        retry_after = retry.parse_retry_after(attempt.retry_after, now=now)
        delay = retry.next_delay(
            attempts_made=attempts_made,
            retry_after=retry_after,
            slow_down=attempt.error_kind == outbound.ErrorKind.TIMEOUT
            or attempt.http_status == 429,
            rng=rng,
        )
        if delay is not None:
            due = now + delay
            short = delay <= COUNTDOWN_LIMIT
            update.update(
                status=Delivery.Status.PENDING,
                next_attempt_at=due,
                enqueued_at=due if short else None,
            )
            return NextState(update, countdown=delay.total_seconds() if short else None)
    update.update(status=Delivery.Status.FAILED, next_attempt_at=None)
    if outcome == "gone":
        reason = f"The target answered 410 Gone at {now:%Y-%m-%d %H:%M:%S} UTC"
        return NextState(update, deactivate=reason)
    return NextState(update)


# --- Record ------------------------------------------------------------------


def _record(*, delivery: Delivery, sent: SendResult) -> None:
    """Write the attempt's log and move the delivery to its next state, together
    (and on a 410 deactivate the webhook); then queue a near retry."""
    attempts = delivery.attempts + 1
    state = next_state(attempt=sent.attempt, attempts_made=attempts, now=timezone.now())
    message = delivery.message
    log = attempt_log(
        webhook=delivery.webhook,
        sent=sent,
        sender=message.mail_from,
        smtp_message_id=message.message_id_header,
        delivery=delivery,
        attempt=attempts,
    )
    recorded = storage.record_attempt(log=log, update=state.update, deactivate=state.deactivate)
    metrics.delivery_attempted(status=state.update["status"], duration_ms=log.duration_ms)
    _log_if_failed(delivery, state)
    if state.countdown is not None:
        enqueue(delivery_id=delivery.id, countdown=state.countdown)
    delivered = state.update.get("status") == Delivery.Status.DELIVERED
    if recorded.streak is not None:
        _announce(delivery=delivery, state=state, recorded=recorded, delivered=delivered)
    if delivered and delivery.webhook.delete_raw_when_delivered:
        # Only for webhooks that ask for it: the usual delivery runs no query here.
        retention.purge_if_delivered(message_id=delivery.message_id)


def _ids(delivery: Delivery) -> dict[str, str]:
    return log_ids(
        delivery_id=delivery.id, webhook_id=delivery.webhook_id, message_id=delivery.message_id
    )


def _log_if_failed(delivery: Delivery, state: NextState) -> None:
    """One line per failed attempt (none for a delivered one), with its ids."""
    status = state.update["status"]
    if status == Delivery.Status.DELIVERED:
        return
    logger.warning(
        "Delivery %s attempt %d failed (%s); %s",
        delivery.id,
        state.update["attempts"],
        state.update["last_error"] or "no answer",
        "will retry" if status == Delivery.Status.PENDING else "giving up",
        extra=_ids(delivery),
    )


def _announce(
    *, delivery: Delivery, state: NextState, recorded: storage.Recorded, delivered: bool
) -> None:
    """Tell the account what this attempt changed (webhooks/health.py): decided
    from the streak the recording statement returned, so the usual delivered
    attempt of a healthy webhook runs no query here. A webhook failing every
    attempt for longer than CONDUIT_DEACTIVATE_FAILING_AFTER_HOURS is
    switched off, as a 410 does."""
    streak = recorded.streak
    assert streak is not None
    now = timezone.now()
    events = health.attempt_events(
        streak=streak,
        delivered=delivered,
        gave_up=state.update.get("status") == Delivery.Status.FAILED,
        failing_after=settings.CONDUIT_NOTIFY_FAILING_AFTER,
    )
    deactivated = recorded.deactivated
    reason = state.deactivate
    hours = settings.CONDUIT_DEACTIVATE_FAILING_AFTER_HOURS
    limit = timedelta(hours=hours) if hours else None
    if not deactivated and health.failing_too_long(streak=streak, now=now, limit=limit):
        reason = (
            f"Every delivery attempt failed for more than {hours} hours "
            f"(since {streak.failing_since:%Y-%m-%d %H:%M:%S} UTC)"
        )
        deactivated = storage.deactivate_webhook(
            webhook_id=delivery.webhook_id, reason=reason, now=now
        )
    if deactivated:
        events.append(health.Event.WEBHOOK_DEACTIVATED)
    if not events:
        return
    facts = {
        "delivery_id": str(delivery.id),
        "message_id": str(delivery.message_id),
        "consecutive_failures": streak.failures_before if delivered else streak.failures,
        "failing_since": (streak.failing_since.isoformat() if streak.failing_since else None),
        "last_error": state.update.get("last_error", "") or "",
        "reason": reason,
        "at": now.isoformat(),
    }
    for event in events:
        publish_event(event=event, webhook_id=delivery.webhook_id, facts=facts)


def publish_event(*, event: health.Event, webhook_id: uuid.UUID, facts: dict[str, Any]) -> None:
    """Hand a webhook's event to the notifications (their task, by name), once
    what raised it is committed. Lost with the broker (logged): the account
    misses one notice, the delivery itself loses nothing."""

    def publish() -> None:
        try:
            celery_app.signature(WEBHOOK_EVENT_TASK).apply_async(
                kwargs={"event": str(event), "webhook_id": str(webhook_id), "facts": facts}
            )
        except Exception:
            logger.warning("Could not queue the %s notice of webhook %s", event, webhook_id)

    storage.after_commit(publish)


def deliver(*, delivery_id: uuid.UUID) -> str:
    """Run one attempt of a delivery if it is due. Returns what happened, for logs."""
    delivery = _claim(delivery_id)
    if delivery is None:
        return "skipped"
    try:
        source = message_source(
            message=delivery.message,
            rcpt_to=delivery.rcpt_to,
            simulated=False,
            webhook=delivery.webhook,
        )
        sent = send(
            webhook=delivery.webhook,
            source=source,
            webhook_message_id=delivery.webhook_message_id,
        )
    except rawstore.RawMessageGone:
        purged = "The raw message was purged before it could be delivered."
        sent = _not_sent(purged, kind=outbound.ErrorKind.TEMPLATE)  # final: nothing to send
    except rawstore.RawStoreUnavailable as exc:
        # Nothing was sent; the next attempt reads the store again.
        sent = _not_sent(
            f"The raw message could not be read from its store ({exc}); retrying.",
            kind=outbound.ErrorKind.OTHER,
        )
    except Exception:
        # A bug must cost an attempt (and end in 'failed'), not loop forever
        # through lease expiry with nothing in the log.
        logger.exception("Delivery %s crashed", delivery.id, extra=_ids(delivery))
        sent = _not_sent(
            "Internal error while preparing the delivery; it has been logged.", kind="other"
        )
    _record(delivery=delivery, sent=sent)
    return "attempted"


# --- Queueing -------------------------------------------------------------------


def enqueue(*, delivery_id: uuid.UUID, countdown: float | None = None) -> bool:
    """Put a delivery's task on the queue; False (logged) when the broker is down.

    A failure here loses nothing: the row stays pending and the sweep re-sends it.
    """
    try:
        celery_app.signature(DELIVER_TASK).apply_async(args=[str(delivery_id)], countdown=countdown)
    except Exception:
        logger.warning(
            "Could not enqueue delivery %s; the sweep will retry",
            delivery_id,
            extra=log_ids(delivery_id=delivery_id),
        )
        return False
    return True


# Deliveries carried by one task. Small, so that a group spreads over the
# worker's threads instead of queueing behind one slow target.
TASK_BATCH = 4


def enqueue_many(ids: Sequence[uuid.UUID]) -> int:
    """Put deliveries on the queue, a few per task; returns how many made it.

    As with enqueue, a failure loses nothing: the sweep re-sends what is still
    pending. After one failure the broker is taken to be down and the rest
    are left to the sweep too, rather than each waiting out its own timeout.
    """
    deliver_many_task = celery_app.signature(DELIVER_MANY_TASK)
    sent = 0
    try:
        # One producer for the whole pass; the ids as their own argsrepr
        # (Celery's saferepr of them cost a tenth of a publish).
        with celery_app.producer_or_acquire() as producer:
            for start in range(0, len(ids), TASK_BATCH):
                chunk = [str(i) for i in ids[start : start + TASK_BATCH]]
                deliver_many_task.apply_async(
                    args=[chunk], producer=producer, argsrepr=repr([chunk])
                )
                sent = start + len(chunk)
    except Exception:
        left = ", ".join(str(i) for i in ids[sent:])
        logger.warning("Could not enqueue deliveries %s; the sweep will retry", left)
    return sent


def sweep(*, limit: int = 500) -> int:
    """Enqueue deliveries that are due but whose task is not (or no longer) queued."""
    ids = storage.take_for_sweep(now=timezone.now(), requeue_after=_requeue_after(), limit=limit)
    enqueue_many(ids)
    return len(ids)


def send_held(*, webhook_id: uuid.UUID) -> None:
    """A resumed webhook's waiting deliveries go out now, in order of arrival.

    Their tasks ran while it was paused and skipped them; marked as never
    queued, the sweep sends them again, oldest ``next_attempt_at`` (for a
    first attempt: the arrival) first. Runs in the caller's transaction; the
    sweep runs once it commits (it would not see them before)."""
    Delivery.objects.filter(webhook_id=webhook_id, status=Delivery.Status.PENDING).update(
        enqueued_at=None
    )
    transaction.on_commit(sweep, robust=True)


def replay_state(now: datetime) -> dict[str, Any]:
    """The replay rule, once (redeliver, and the recoveries' batches,
    webhooks/recovery.py): the same delivery (same webhook-id) becomes due
    now, whatever its state, with its attempts counted again from zero (a
    full retry schedule), marked as queued (its task goes out after the
    commit; the sweep re-sends it if that is lost)."""
    return {
        "status": Delivery.Status.PENDING,
        "attempts": 0,
        "last_error": "",
        "delivered_at": None,
        "next_attempt_at": now,
        "enqueued_at": now,
        "leased_until": None,
        "updated_at": now,
    }


def redeliver(*, delivery: Delivery) -> None:
    """Replay one delivery (replay_state). Its task is queued when the
    caller's transaction commits."""
    Delivery.objects.filter(id=delivery.id).update(**replay_state(timezone.now()))
    storage.after_commit(lambda: enqueue(delivery_id=delivery.id))
