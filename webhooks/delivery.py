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
"""

from __future__ import annotations

import functools
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, connections, transaction
from django.db.models import F, Model, Q
from django.utils import timezone

from conduit import dbconn
from conduit.celery import app as celery_app
from webhooks import outbound, ratelimit, retry
from webhooks.models import Delivery, DeliveryLog, InboundMessage, Webhook
from webhooks.payload import AuthResults, Envelope, build_payload
from webhooks.signing import signature_headers
from webhooks.templating import TemplateRenderProblem, render_payload

logger = logging.getLogger(__name__)

# The tasks are published by name (webhooks/tasks.py registers them under
# these): the engine needs the queue, not the module that wraps it. Where the
# task is registered (a worker) its own apply_async runs; elsewhere (the
# ingress) the signature falls back to send_task.
DELIVER_TASK = "webhooks.tasks.deliver"
DELIVER_MANY_TASK = "webhooks.tasks.deliver_many"

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


def message_payload(*, message: InboundMessage, rcpt_to: list[str], simulated: bool) -> dict:
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
    )
    return build_payload(bytes(message.raw), envelope=envelope, auth=auth, simulated=simulated)


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


def send(*, webhook: Webhook, payload: dict, webhook_message_id: str) -> SendResult:
    """Render, sign and POST one payload: the one code path for real and simulated sends."""
    attempted_at = timezone.now()
    try:
        body, content_type = render_payload(
            template=webhook.payload_template or None, payload=payload
        )
    except TemplateRenderProblem as exc:
        message = f"The payload template failed to render: {exc}"
        return _not_sent(message, kind=outbound.ErrorKind.TEMPLATE)
    headers = dict(webhook.custom_headers or {})
    headers.update(
        signature_headers(
            secret=webhook.secret,
            msg_id=webhook_message_id,
            timestamp=int(time.time()),
            body=body,
        )
    )
    headers["Content-Type"] = content_type
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


def log_attempt(
    *,
    webhook: Webhook,
    sent: SendResult,
    sender: str,
    smtp_message_id: str,
    delivery: Delivery | None = None,
    attempt: int = 1,
    simulated: bool = False,
) -> DeliveryLog:
    result = sent.attempt
    log = DeliveryLog.objects.create(
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
    )
    Webhook.objects.filter(id=webhook.id).update(log_count=F("log_count") + 1)
    return log


# --- Claiming -----------------------------------------------------------------


def _claimable(now: datetime) -> Q:
    """Rows a worker may take now: due pending ones, and stale leases of dead workers."""
    due = Q(status=Delivery.Status.PENDING) & (
        Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now)
    )
    stale = Q(status=Delivery.Status.DELIVERING, leased_until__lte=now)
    return due | stale


def _read_delivery(delivery_id: uuid.UUID) -> Delivery | None:
    """The delivery with its webhook and message. A connection found dead here
    (workers check theirs only when idle) is replaced and the read run again."""

    def read() -> Delivery | None:
        found = Delivery.objects.select_related("webhook", "message").filter(id=delivery_id)
        return next(iter(found), None)  # not .first(): no ORDER BY for a primary key

    return dbconn.read_reconnecting(read)


class _Rows:
    """Model instances from columns read with hand-written SQL: the column list
    for a SELECT, and the ORM's own conversions (JSON) applied to the values."""

    def __init__(self, model: type[Model]) -> None:
        self.model = model
        fields = model._meta.concrete_fields
        self.attnames = [f.attname for f in fields]
        self.columns = [f.column for f in fields]
        self.converters = [
            (i, f, converters)
            for i, f in enumerate(fields)
            if (converters := f.get_db_converters(connection))
        ]

    def select(self, table: str) -> str:
        return ", ".join(f"{table}.{connection.ops.quote_name(c)}" for c in self.columns)

    def build(self, values: Sequence[object]) -> Model:
        row = list(values)
        for i, field, converters in self.converters:
            for convert in converters:
                row[i] = convert(row[i], field, connection)
        return self.model.from_db(connection.alias, self.attnames, row)


