"""The pipeline's storage: every statement the ingress and the delivery engine run.

Each fast path written in SQL for PostgreSQL sits beside the ORM code it must
agree with, and the choice between them is made here, once (``_fast``):

- accepting mail: one INSERT for a group of messages, their deliveries, the
  accounts' views of them and the accounts' message counts (insert_messages),
  or the ORM's bulk_create;
- the claim rule (claimable / CLAIMABLE_SQL), one conditional UPDATE that
  leases a due delivery and reads it (claim_due), or the ORM's read and update;
- recording an attempt: the log row, the webhook's log counter and the
  delivery's new state in one statement (record_attempt), or three in a
  transaction;
- the sweep's scan (take_for_sweep);
- a recovery's batch: the next matching deliveries after its cursor, queued
  again in one statement (requeue_batch), or the ORM's read and update.

Column lists come from the models' ``_meta`` and identifiers are quoted;
tests/webhooks/test_accept.py, test_claim.py and test_delivery.py run both
halves on PostgreSQL and compare what they write.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from datetime import datetime, timedelta
from typing import Any

from django.db import connection, connections, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Exists, F, Model, OuterRef, Q
from django.utils import timezone

from accounts.models import Account
from conduit import dbconn
from webhooks.health import Streak
from webhooks.models import (
    AccountMessage,
    Delivery,
    DeliveryLog,
    InboundMessage,
    RecoveryJob,
    Webhook,
)

logger = logging.getLogger("conduit.storage")

# The PostgreSQL fast paths are taken when this is true and the database is
# PostgreSQL; the tests turn it off to run the ORM half on PostgreSQL too.
FAST_PATHS = True


def on_postgresql(database: BaseDatabaseWrapper | None = None) -> bool:
    """Whether the database (by default Django's default connection) is PostgreSQL.

    The project's one test of the database's vendor: the fast paths below, the
    route-change triggers (webhooks migration 0002) and what the ingress builds
    on them (its LISTEN connection, more than one process) all ask here.
    """
    return (database or connection).vendor == "postgresql"


def _fast() -> bool:
    """Whether to take the PostgreSQL statements: the one place this is decided."""
    return FAST_PATHS and on_postgresql()


def after_commit(callback: Callable[[], object]) -> None:
    """Run ``callback`` once what was just written is committed.

    Inside a transaction, when it commits (a failing callback is logged, not
    raised); outside one the write was its own transaction and is committed
    already, so now. Deferring to ``transaction.on_commit`` outside a
    transaction would only look like a deferral.
    """
    if connection.in_atomic_block:
        transaction.on_commit(callback, robust=True)
    else:
        callback()


# --- Accepting mail ---------------------------------------------------------------


# Above this size a message's raw bytes go to PostgreSQL as a binary parameter.
# Django's psycopg binds parameters client-side, writing bytes into the SQL text
# as a hex literal: a 25 MB message took ~140 MB of memory to insert that way.
BINARY_RAW_BYTES = 1024 * 1024


def _store_raw_binary(*, message: InboundMessage, raw: bytes) -> None:
    from psycopg import Cursor, sql  # Cursor binds server-side; %b sends bytes as they are

    update = sql.SQL("UPDATE {} SET raw = %b WHERE id = %s").format(
        sql.Identifier(InboundMessage._meta.db_table)
    )
    # Django's connection, inside its transaction: the row commits with the rest.
    with Cursor(connection.connection) as cursor:
        cursor.execute(update, [raw, message.id])
    message.raw = raw


# What differs from row to row in the single-statement insert; every other
# column has one value for the whole statement (a default, NULL or "now").
# JSON and IP addresses travel as text and are cast by PostgreSQL.
_ROW_COLUMNS = {
    InboundMessage: (
        "id",
        "mail_from",
        "rcpt_to",
        "client_ip",
        "helo",
        "raw",
        "size",
        "message_id_header",
        "subject",
        "spf_result",
        "dkim_domains",
        "dmarc_result",
        "arc_result",
        "smtp_auth_user",
    ),
    Delivery: ("id", "message_id", "webhook_id", "rcpt_to"),
}
_AS_TEXT = {"jsonb", "inet"}


@functools.cache
def _insert_sql(alias: str) -> str:
    """One INSERT for messages and their deliveries: a data-modifying CTE for
    the messages, the deliveries in the main query, each a SELECT over
    ``unnest`` of one array per column that differs by row (_ROW_COLUMNS), the
    other columns one parameter each. The text is the same for any number of
    rows, so it is built once, and psycopg converts it once (its query cache).
    PostgreSQL plans it once per connection, as a prepared statement, unless
    CONDUIT_PREPARED_STATEMENTS is off (_execute_prepared; README)."""
    db = connections[alias]
    quote = db.ops.quote_name

    def insert(model: type[Any]) -> str:
        name = model.__name__.lower()
        varying = _ROW_COLUMNS[model]
        by_column = {f.column: f for f in model._meta.concrete_fields}
        arrays = []
        for column in varying:
            kind = by_column[column].db_type(db)
            arrays.append(f"%({name}_{column})b::{'text' if kind in _AS_TEXT else kind}[]")
        values = []
        for column, f in by_column.items():
            kind = f.db_type(db)
            if column not in varying:
                values.append(f"%({name}_{column})b::{kind}")
            else:
                values.append(f"r.{quote(column)}" + (f"::{kind}" if kind in _AS_TEXT else ""))
        table = quote(model._meta.db_table)
        columns = ", ".join(quote(column) for column in by_column)
        rows = f"unnest({', '.join(arrays)}) AS r({', '.join(quote(c) for c in varying)})"
        return f"{table} ({columns}) SELECT {', '.join(values)} FROM {rows}"  # noqa: S608

    messages, deliveries = insert(InboundMessage), insert(Delivery)
    return (
        f"WITH new_messages AS (INSERT INTO {messages}), {_account_views_sql(alias)} "
        f"INSERT INTO {deliveries}"
    )


def _account_views_sql(alias: str) -> str:
    """The CTEs of the single INSERT that give each account whose webhooks got
    a message its AccountMessage row, and add them to the accounts' counts.
    Both come from arrays (_viewers: the ingress knows each webhook's
    account), so the statement joins nothing for them: planning a join, a
    DISTINCT and a GROUP BY here cost the server more than writing the rows."""
    db = connections[alias]
    quote = db.ops.quote_name

    def kind(model: type[Model], name: str) -> str:
        return model._meta.get_field(name).db_type(db)

    values = {
        "id": "gen_random_uuid()",
        "account_id": "v.account_id",
        "message_id": "v.message_id",
        "received_at": f"%(inboundmessage_received_at)b::{kind(InboundMessage, 'received_at')}",
    }
    columns = [f.column for f in AccountMessage._meta.concrete_fields]
    if set(columns) != set(values):  # a new column needs its value here
        raise RuntimeError(f"AccountMessage columns {columns} are not all written")
    count = quote(Account._meta.get_field("message_count").column)
    account_id = kind(AccountMessage, "account")
    return (
        f"new_views AS (INSERT INTO {quote(AccountMessage._meta.db_table)} "  # noqa: S608
        f"({', '.join(quote(c) for c in columns)}) "
        f"SELECT {', '.join(values[c] for c in columns)} "
        f"FROM unnest(%(accountmessage_account_id)b::{account_id}[], "
        f"%(accountmessage_message_id)b::{kind(AccountMessage, 'message')}[]) "
        "AS v(account_id, message_id)), "
        # The accounts come in order, like the ORM half's, so two groups lock
        # shared accounts alike; a deadlock anyway fails the group, which is
        # then stored message by message (nothing is lost).
        f"counted AS (UPDATE {quote(Account._meta.db_table)} AS a "
        f"SET {count} = a.{count} + c.n "
        f"FROM unnest(%(account_id)b::{account_id}[], %(account_message_count)b::"
        f"{kind(Account, 'message_count')}[]) AS c(account_id, n) "
        f"WHERE a.{quote(Account._meta.pk.column)} = c.account_id)"
    )


def _viewers(new: NewMessage) -> list[uuid.UUID]:
    """The accounts that see a message: each one whose webhooks got it, once, in order."""
    return sorted({new.accounts[webhook_id] for webhook_id in new.recipients})


def _counted(views: Sequence[uuid.UUID]) -> dict[uuid.UUID, int]:
    """How many messages each account gained (the accounts of ``views``, one
    per AccountMessage row), in account order: the order their rows are locked in."""
    return dict(sorted(Counter(views).items()))


def _subject(new: NewMessage) -> str:
    """The Subject as stored: cut to the column."""
    return new.subject[:998]


def _constants(
    model: type[Model], *, now: datetime, at_now: tuple[str, ...] = (), **values: Any
) -> dict[str, Any]:
    """The columns not in _ROW_COLUMNS, as the ORM would write them for a new
    ``model(**values)`` whose fields ``at_now`` hold ``now``. The ones the ORM
    stamps itself (auto_now, auto_now_add) get the time, as its pre_save gives
    them; the others their value in a prototype, worked out once per
    ``values`` (a prototype built and every field adapted through it for each
    statement cost ~0.1 ms)."""
    fixed, stamped = _prototype_columns(connection.alias, model, tuple(values.items()), at_now)
    clock = timezone.now()
    return {
        **fixed,
        **{
            key: f.get_db_prep_save(now if f.name in at_now else clock, connection)
            for key, f in stamped
        },
    }


@functools.cache
def _prototype_columns(
    alias: str, model: type[Model], values: tuple[tuple[str, Any], ...], at_now: tuple[str, ...]
) -> tuple[dict[str, Any], tuple[tuple[str, Any], ...]]:
    """_constants' columns that never change for these values (pre_save gives
    the default, get_db_prep_save adapts it), and the time-stamped ones."""
    prototype = model(**dict(values))
    name = model.__name__.lower()
    fixed, stamped = {}, []
    for f in model._meta.concrete_fields:
        if f.column in _ROW_COLUMNS[model]:
            continue
        key = f"{name}_{f.column}"
        if f.name in at_now or getattr(f, "auto_now", False) or getattr(f, "auto_now_add", False):
            stamped.append((key, f))
        else:
            fixed[key] = f.get_db_prep_save(f.pre_save(prototype, add=True), connections[alias])
    return fixed, tuple(stamped)


_client_ip_field = InboundMessage._meta.get_field("client_ip")


def _insert_together(
    new_messages: Sequence[NewMessage],
    now: Any,
    *,
    message_ids: Sequence[uuid.UUID],
    raw_store: str,
) -> list[AcceptedMessage]:
    """Insert messages and their deliveries in one statement (PostgreSQL),
    straight from the NewMessages: building model instances and adapting every
    value through its field cost more CPU than the database takes to run it.

    The arrays go as binary parameters bound server-side (psycopg's Cursor, not
    Django's client-side one): quoting each message's bytes into the query text
    took a sixth of the ingress's CPU. tests/webhooks/test_accept.py checks that
    the rows are the ones the ORM writes."""
    accepted = []
    params: dict[str, Any] = {
        # raw_store is the same for every message of the statement.
        **_constants(InboundMessage, now=now, raw_store=raw_store),
        **_constants(Delivery, now=now, at_now=("next_attempt_at", "enqueued_at")),
        "inboundmessage_id": list(message_ids),
        "inboundmessage_mail_from": [new.mail_from for new in new_messages],
        "inboundmessage_rcpt_to": [
            json.dumps([r for rcpts in new.recipients.values() for r in rcpts])
            for new in new_messages
        ],
        "inboundmessage_client_ip": [
            _client_ip_field.get_prep_value(new.client_ip) or None for new in new_messages
        ],
        "inboundmessage_helo": [new.helo for new in new_messages],
        "inboundmessage_raw": [None if raw_store else new.raw for new in new_messages],
        "inboundmessage_size": [len(new.raw) for new in new_messages],
        "inboundmessage_message_id_header": [new.message_id_header[:998] for new in new_messages],
        "inboundmessage_subject": [_subject(new) for new in new_messages],
        "inboundmessage_spf_result": [new.spf_result for new in new_messages],
        "inboundmessage_dkim_domains": [json.dumps(list(new.dkim_domains)) for new in new_messages],
        "inboundmessage_dmarc_result": [
            None if new.dmarc is None else json.dumps(new.dmarc) for new in new_messages
        ],
        "inboundmessage_arc_result": [new.arc_result for new in new_messages],
        "inboundmessage_smtp_auth_user": [new.smtp_auth_user for new in new_messages],
        "delivery_id": [],
        "delivery_message_id": [],
        "delivery_webhook_id": [],
        "delivery_rcpt_to": [],
        "accountmessage_account_id": [],
        "accountmessage_message_id": [],
    }
    for message_id, new in zip(message_ids, new_messages, strict=True):
        viewers = _viewers(new)
        params["accountmessage_account_id"].extend(viewers)
        params["accountmessage_message_id"].extend([message_id] * len(viewers))
        ids = []
        for webhook_id, rcpts in new.recipients.items():
            ids.append(uuid.uuid4())
            params["delivery_message_id"].append(message_id)
            params["delivery_webhook_id"].append(webhook_id)
            params["delivery_rcpt_to"].append(json.dumps(rcpts))
        params["delivery_id"].extend(ids)
        accepted.append(AcceptedMessage(message_id=message_id, delivery_ids=ids))
    counted = _counted(params["accountmessage_account_id"])
    params["account_id"] = list(counted)
    params["account_message_count"] = list(counted.values())
    connection.ensure_connection()
    with connection.wrap_database_errors:
        _execute_prepared(_insert_sql(connection.alias), params)
    return accepted


def _execute_prepared(statement: str, params: dict[str, Any]) -> None:
    """Run a statement on the binding cursor, which PostgreSQL prepares after
    a few runs when prepared statements are on (CONDUIT_PREPARED_STATEMENTS).

    A connection pooler that gives each transaction another server connection
    (PgBouncer before 1.21 in transaction mode) loses them, and the next run
    of a prepared statement fails. Then this connection stops preparing, a
    warning says how to switch them off, and the statement runs again at once
    when it was alone in its transaction (in a larger one the caller's retry
    takes it: the group commit stores its messages one by one).
    """
    from psycopg import errors

    cursor = _binding_cursor()
    try:
        cursor.execute(statement, params)
    except (errors.InvalidSqlStatementName, errors.DuplicatePreparedStatement):
        raw = cursor.connection
        if raw.prepare_threshold is None:
            raise
        raw.prepare_threshold = None
        logger.warning(
            "A prepared statement went missing on the database connection: a connection pooler "
            "is probably in transaction mode. This connection no longer prepares statements; set "
            "CONDUIT_PREPARED_STATEMENTS=false (or use PgBouncer 1.21+ with "
            "max_prepared_statements) to stop this warning."
        )
        if connection.in_atomic_block:
            raise
        cursor.execute(statement, params)


# Each thread's server-side binding cursor, kept for its connection's life.
_kept = threading.local()


def _binding_cursor() -> Any:
    """A psycopg Cursor (binds server-side, binary) on this thread's connection.

    Kept, not made per statement: a cursor remembers which adapter dumps each
    type of parameter, and the single INSERT has ~45; a new cursor looked them
    all up again, which doubled what sending a group's arrays cost (in-process:
    ~84 -> ~42 us for four one-element arrays). It holds the last statement's
    dumped parameters until the next one.
    """
    from psycopg import Cursor

    raw = connection.connection
    cursor = getattr(_kept, "cursor", None)
    if cursor is None or cursor.closed or cursor.connection is not raw:
        cursor = _kept.cursor = Cursor(raw)
    return cursor


@dataclass(frozen=True)
class NewMessage:
    """A message the ingress accepts, with its recipients grouped by webhook id."""

    raw: bytes
    mail_from: str
    recipients: dict[uuid.UUID, list[str]]
    # Each recipient webhook's account (webhook id -> account id), whose list
    # of messages shows this one; the ingress knows them from its routes.
    accounts: dict[uuid.UUID, uuid.UUID]
    client_ip: str | None
    helo: str
    message_id_header: str
    # Decoded, as the payload reports it (accept.message_id_and_subject).
    subject: str = ""
    spf_result: str = ""
    dkim_domains: list[str] = dataclass_field(default_factory=list)
    dmarc: dict | None = None
    arc_result: str = ""
    smtp_auth_user: str = ""


@dataclass(frozen=True)
class AcceptedMessage:
    message_id: uuid.UUID
    delivery_ids: list[uuid.UUID]


def _insert_with_orm(
    new_messages: Sequence[NewMessage],
    now: Any,
    *,
    message_ids: Sequence[uuid.UUID],
    raw_store: str,
) -> list[AcceptedMessage]:
    """The general way (SQLite, or a message too big for the single statement)."""
    postgres = on_postgresql()
    messages = [
        InboundMessage(
            id=message_id,
            raw_store=raw_store,
            mail_from=new.mail_from,
            rcpt_to=[rcpt for rcpts in new.recipients.values() for rcpt in rcpts],
            client_ip=new.client_ip,
            helo=new.helo,
            raw=None if raw_store or (postgres and len(new.raw) > BINARY_RAW_BYTES) else new.raw,
            size=len(new.raw),
            message_id_header=new.message_id_header[:998],
            subject=_subject(new),
            spf_result=new.spf_result,
            dkim_domains=list(new.dkim_domains),
            dmarc_result=new.dmarc,
            arc_result=new.arc_result,
            smtp_auth_user=new.smtp_auth_user,
        )
        for message_id, new in zip(message_ids, new_messages, strict=True)
    ]
    deliveries = [
        [
            Delivery(
                message=message,
                webhook_id=webhook_id,
                rcpt_to=rcpts,
                next_attempt_at=now,
                enqueued_at=now,
            )
            for webhook_id, rcpts in new.recipients.items()
        ]
        for message, new in zip(messages, new_messages, strict=True)
    ]
    # No savepoint when the caller holds a transaction: any failure fails it all.
    with transaction.atomic(savepoint=False):
        InboundMessage.objects.bulk_create(messages)
        for message, new in zip(messages, new_messages, strict=True):
            if message.raw is None and not raw_store:
                _store_raw_binary(message=message, raw=new.raw)
        Delivery.objects.bulk_create([d for each in deliveries for d in each])
        _show_to_accounts(messages, new_messages)
    return [
        AcceptedMessage(message_id=message.id, delivery_ids=[d.id for d in each])
        for message, each in zip(messages, deliveries, strict=True)
    ]


def _show_to_accounts(
    messages: Sequence[InboundMessage], new_messages: Sequence[NewMessage]
) -> None:
    """The ORM's twin of _account_views_sql: each account whose webhooks got a
    message sees it once, and counts it."""
    views = [
        AccountMessage(account_id=account_id, message=message, received_at=message.received_at)
        for message, new in zip(messages, new_messages, strict=True)
        for account_id in _viewers(new)
    ]
    AccountMessage.objects.bulk_create(views)
    for account_id, count in _counted([view.account_id for view in views]).items():
        Account.objects.filter(id=account_id).update(message_count=F("message_count") + count)


def insert_messages(
    new_messages: Sequence[NewMessage],
    now: datetime,
    *,
    message_ids: Sequence[uuid.UUID],
    raw_store: str = "",
) -> list[AcceptedMessage]:
    """Store messages (with the given ids) and one pending delivery per webhook
    each, all or nothing. With ``raw_store`` (an object store's location, where
    the caller already wrote the raw bytes) the rows keep no raw content."""
    fits = raw_store or all(len(new.raw) <= BINARY_RAW_BYTES for new in new_messages)
    if _fast() and fits:
        # One statement: atomic by itself, one round trip, no transaction to open.
        return _insert_together(new_messages, now, message_ids=message_ids, raw_store=raw_store)
    return _insert_with_orm(new_messages, now, message_ids=message_ids, raw_store=raw_store)


# --- Claiming ----------------------------------------------------------------------

# The claim rule, once, in both languages: a worker may take a delivery that is
# pending and due, or delivering under a lease that ran out (its worker died),
# unless its webhook is paused. tests/webhooks/test_claim.py checks that both
# select the same rows.


def claimable(now: datetime) -> Q:
    """Rows a worker may take now: due pending ones, and stale leases of dead
    workers, of webhooks that are not paused."""
    due = Q(status=Delivery.Status.PENDING) & (
        Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now)
    )
    return (due | _stale(now)) & _not_paused()


CLAIMABLE_SQL = (
    "(hook.paused_at IS NULL"
    " AND ((d.status = %(pending)s"
    " AND (d.next_attempt_at IS NULL OR d.next_attempt_at <= %(now)s))"
    " OR (d.status = %(delivering)s AND d.leased_until <= %(now)s)))"
)
"""The same rule for a statement where the delivery table is ``d`` and its
webhook ``hook`` (the claim joins the webhook anyway: the paused check is a
column of a row it reads)."""


def claimable_params(now: datetime) -> dict[str, Any]:
    return {
        "now": now,
        "pending": Delivery.Status.PENDING.value,
        "delivering": Delivery.Status.DELIVERING.value,
    }


def _stale(now: datetime) -> Q:
    return Q(status=Delivery.Status.DELIVERING, leased_until__lte=now)


def _not_paused() -> Q:
    # A subquery, not a join (webhook__paused_at): an UPDATE filtered through a
    # join becomes ``id IN (SELECT ...)``, whose re-check under a concurrent
    # claim reads the old row, so two workers could both take it. With EXISTS
    # the status is re-checked on the row being updated.
    return Q(Exists(Webhook.objects.filter(pk=OuterRef("webhook_id"), paused_at__isnull=True)))


def claimable_row(delivery_id: uuid.UUID, now: datetime) -> Any:
    """The delivery as a queryset that matches only while it is claimable:
    every write through it is conditional on the claim rule."""
    return Delivery.objects.filter(claimable(now), id=delivery_id)


def read_claimable(delivery_id: uuid.UUID, now: datetime) -> Delivery | None:
    """The delivery with its webhook and message if it is claimable now. A
    connection found dead here (workers check theirs only when idle) is
    replaced and the read run again."""

    def read() -> Delivery | None:
        found = claimable_row(delivery_id, now).select_related("webhook", "message")
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
        f"AND hook.active AND hook.rate_limit = 0 AND {CLAIMABLE_SQL} "
        f"RETURNING {', '.join(f'd.{quote(c)}' for c in deliveries.columns)}) "
        f"SELECT {deliveries.select('claimed')}, "
        f"{webhooks.select('w')}, {messages.select('m')} "
        f"FROM claimed JOIN {quote(Webhook._meta.db_table)} AS w ON w.id = claimed.webhook_id "
        f"JOIN {quote(InboundMessage._meta.db_table)} AS m ON m.id = claimed.message_id"
    )
    return sql, deliveries, webhooks, messages


def claim_due(delivery_id: uuid.UUID, now: datetime, *, lease: timedelta) -> Delivery | None:
    """The usual claim as one statement (PostgreSQL): a claimable delivery of
    an active webhook without a rate limit is leased and read with its
    webhook and message.

    None when that does not apply (not due, taken, inactive, rate-limited,
    gone, or the ORM path); the caller's general path then sorts out which.
    The ORM's read and update, compiled for every delivery, were a quarter of
    a worker's CPU.
    """
    if not _fast():
        return None
    sql, deliveries, webhooks, messages = _claim_query(connection.alias)
    params = {"id": delivery_id, "leased_until": now + lease, **claimable_params(now)}

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


def lock_webhook(webhook_id: uuid.UUID) -> None:
    """Lock the webhook's row until the caller's transaction ends (a no-op on
    SQLite, whose IMMEDIATE transactions lock the whole database)."""
    list(Webhook.objects.select_for_update().filter(id=webhook_id).values_list("id"))


# --- Recording an attempt ----------------------------------------------------------


@dataclass(frozen=True)
class Recorded:
    """What recording an attempt changed on its webhook: the failure streak
    (None for a simulation, which does not count) and whether this attempt's
    410 switched an active webhook off."""

    streak: Streak | None
    deactivated: bool = False


def record_attempt(*, log: DeliveryLog, update: dict[str, Any], deactivate: str = "") -> Recorded:
    """Write an attempt's log row, count it on its webhook, keep the webhook's
    failure streak (webhooks/health.py) and move its delivery to the new state
    (``update``: field name → value), all or nothing. With ``deactivate`` (a
    410's reason) the webhook is switched off in the same transaction. A
    simulated attempt has no delivery and an empty ``update``, and leaves the
    streak alone."""
    if _fast() and log.delivery_id is not None and not deactivate:
        return _record_in_one_statement(log=log, update=update)
    with transaction.atomic():
        return _record_with_orm(log=log, update=update, deactivate=deactivate)


def _failed(update: dict[str, Any]) -> bool:
    return update.get("status") != Delivery.Status.DELIVERED


def _record_with_orm(*, log: DeliveryLog, update: dict[str, Any], deactivate: str = "") -> Recorded:
    log.save(force_insert=True)
    hooks = Webhook.objects.filter(id=log.webhook_id)
    if log.delivery_id is None:
        hooks.update(log_count=F("log_count") + 1)
        return Recorded(streak=None)
    # Locked: two attempts of one webhook finishing at once both count.
    before, since = (
        hooks.select_for_update().values_list("consecutive_failures", "failing_since").get()
    )
    if _failed(update):
        streak = Streak(before, before + 1, since or log.attempted_at)
    else:
        streak = Streak(before, 0, since)
    hooks.update(
        log_count=F("log_count") + 1,
        consecutive_failures=streak.failures,
        failing_since=streak.failing_since if streak.failures else None,
    )
    Delivery.objects.filter(id=log.delivery_id).update(**update)
    deactivated = False
    if deactivate:
        deactivated = bool(
            hooks.filter(active=True).update(
                active=False, deactivated_reason=deactivate, updated_at=update["updated_at"]
            )
        )
    return Recorded(streak=streak, deactivated=deactivated)


@functools.cache
def _record_sql(alias: str, delivery_columns: tuple[str, ...], failed: bool) -> str:
    """The statement of _record_in_one_statement, built once per database,
    set of delivery columns and outcome (a handful in all): building it for
    every attempt cost the worker more CPU than the rest of recording it."""
    quote = connections[alias].ops.quote_name
    log_fields = DeliveryLog._meta.concrete_fields
    hook_pk = quote(Webhook._meta.pk.column)
    log_count = quote(Webhook._meta.get_field("log_count").column)
    failures = quote(Webhook._meta.get_field("consecutive_failures").column)
    since = quote(Webhook._meta.get_field("failing_since").column)
    if failed:
        streak = f"{failures} = old.failures + 1, {since} = COALESCE(hook.{since}, %s)"
    else:
        streak = f"{failures} = 0, {since} = NULL"
    assignments = ", ".join(f"{quote(column)} = %s" for column in delivery_columns)
    return (
        f"WITH new_log AS (INSERT INTO {quote(DeliveryLog._meta.db_table)} "  # noqa: S608
        f"({', '.join(quote(f.column) for f in log_fields)}) "
        f"VALUES ({', '.join(['%s'] * len(log_fields))})), "
        f"moved AS (UPDATE {quote(Delivery._meta.db_table)} SET {assignments} "
        f"WHERE {quote(Delivery._meta.pk.column)} = %s), "
        f"old AS (SELECT {hook_pk} AS id, {failures} AS failures, {since} AS since "
        f"FROM {quote(Webhook._meta.db_table)} WHERE {hook_pk} = %s FOR UPDATE) "
        f"UPDATE {quote(Webhook._meta.db_table)} AS hook "
        f"SET {log_count} = hook.{log_count} + 1, {streak} "
        f"FROM old WHERE hook.{hook_pk} = old.id "
        f"RETURNING old.failures, hook.{failures}, COALESCE(hook.{since}, old.since)"
    )


def _record_in_one_statement(*, log: DeliveryLog, update: dict[str, Any]) -> Recorded:
    """What _record_with_orm writes (the log row, the webhook's log counter and
    failure streak, the delivery's new state) as one statement, so one round
    trip and atomic without a transaction around it. The ORM would compile
    four statements for it, which cost more CPU than the delivery's HTTP
    request. Every column of the log row as the ORM would write it (defaults
    included), from _meta. The webhook's row is locked by the statement
    (``FOR UPDATE``) before its streak is read, so the count before this
    attempt that it returns is the one this attempt changed."""
    log_fields = DeliveryLog._meta.concrete_fields
    log_values = [f.get_db_prep_save(f.pre_save(log, add=True), connection) for f in log_fields]
    delivery_fields = [Delivery._meta.get_field(name) for name in update]
    delivery_values = [
        f.get_db_prep_save(value, connection)
        for f, value in zip(delivery_fields, update.values(), strict=True)
    ]
    failed = _failed(update)
    sql = _record_sql(connection.alias, tuple(f.column for f in delivery_fields), failed)
    params = [*log_values, *delivery_values, log.delivery_id, log.webhook_id]
    if failed:
        params.append(
            Webhook._meta.get_field("failing_since").get_db_prep_save(log.attempted_at, connection)
        )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    if row is None:  # the webhook is gone (deleted meanwhile): nothing to tell
        return Recorded(streak=None)
    before, after, failing_since = row
    return Recorded(streak=Streak(before, after, failing_since))


def deactivate_webhook(*, webhook_id: uuid.UUID, reason: str, now: datetime) -> bool:
    """Switch an active webhook off; False when it already was (someone else did)."""
    return bool(
        Webhook.objects.filter(id=webhook_id, active=True).update(
            active=False, deactivated_reason=reason, updated_at=now
        )
    )


# --- The sweep ---------------------------------------------------------------------


def take_for_sweep(*, now: datetime, requeue_after: timedelta, limit: int) -> list[uuid.UUID]:
    """Due deliveries whose task is lost (never queued, or queued longer than
    ``requeue_after`` ago) and stale leases, marked as queued now; a stale
    lease goes back to pending so the claim treats it as due. Rows another
    sweep holds are skipped, not waited for. A paused webhook's deliveries are
    left where they are (their tasks would only be skipped), oldest first, for
    the sweep after it is resumed."""
    lost_task = Q(status=Delivery.Status.PENDING, next_attempt_at__lte=now) & (
        Q(enqueued_at__isnull=True) | Q(enqueued_at__lte=now - requeue_after)
    )
    with transaction.atomic():
        ids = list(
            Delivery.objects.select_for_update(skip_locked=True)
            .filter(lost_task | _stale(now), _not_paused())
            .order_by("next_attempt_at")
            .values_list("id", flat=True)[:limit]
        )
        Delivery.objects.filter(id__in=ids, status=Delivery.Status.DELIVERING).update(
            status=Delivery.Status.PENDING, next_attempt_at=now, leased_until=None
        )
        Delivery.objects.filter(id__in=ids).update(enqueued_at=now)
    return ids


# --- Recovery batches --------------------------------------------------------------


@dataclass(frozen=True)
class RecoveryWindow:
    """Which deliveries a recovery queues again: the webhook's, created in
    [since, until), in one of ``statuses``, whose message still has its raw
    content (a purged one has nothing left to send)."""

    webhook_id: uuid.UUID
    since: datetime
    until: datetime
    statuses: tuple[str, ...]


def recovery_matches(window: RecoveryWindow) -> Any:
    """The window's deliveries as a queryset (the ORM's form of the rule)."""
    return Delivery.objects.filter(
        webhook_id=window.webhook_id,
        status__in=window.statuses,
        created_at__gte=window.since,
        created_at__lt=window.until,
        message__raw_purged_at__isnull=True,
    )


def _after(cursor: tuple[datetime, uuid.UUID] | None) -> Q:
    if cursor is None:
        return Q()
    created_at, delivery_id = cursor
    return Q(created_at__gt=created_at) | Q(created_at=created_at, id__gt=delivery_id)


def requeue_batch(
    *,
    window: RecoveryWindow,
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
    values: dict[str, Any],
) -> list[tuple[uuid.UUID, datetime]]:
    """Write ``values`` (field name -> value: the replay rule and the job) to
    the next ``limit`` deliveries of the window after the cursor ``after``,
    in (created_at, id) order; their ids and creation times. The caller holds
    the job's lock, so two steps of one job never take the same batch."""
    if _fast():
        return _requeue_in_one_statement(window=window, after=after, limit=limit, values=values)
    with transaction.atomic():
        rows = list(
            recovery_matches(window)
            .filter(_after(after))
            .select_for_update(of=("self",))
            .order_by("created_at", "id")
            .values_list("id", "created_at")[:limit]
        )
        Delivery.objects.filter(id__in=[row[0] for row in rows]).update(**values)
    return rows


def _requeue_in_one_statement(
    *,
    window: RecoveryWindow,
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
    values: dict[str, Any],
) -> list[tuple[uuid.UUID, datetime]]:
    """requeue_batch's read and update as one statement (PostgreSQL): the
    batch is picked (rows locked, in order) and written together, so a batch
    of 500 costs one round trip instead of an id list sent back and forth."""
    quote = connection.ops.quote_name
    delivery_table = quote(Delivery._meta.db_table)
    column = {name: quote(Delivery._meta.get_field(name).column) for name in values}
    prepared = [
        Delivery._meta.get_field(name).get_db_prep_save(value, connection)
        for name, value in values.items()
    ]
    assignments = ", ".join(f"{column[name]} = %s" for name in values)
    d = {
        name: f"d.{quote(Delivery._meta.get_field(name).column)}"
        for name in ("id", "webhook", "message", "status", "created_at")
    }
    message_pk = quote(InboundMessage._meta.pk.column)
    purged = quote(InboundMessage._meta.get_field("raw_purged_at").column)
    params: list[Any] = [window.webhook_id, list(window.statuses), window.since, window.until]
    after_sql = ""
    if after is not None:
        after_sql = f"AND ({d['created_at']}, {d['id']}) > (%s, %s) "
        params.extend(after)
    pk = quote(Delivery._meta.pk.column)
    created = quote(Delivery._meta.get_field("created_at").column)
    sql = (
        f"WITH picked AS (SELECT {d['id']} AS id FROM {delivery_table} AS d "  # noqa: S608
        f"JOIN {quote(InboundMessage._meta.db_table)} AS m ON m.{message_pk} = {d['message']} "
        f"WHERE {d['webhook']} = %s AND {d['status']} = ANY(%s) "
        f"AND {d['created_at']} >= %s AND {d['created_at']} < %s AND m.{purged} IS NULL "
        f"{after_sql}ORDER BY {d['created_at']}, {d['id']} LIMIT %s FOR UPDATE OF d) "
        f"UPDATE {delivery_table} SET {assignments} FROM picked "
        f"WHERE {delivery_table}.{pk} = picked.id "
        f"RETURNING {delivery_table}.{pk}, {delivery_table}.{created}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, limit, *prepared])
        return [(row[0], row[1]) for row in cursor.fetchall()]


def recovery_backlog(*, job: RecoveryJob, limit: int) -> int:
    """How many of the deliveries the job sent again no worker has attempted
    yet (counted up to ``limit``): the queue the next ones would join."""
    waiting = Delivery.objects.filter(
        recovery=job, held=False, status=Delivery.Status.PENDING, attempts=0
    )
    return waiting.values("id")[:limit].count()


def release_held(*, job: RecoveryJob, limit: int, values: dict[str, Any]) -> list[uuid.UUID]:
    """Write ``values`` (the replay rule, ``held`` off) to the first ``limit``
    deliveries the job holds, oldest first (delivery_held_idx); their ids. A
    few dozen per step: the read and the update need no one-statement twin."""
    with transaction.atomic():
        ids = list(
            Delivery.objects.filter(recovery=job, held=True)
            .select_for_update(of=("self",))
            .order_by("created_at", "id")
            .values_list("id", flat=True)[:limit]
        )
        Delivery.objects.filter(id__in=ids).update(**values)
    return ids


def holds_any(*, job: RecoveryJob) -> bool:
    return Delivery.objects.filter(recovery=job, held=True).exists()


def drop_held(*, job: RecoveryJob) -> int:
    """A cancelled job's queue: its deliveries are left as the job found them
    (status, attempts, schedule untouched), no longer its own; how many."""
    return Delivery.objects.filter(recovery=job, held=True).update(held=False, recovery=None)
