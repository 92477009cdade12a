"""Accepting messages: the single-statement insert writes the rows the ORM writes."""

from __future__ import annotations

import logging
import uuid
from dataclasses import replace
from datetime import timedelta

import pytest
from django.utils import timezone

from accounts.models import Account
from tests.delivery_fixtures import make_webhook
from webhooks import accept, storage
from webhooks.models import AccountMessage, Delivery, InboundMessage

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("storage_half")]

# Filled by the database or by the time of the insert, not by the input.
_THEIRS = {"id", "message_id", "received_at", "created_at", "updated_at"}


def _new_messages(first, second) -> list[storage.NewMessage]:
    accounts = {first.id: first.account_id, second.id: second.account_id}
    return [
        accept.NewMessage(
            raw=b"Subject: one\r\n\r\nHi\r\n",
            mail_from="jürgen@sender.example",
            recipients={
                first.id: ["a@alice.example", "b@alice.example"],
                second.id: ["c@x.example"],
            },
            accounts=accounts,
            client_ip="2001:DB8:0:0::1",
            helo="mx.sender.example",
            message_id_header="<one@sender.example>",
            subject="Grüße from the sender",
            spf_result="pass",
            dkim_domains=["sender.example", "relay.example"],
            smtp_auth_user="relay-user",
        ),
        accept.NewMessage(
            raw=b"",
            mail_from="",
            recipients={second.id: ["c@x.example"]},
            accounts=accounts,
            client_ip=None,
            helo="",
            message_id_header="<" + "x" * 1200 + ">",
        ),
        accept.NewMessage(
            raw=bytes(range(256)),
            mail_from="bounce@sender.example",
            recipients={first.id: ["a@alice.example"]},
            accounts=accounts,
            client_ip="::ffff:192.0.2.7",
            helo="h",
            message_id_header="",
            subject="café " + "s" * 1200,  # too long for the column
        ),
        accept.NewMessage(
            raw=b"x",
            mail_from="s@sender.example",
            recipients={first.id: ["a@alice.example"]},
            accounts=accounts,
            client_ip="",
            helo="h",
            message_id_header="",
        ),
    ]


def _rows(accepted: list[accept.AcceptedMessage]) -> list[tuple[dict, list[dict]]]:
    rows = []
    for item in accepted:
        message = InboundMessage.objects.get(id=item.message_id)
        deliveries = Delivery.objects.filter(id__in=item.delivery_ids).order_by("webhook_id")
        assert {d.message_id for d in deliveries} == {item.message_id}
        assert sorted(d.id for d in deliveries) == sorted(item.delivery_ids)
        views = AccountMessage.objects.filter(message=message).order_by("account_id")
        assert all(view.received_at == message.received_at for view in views)
        rows.append(
            (
                _columns(message),
                [_columns(d) for d in deliveries],
                [view.account_id for view in views],
            )
        )
    return rows


def _columns(row) -> dict:
    values = {f.attname: getattr(row, f.attname) for f in row._meta.concrete_fields}
    if isinstance(values.get("raw"), memoryview):
        values["raw"] = bytes(values["raw"])
    return {name: value for name, value in values.items() if name not in _THEIRS}


def _ids(messages: list) -> list[uuid.UUID]:
    return [uuid.uuid4() for _ in messages]


def _message_counts() -> dict:
    return dict(Account.objects.values_list("email", "message_count"))


# A message whose raw content is in an object store has no raw in its row.
@pytest.mark.parametrize("raw_store", ["", "s3://bucket/prefix"])
def test_the_single_statement_writes_what_the_orm_writes(alice, bob, alice_domain, raw_store):
    assert storage.on_postgresql()
    first = make_webhook(alice, alice_domain, "http://127.0.0.1:9/", address="a@alice.example")
    # Another account's webhook: that account sees the first two messages too.
    second = make_webhook(bob, alice_domain, "http://127.0.0.1:9/", address="c@alice.example")
    third = make_webhook(alice, alice_domain, "http://127.0.0.1:9/", address="d@alice.example")
    now = timezone.now()
    group = _new_messages(first, second)

    together = storage._insert_together(group, now, message_ids=_ids(group), raw_store=raw_store)
    counts_together = _message_counts()
    with_orm = storage._insert_with_orm(group, now, message_ids=_ids(group), raw_store=raw_store)

    assert _rows(together) == _rows(with_orm)
    for message in InboundMessage.objects.all():
        assert message.raw_store == raw_store
        assert (message.raw is None) == bool(raw_store)
    assert counts_together == {alice.email: 3, bob.email: 2}
    assert _message_counts() == {alice.email: 6, bob.email: 4}
    subjects = [InboundMessage.objects.get(id=a.message_id).subject for a in together]
    assert subjects[0] == "Grüße from the sender"
    assert subjects[2] == "café " + "s" * 993
    assert len(subjects[2]) == 998
    # One message to two webhooks of one account is one message of that account.
    for insert in (storage._insert_together, storage._insert_with_orm):
        one = [_new_messages(first, third)[0]]
        [twice] = insert(one, now, message_ids=_ids(one), raw_store=raw_store)
        assert AccountMessage.objects.filter(message_id=twice.message_id).count() == 1
    assert _message_counts() == {alice.email: 8, bob.email: 4}
    assert len({i for item in together + with_orm for i in item.delivery_ids}) == 10
    for delivery in Delivery.objects.all():
        assert delivery.status == Delivery.Status.PENDING
        assert delivery.next_attempt_at == now
        assert delivery.enqueued_at == now
        assert abs(delivery.created_at - now) < timedelta(seconds=5)
    for message in InboundMessage.objects.all():
        assert abs(message.received_at - now) < timedelta(seconds=5)