@functools.cache
def _claim_query(alias: str) -> tuple[str, _Rows, _Rows, _Rows]:
    """The claim statement and how to read its row, built once per database."""
    quote = connections[alias].ops.quote_name
    deliveries, webhooks, messages = (_Rows(model) for model in (Delivery, Webhook, InboundMessage))
    sql = (
        f"WITH claimed AS (UPDATE {quote(Delivery._meta.db_table)} AS d "  # noqa: S608
        "SET status = %(delivering)s, leased_until = %(leased_until)s, updated_at = %(now)s "
        f"FROM {quote(Webhook._meta.db_table)} AS hook "
        "WHERE d.id = %(id)s AND hook.id = d.webhook_id "
        "AND hook.active AND hook.rate_limit = 0 AND ("
        "(d.status = %(pending)s"
        " AND (d.next_attempt_at IS NULL OR d.next_attempt_at <= %(now)s))"
        " OR (d.status = %(delivering)s AND d.leased_until <= %(now)s)) "
        f"RETURNING {', '.join(f'd.{quote(c)}' for c in deliveries.columns)}) "
        f"SELECT {deliveries.select('claimed')}, "
        f"{webhooks.select('w')}, {messages.select('m')} "
        f"FROM claimed JOIN {quote(Webhook._meta.db_table)} AS w ON w.id = claimed.webhook_id "
        f"JOIN {quote(InboundMessage._meta.db_table)} AS m ON m.id = claimed.message_id"
    )
    return sql, deliveries, webhooks, messages


def _claim_in_one_statement(delivery_id: uuid.UUID, now: datetime) -> Delivery | None:
    """The usual claim as one statement: a due delivery of an active webhook
    without a rate limit is leased and read with its webhook and message.

    None when that does not apply (not due, taken, inactive, rate-limited,
    gone); _claim's general path then sorts out which. The ORM's read and
    update, compiled for every delivery, were a quarter of a worker's CPU.
    """
    sql, deliveries, webhooks, messages = _claim_query(connection.alias)
    params = {
        "id": delivery_id,
        "now": now,
        "leased_until": now + _lease(),
        "pending": Delivery.Status.PENDING.value,
        "delivering": Delivery.Status.DELIVERING.value,
    }

    def run() -> tuple | None:
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchone()

    # Safe to run again: if a first run's UPDATE committed unseen, the second
    # finds the row leased and the lease's expiry gives it back to the sweep.
    row = dbconn.read_reconnecting(run)
    if row is None:
        return None
    ends_delivery = len(deliveries.columns)
    ends_webhook = ends_delivery + len(webhooks.columns)
    delivery = deliveries.build(row[:ends_delivery])
    delivery.webhook = webhooks.build(row[ends_delivery:ends_webhook])
    delivery.message = messages.build(row[ends_webhook:])
    return delivery


def _claim(delivery_id: uuid.UUID) -> Delivery | None:
    """Move the delivery to 'delivering' under a lease if it is due; None otherwise.

    One conditional UPDATE that only matches while the row is still
    claimable: of two workers holding the same id (a sweep re-send, a
    redelivered task), exactly one gets the row. No transaction or lock is
    held beyond that statement. On PostgreSQL the usual case is that one
    statement (_claim_in_one_statement); otherwise, and for the rest, one read
    decides what to do.
    """
    now = timezone.now()
    if connection.vendor == "postgresql":
        claimed = _claim_in_one_statement(delivery_id, now)
        if claimed is not None:
            return claimed
    delivery = _read_delivery(delivery_id)
    if delivery is None:
        return None  # gone
    due = delivery.status == Delivery.Status.PENDING and (
        delivery.next_attempt_at is None or delivery.next_attempt_at <= now
    )
    stale = (
        delivery.status == Delivery.Status.DELIVERING
        and delivery.leased_until is not None
        and delivery.leased_until <= now
    )
    if not (due or stale):
        return None
    # Every write below matches only while the row is still claimable.
    claimable = Delivery.objects.filter(_claimable(now), id=delivery.id)
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
    leased_until = now + _lease()
    if not claimable.update(
        status=Delivery.Status.DELIVERING, leased_until=leased_until, updated_at=now
    ):
        return None  # another worker took it meanwhile
    delivery.status = Delivery.Status.DELIVERING
    delivery.leased_until = leased_until
    return delivery


