"""Accepting messages: the single-statement insert writes the rows the ORM writes."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from tests.delivery_fixtures import make_webhook
from webhooks import accept
from webhooks.models import Delivery, InboundMessage

pytestmark = pytest.mark.django_db

# Filled by the database or by the time of the insert, not by the input.
_THEIRS = {"id", "message_id", "received_at", "created_at", "updated_at"}


def _new_messages(first, second) -> list[accept.NewMessage]:
    return [
        accept.NewMessage(
            raw=b"Subject: one\r\n\r\nHi\r\n",
            mail_from="jürgen@sender.example",
            recipients={
                first.id: ["a@alice.example", "b@alice.example"],
                second.id: ["c@x.example"],
            },
            client_ip="2001:DB8:0:0::1",
            helo="mx.sender.example",
            message_id_header="<one@sender.example>",
            spf_result="pass",
            dkim_domains=["sender.example", "relay.example"],
            smtp_auth_user="relay-user",
        ),
        accept.NewMessage(
            raw=b"",
            mail_from="",
            recipients={second.id: ["c@x.example"]},
            client_ip=None,
            helo="",
            message_id_header="<" + "x" * 1200 + ">",
        ),
        accept.NewMessage(
            raw=bytes(range(256)),
            mail_from="bounce@sender.example",
            recipients={first.id: ["a@alice.example"]},
            client_ip="::ffff:192.0.2.7",
            helo="h",
            message_id_header="",
        ),
        accept.NewMessage(
            raw=b"x",
            mail_from="s@sender.example",
            recipients={first.id: ["a@alice.example"]},
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
        rows.append((_columns(message), [_columns(d) for d in deliveries]))
    return rows


def _columns(row) -> dict:
    values = {f.attname: getattr(row, f.attname) for f in row._meta.concrete_fields}
    if isinstance(values.get("raw"), memoryview):
        values["raw"] = bytes(values["raw"])
    return {name: value for name, value in values.items() if name not in _THEIRS}


def test_the_single_statement_writes_what_the_orm_writes(alice, alice_domain):
    assert connection.vendor == "postgresql"
    first = make_webhook(alice, alice_domain, "http://127.0.0.1:9/", address="a@alice.example")
    second = make_webhook(alice, alice_domain, "http://127.0.0.1:9/", address="c@alice.example")
    now = timezone.now()

    together = accept._insert_together(_new_messages(first, second), now)
    with_orm = accept._insert_with_orm(_new_messages(first, second), now)

    assert _rows(together) == _rows(with_orm)
    assert len({i for item in together + with_orm for i in item.delivery_ids}) == 10
    for delivery in Delivery.objects.all():
        assert delivery.status == Delivery.Status.PENDING
        assert delivery.next_attempt_at == now
        assert delivery.enqueued_at == now
        assert abs(delivery.created_at - now) < timedelta(seconds=5)
    for message in InboundMessage.objects.all():
        assert abs(message.received_at - now) < timedelta(seconds=5)


def test_messages_accept_takes_the_single_statement_on_postgresql(
    alice, alice_domain, django_assert_num_queries
):
    webhook = make_webhook(alice, alice_domain, "http://127.0.0.1:9/")

    with django_assert_num_queries(0):  # psycopg's own cursor: not through Django's
        accepted = accept.messages_accept(_new_messages(webhook, webhook)[2:], enqueue=False)

    assert InboundMessage.objects.filter(id__in=[a.message_id for a in accepted]).count() == 2