@pytest.mark.django_db(transaction=True)
def test_the_single_statement_keeps_one_cursor_per_connection(alice, alice_domain, storage_half):
    # Its cursor remembers the parameters' adapters; a new connection gets a new one.
    if storage_half != "postgresql":
        pytest.skip("the ORM half uses Django's cursors")
    from django.db import connection

    webhook = make_webhook(alice, alice_domain, "http://127.0.0.1:9/")
    accept.messages_accept(_new_messages(webhook, webhook)[2:3], enqueue=False)
    first = storage._binding_cursor()
    accept.messages_accept(_new_messages(webhook, webhook)[3:], enqueue=False)
    assert storage._binding_cursor() is first
    assert first.connection is connection.connection

    connection.close()
    accept.messages_accept(_new_messages(webhook, webhook)[2:3], enqueue=False)
    assert storage._binding_cursor() is not first
    assert storage._binding_cursor().connection is connection.connection
    assert InboundMessage.objects.count() == 3


def test_each_statement_stamps_its_own_time(alice, alice_domain, storage_half):
    # The constant columns are worked out once; the time-stamped ones each time.
    webhook = make_webhook(alice, alice_domain, "http://127.0.0.1:9/")
    stamped = {}
    for now in (timezone.now() - timedelta(hours=1), timezone.now()):
        group = _new_messages(webhook, webhook)[3:]
        [accepted] = storage.insert_messages(group, now, message_ids=_ids(group))
        delivery = Delivery.objects.get(id=accepted.delivery_ids[0])
        stamped[now] = (delivery.next_attempt_at, delivery.enqueued_at)
        # Stamped when written, as the ORM's pre_save stamps them.
        assert abs(delivery.created_at - timezone.now()) < timedelta(seconds=5)
        assert abs(delivery.message.received_at - timezone.now()) < timedelta(seconds=5)
    assert stamped == {now: (now, now) for now in stamped}


def test_messages_accept_takes_the_half_the_storage_chose(
    alice, alice_domain, storage_half, django_assert_num_queries
):
    webhook = make_webhook(alice, alice_domain, "http://127.0.0.1:9/")
    # The single statement goes through psycopg's own cursor, not Django's;
    # the ORM half's do: two bulk inserts, the accounts' views of the
    # messages and one count per account.
    queries = 0 if storage_half == "postgresql" else 4

    with django_assert_num_queries(queries):
        accepted = accept.messages_accept(_new_messages(webhook, webhook)[2:], enqueue=False)

    assert InboundMessage.objects.filter(id__in=[a.message_id for a in accepted]).count() == 2
    assert Delivery.objects.filter(message_id__in=[a.message_id for a in accepted]).count() == 2


def test_both_halves_record_an_attempt_alike(alice, alice_domain, monkeypatch):
    from webhooks import delivery
    from webhooks.models import DeliveryLog, Webhook
    from webhooks.outbound import AttemptResult

    webhook = make_webhook(alice, alice_domain, "http://127.0.0.1:9/")
    now = timezone.now()
    sent = delivery.SendResult(
        attempt=AttemptResult(
            http_status=500,
            duration_ms=7,
            error="",
            error_kind=None,
            response_body="oops",
            retry_after=None,
        ),
        attempted_at=now,
    )
    written = {}
    for fast in (True, False):
        monkeypatch.setattr(storage, "FAST_PATHS", fast)
        [delivery_id] = accept.messages_accept(_new_messages(webhook, webhook)[2:3], enqueue=False)[
            0
        ].delivery_ids
        row = Delivery.objects.select_related("message").get(id=delivery_id)
        log = delivery.attempt_log(
            webhook=webhook,
            sent=sent,
            sender="s@x.example",
            smtp_message_id="<m@x>",
            delivery=row,
            attempt=1,
        )
        state = delivery.next_state(attempt=sent.attempt, attempts_made=1, now=now)
        storage.record_attempt(log=log, update=state.update)
        written[fast] = (
            _columns(DeliveryLog.objects.get(delivery_id=delivery_id)),
            _columns(Delivery.objects.get(id=delivery_id)),
        )

    ignore = {"id", "delivery_id", "next_attempt_at", "enqueued_at"}
    fast_log, fast_delivery = written[True]
    orm_log, orm_delivery = written[False]
    assert {k: v for k, v in fast_log.items() if k not in ignore} == {
        k: v for k, v in orm_log.items() if k not in ignore
    }
    assert {k: v for k, v in fast_delivery.items() if k not in ignore} == {
        k: v for k, v in orm_delivery.items() if k not in ignore
    }
    assert fast_delivery["status"] == Delivery.Status.PENDING
    assert Webhook.objects.get(id=webhook.id).log_count == 2