def _record(*, delivery: Delivery, sent: SendResult) -> None:
    """Write the attempt's log and move the delivery to its next state, together."""
    result = sent.attempt
    attempts = delivery.attempts + 1
    outcome = retry.classify(http_status=result.http_status, error_kind=result.error_kind)
    if result.error_kind == outbound.ErrorKind.TEMPLATE:
        outcome = "final"
    now = timezone.now()
    update: dict = {"attempts": attempts, "leased_until": None, "last_error": result.error or ""}
    countdown: float | None = None
    if outcome == "delivered":
        update.update(status=Delivery.Status.DELIVERED, delivered_at=now, next_attempt_at=None)
    elif outcome == "retry":
        retry_after = retry.parse_retry_after(result.retry_after, now=now)
        delay = retry.next_delay(
            attempts_made=attempts,
            retry_after=retry_after,
            slow_down=result.error_kind == outbound.ErrorKind.TIMEOUT or result.http_status == 429,
        )
        if delay is None:
            update.update(status=Delivery.Status.FAILED, next_attempt_at=None)
        else:
            due = now + delay
            short = delay <= COUNTDOWN_LIMIT
            update.update(
                status=Delivery.Status.PENDING,
                next_attempt_at=due,
                enqueued_at=due if short else None,
            )
            countdown = delay.total_seconds() if short else None
    else:
        update.update(status=Delivery.Status.FAILED, next_attempt_at=None)
    if result.http_status is not None and not update["last_error"]:
        update["last_error"] = f"HTTP {result.http_status}"
    if outcome == "delivered":
        update["last_error"] = ""

    message = delivery.message
    if outcome != "gone" and connection.vendor == "postgresql":
        _record_in_one_statement(
            delivery=delivery, sent=sent, attempt=attempts, update={"updated_at": now, **update}
        )
        if countdown is not None:
            transaction.on_commit(
                lambda: enqueue(delivery_id=delivery.id, countdown=countdown), robust=True
            )
        return
    # The log, the delivery's new state and a 410's deactivation stand or fall together.
    with transaction.atomic():
        log_attempt(
            webhook=delivery.webhook,
            sent=sent,
            sender=message.mail_from,
            smtp_message_id=message.message_id_header,
            delivery=delivery,
            attempt=attempts,
        )
        Delivery.objects.filter(id=delivery.id).update(updated_at=now, **update)
        if outcome == "gone":
            Webhook.objects.filter(id=delivery.webhook_id).update(
                active=False,
                deactivated_reason=f"The target answered 410 Gone at {now:%Y-%m-%d %H:%M:%S} UTC",
                updated_at=now,
            )
        if countdown is not None:
            transaction.on_commit(
                lambda: enqueue(delivery_id=delivery.id, countdown=countdown), robust=True
            )


