"""Accepting mail: what the SMTP ingress hands to the webhooks app, and all it uses of it.

The ingress imports nothing else from ``webhooks``: it looks recipients up
(webhook_for_recipient, the Webhook model), stores what it accepted
(messages_accept) and puts the new deliveries on the queue (publish).
"""

from __future__ import annotations

import functools
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from typing import Any

from django.db import connection, connections, transaction
from django.utils import timezone

from webhooks import delivery
from webhooks.delivery import TASK_BATCH
from webhooks.delivery import enqueue_many as publish
from webhooks.models import Delivery, InboundMessage, Webhook
from webhooks.selectors import webhook_for_recipient

__all__ = [
    "BINARY_RAW_BYTES",
    "TASK_BATCH",
    "AcceptedMessage",
    "NewMessage",
    "Webhook",
    "message_accept",
    "messages_accept",
    "publish",
    "webhook_for_recipient",
]


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
        "spf_result",
        "dkim_domains",
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
    PostgreSQL plans it on every execution unless DATABASE_URL turns prepared
    statements on (Django leaves them off for connection poolers; README)."""
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
    return f"WITH new_messages AS (INSERT INTO {messages}) INSERT INTO {deliveries}"


def _constants(prototype: Any) -> dict[str, Any]:
    """The columns not in _ROW_COLUMNS, as the ORM would write them for ``prototype``
    (pre_save fills auto_now_add; get_db_prep_save adapts the value)."""
    model = type(prototype)
    name = model.__name__.lower()
    return {
        f"{name}_{f.column}": f.get_db_prep_save(f.pre_save(prototype, add=True), connection)
        for f in model._meta.concrete_fields
        if f.column not in _ROW_COLUMNS[model]
    }


_client_ip_field = InboundMessage._meta.get_field("client_ip")


def _insert_together(new_messages: Sequence[NewMessage], now: Any) -> list[AcceptedMessage]:
    """Insert messages and their deliveries in one statement (PostgreSQL),
    straight from the NewMessages: building model instances and adapting every
    value through its field cost more CPU than the database takes to run it.

    The arrays go as binary parameters bound server-side (psycopg's Cursor, not
    Django's client-side one): quoting each message's bytes into the query text
    took a sixth of the ingress's CPU. tests/webhooks/test_accept.py checks that
    the rows are the ones the ORM writes."""
    from psycopg import Cursor

    message_ids = [uuid.uuid4() for _ in new_messages]
    accepted = []
    params: dict[str, Any] = {
        **_constants(InboundMessage()),
        **_constants(Delivery(next_attempt_at=now, enqueued_at=now)),
        "inboundmessage_id": message_ids,
        "inboundmessage_mail_from": [new.mail_from for new in new_messages],
        "inboundmessage_rcpt_to": [
            json.dumps([r for rcpts in new.recipients.values() for r in rcpts])
            for new in new_messages
        ],
        "inboundmessage_client_ip": [
            _client_ip_field.get_prep_value(new.client_ip) or None for new in new_messages
        ],
        "inboundmessage_helo": [new.helo for new in new_messages],
        "inboundmessage_raw": [new.raw for new in new_messages],
        "inboundmessage_size": [len(new.raw) for new in new_messages],
        "inboundmessage_message_id_header": [new.message_id_header[:998] for new in new_messages],
        "inboundmessage_spf_result": [new.spf_result for new in new_messages],
        "inboundmessage_dkim_domains": [json.dumps(list(new.dkim_domains)) for new in new_messages],
        "inboundmessage_smtp_auth_user": [new.smtp_auth_user for new in new_messages],
        "delivery_id": [],
        "delivery_message_id": [],
        "delivery_webhook_id": [],
        "delivery_rcpt_to": [],
    }
    for message_id, new in zip(message_ids, new_messages, strict=True):
        ids = []
        for webhook_id, rcpts in new.recipients.items():
            ids.append(uuid.uuid4())
            params["delivery_message_id"].append(message_id)
            params["delivery_webhook_id"].append(webhook_id)
            params["delivery_rcpt_to"].append(json.dumps(rcpts))
        params["delivery_id"].extend(ids)
        accepted.append(AcceptedMessage(message_id=message_id, delivery_ids=ids))
    connection.ensure_connection()
    with connection.wrap_database_errors, Cursor(connection.connection) as cursor:
        cursor.execute(_insert_sql(connection.alias), params)
    return accepted


@dataclass(frozen=True)
class NewMessage:
    """A message the ingress accepts, with its recipients grouped by webhook id."""

    raw: bytes
    mail_from: str
    recipients: dict[uuid.UUID, list[str]]
    client_ip: str | None
    helo: str
    message_id_header: str
    spf_result: str = ""
    dkim_domains: list[str] = dataclass_field(default_factory=list)
    smtp_auth_user: str = ""


@dataclass(frozen=True)
class AcceptedMessage:
    message_id: uuid.UUID
    delivery_ids: list[uuid.UUID]


def message_accept(**fields: Any) -> AcceptedMessage:
    """Store one message (see messages_accept); keyword arguments as NewMessage."""
    return messages_accept([NewMessage(**fields)])[0]


def messages_accept(
    new_messages: Sequence[NewMessage], *, enqueue: bool = True
) -> list[AcceptedMessage]:
    """Store messages and one pending delivery per webhook each, then enqueue them.

    One transaction: either every message and all its deliveries exist (and
    the senders get 250) or nothing does (and they retry). Several messages
    share it when the ingress groups concurrent sessions (a group commit):
    two inserts and one commit for all of them. Tasks go on the queue only
    after the commit, so a worker never looks for an unwritten row; with
    ``enqueue=False`` the caller does that (delivery.enqueue_many).
    """
    if not new_messages:
        return []
    now = timezone.now()
    if connection.vendor == "postgresql" and all(
        len(new.raw) <= BINARY_RAW_BYTES for new in new_messages
    ):
        # One statement: atomic by itself, one round trip, no transaction to open.
        accepted = _insert_together(new_messages, now)
    else:
        accepted = _insert_with_orm(new_messages, now)
    if enqueue:
        # After the commit: now, or when the caller's transaction commits.
        ids = [i for item in accepted for i in item.delivery_ids]
        transaction.on_commit(lambda: delivery.enqueue_many(ids), robust=True)
    return accepted


def _insert_with_orm(new_messages: Sequence[NewMessage], now: Any) -> list[AcceptedMessage]:
    """The general way (SQLite, or a message too big for the single statement)."""
    postgres = connection.vendor == "postgresql"
    messages = [
        InboundMessage(
            mail_from=new.mail_from,
            rcpt_to=[rcpt for rcpts in new.recipients.values() for rcpt in rcpts],
            client_ip=new.client_ip,
            helo=new.helo,
            raw=None if postgres and len(new.raw) > BINARY_RAW_BYTES else new.raw,
            size=len(new.raw),
            message_id_header=new.message_id_header[:998],
            spf_result=new.spf_result,
            dkim_domains=list(new.dkim_domains),
            smtp_auth_user=new.smtp_auth_user,
        )
        for new in new_messages
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
            if message.raw is None:
                _store_raw_binary(message=message, raw=new.raw)
        Delivery.objects.bulk_create([d for each in deliveries for d in each])
    return [
        AcceptedMessage(message_id=message.id, delivery_ids=[d.id for d in each])
        for message, each in zip(messages, deliveries, strict=True)
    ]