def test_a_raw_message_is_stored_compressed_with_lz4_and_read_back_whole(
    alice, alice_domain, storage_half
):
    # Migration 0014: lz4 is several times cheaper than PostgreSQL's default pglz.
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT 'lz4' = ANY(enumvals) FROM pg_settings WHERE name = 'default_toast_compression'"
        )
        if not cursor.fetchone()[0]:
            pytest.skip("this PostgreSQL server is built without lz4")
    webhook = make_webhook(alice, alice_domain, "http://127.0.0.1:9/")
    raw = b"Subject: long\r\n\r\n" + b"The quick brown fox jumps over the lazy dog.\r\n" * 300
    [new] = _new_messages(webhook, webhook)[3:]
    [accepted] = accept.messages_accept([replace(new, raw=raw)], enqueue=False)

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_column_compression(raw), pg_column_size(raw) "
            "FROM webhooks_inboundmessage WHERE id = %s",
            [accepted.message_id],
        )
        compression, stored_size = cursor.fetchone()
    assert compression == "lz4"
    assert stored_size < len(raw) / 4
    assert bytes(InboundMessage.objects.get(id=accepted.message_id).raw) == raw


def _prepared_inserts() -> list[str]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT statement FROM pg_prepared_statements "
            "WHERE statement LIKE 'WITH new_messages AS (INSERT INTO%%'"
        )
        return [row[0] for row in cursor.fetchall()]


@pytest.mark.django_db(transaction=True)
def test_the_single_statement_is_prepared_after_a_few_runs(alice, alice_domain, storage_half):
    # CONDUIT_PREPARED_STATEMENTS is on by default: PostgreSQL plans the
    # ingress's INSERT once per connection, not on every group.
    if storage_half != "postgresql":
        pytest.skip("the ORM half uses Django's cursors, which bind on the client")
    webhook = make_webhook(alice, alice_domain, "http://127.0.0.1:9/")
    for _ in range(4):
        accept.messages_accept(_new_messages(webhook, webhook)[3:], enqueue=False)
    assert _prepared_inserts() == []
    for _ in range(3):
        accept.messages_accept(_new_messages(webhook, webhook)[3:], enqueue=False)
    assert len(_prepared_inserts()) == 1
    assert InboundMessage.objects.count() == 7


@pytest.mark.django_db(transaction=True)
def test_a_lost_prepared_statement_turns_preparing_off_and_loses_nothing(
    alice, alice_domain, storage_half, caplog
):
    # What a pooler in transaction mode does: the next server connection has
    # never seen the statement psycopg prepared. (Through libpq itself, as
    # psycopg forgets its statements when it sees a DEALLOCATE go by.)
    if storage_half != "postgresql":
        pytest.skip("the ORM half uses Django's cursors, which bind on the client")
    from django.db import connection

    webhook = make_webhook(alice, alice_domain, "http://127.0.0.1:9/")
    for _ in range(6):
        accept.messages_accept(_new_messages(webhook, webhook)[3:], enqueue=False)
    assert len(_prepared_inserts()) == 1
    connection.connection.pgconn.exec_(b"DEALLOCATE ALL")

    # Whatever level and handlers earlier tests' logging config left behind.
    caplog.set_level(logging.WARNING, logger=storage.logger.name)
    storage.logger.addHandler(caplog.handler)
    try:
        accepted = accept.messages_accept(_new_messages(webhook, webhook)[3:], enqueue=False)
    finally:
        storage.logger.removeHandler(caplog.handler)

    assert InboundMessage.objects.filter(id=accepted[0].message_id).exists()
    assert connection.connection.prepare_threshold is None
    assert "CONDUIT_PREPARED_STATEMENTS=false" in caplog.text
    for _ in range(6):
        accept.messages_accept(_new_messages(webhook, webhook)[3:], enqueue=False)
    assert _prepared_inserts() == []
    assert InboundMessage.objects.count() == 13