def _record_in_one_statement(
    *, delivery: Delivery, sent: SendResult, attempt: int, update: dict
) -> None:
    """What _record writes (the log row, the webhook's log counter and the
    delivery's new state) as one statement, so one round trip and atomic without
    a transaction around it. The ORM would compile three statements for it,
    which cost more CPU than the delivery's HTTP request."""
    result = sent.attempt
    message = delivery.message
    log_columns = {
        "id": uuid.uuid4(),
        "webhook_id": delivery.webhook_id,
        "delivery_id": delivery.id,
        "attempt": attempt,
        "attempted_at": sent.attempted_at,
        "duration_ms": result.duration_ms,
        "http_status": result.http_status,
        "error": result.error or "",
        "response_body": result.response_body,
        "sender": message.mail_from,
        "smtp_message_id": message.message_id_header,
        "simulated": False,
    }
    delivery_columns = {Delivery._meta.get_field(name).column: v for name, v in update.items()}
    # Table and column names from the models, values as parameters.
    log_table, webhook_table = DeliveryLog._meta.db_table, Webhook._meta.db_table
    values = ", ".join(["%s"] * len(log_columns))
    assignments = ", ".join(f"{column} = %s" for column in delivery_columns)
    sql = (
        f"WITH new_log AS (INSERT INTO {log_table} ({', '.join(log_columns)}) "  # noqa: S608
        f"VALUES ({values})), "
        f"counted AS (UPDATE {webhook_table} SET log_count = log_count + 1 WHERE id = %s) "
        f"UPDATE {Delivery._meta.db_table} SET {assignments} WHERE id = %s"
    )
    params = [*log_columns.values(), delivery.webhook_id, *delivery_columns.values(), delivery.id]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def deliver(*, delivery_id: uuid.UUID) -> str:
    """Run one attempt of a delivery if it is due. Returns what happened, for logs."""
    delivery = _claim(delivery_id)
    if delivery is None:
        return "skipped"
    message = delivery.message
    if message.raw is None:
        purged = "The raw message was purged before it could be delivered."
        sent = _not_sent(purged, kind="template")
    else:
        try:
            payload = message_payload(message=message, rcpt_to=delivery.rcpt_to, simulated=False)
            sent = send(
                webhook=delivery.webhook,
                payload=payload,
                webhook_message_id=delivery.webhook_message_id,
            )
        except Exception:
            # A bug must cost an attempt (and end in 'failed'), not loop forever
            # through lease expiry with nothing in the log.
            logger.exception("Delivery %s crashed", delivery.id)
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
        logger.warning("Could not enqueue delivery %s; the sweep will retry", delivery_id)
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
    now = timezone.now()
    due = Q(status=Delivery.Status.PENDING, next_attempt_at__lte=now) & (
        Q(enqueued_at__isnull=True) | Q(enqueued_at__lte=now - _requeue_after())
    )
    stale = Q(status=Delivery.Status.DELIVERING, leased_until__lte=now)
    with transaction.atomic():
        ids = list(
            Delivery.objects.select_for_update(skip_locked=True)
            .filter(due | stale)
            .order_by("next_attempt_at")
            .values_list("id", flat=True)[:limit]
        )
        # A dead worker's row goes back to pending, so the claim treats it as due.
        Delivery.objects.filter(id__in=ids, status=Delivery.Status.DELIVERING).update(
            status=Delivery.Status.PENDING, next_attempt_at=now, leased_until=None
        )
        Delivery.objects.filter(id__in=ids).update(enqueued_at=now)
    enqueue_many(ids)
    return len(ids)


def redeliver(*, delivery: Delivery) -> None:
    """Operator replay: the same delivery (same webhook-id) becomes due now."""
    now = timezone.now()
    Delivery.objects.filter(id=delivery.id).update(
        status=Delivery.Status.PENDING,
        next_attempt_at=now,
        enqueued_at=now,
        leased_until=None,
        updated_at=now,
    )
    transaction.on_commit(lambda: enqueue(delivery_id=delivery.id), robust=True)


def purge_raw_messages(*, older_than_days: int) -> int:
    """Drop raw MIME past retention; a message still waiting to be delivered keeps it."""
    now = timezone.now()
    unfinished = [Delivery.Status.PENDING, Delivery.Status.DELIVERING]
    return (
        InboundMessage.objects.filter(
            received_at__lt=now - timedelta(days=older_than_days), raw__isnull=False
        )
        .exclude(deliveries__status__in=unfinished)
        .update(raw=None, raw_purged_at=now)
    )
