"""Work that must wait for a commit waits for one, and never pretends to.

``transaction.on_commit`` outside a transaction runs its callback at once, so
a call there only looks like a deferral. The pipeline defers through
``storage.after_commit``: on_commit inside a transaction, a plain call outside.
These tests run with real commits (transaction=True), where "outside a
transaction" really is outside one.
"""

from __future__ import annotations

import pytest
from django.db import connection, transaction

from tests.delivery_fixtures import make_webhook
from webhooks import accept, delivery, storage
from webhooks.models import Delivery

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("storage_half")]


@pytest.fixture
def on_commit_calls(monkeypatch) -> list[bool]:
    """Whether each transaction.on_commit call came inside a transaction."""
    calls: list[bool] = []
    real = transaction.on_commit

    def recording(func, using=None, robust=False):
        calls.append(connection.in_atomic_block)
        return real(func, using=using, robust=robust)

    monkeypatch.setattr(transaction, "on_commit", recording)
    return calls


@pytest.fixture
def published(monkeypatch) -> list[list]:
    sent: list[list] = []
    monkeypatch.setattr(delivery, "enqueue_many", lambda ids: sent.append(list(ids)) or len(ids))
    monkeypatch.setattr(
        delivery, "enqueue", lambda *, delivery_id, countdown=None: sent.append([delivery_id])
    )
    return sent


def _new(webhook) -> storage.NewMessage:
    return storage.NewMessage(
        raw=b"Subject: hi\r\n\r\nhello\r\n",
        mail_from="sender@example.net",
        recipients={webhook.id: [webhook.address]},
        accounts={webhook.id: webhook.account_id},
        client_ip="192.0.2.1",
        helo="mx.example.net",
        message_id_header="<a@example.net>",
    )


def test_it_publishes_at_once_what_is_stored_outside_a_transaction(
    alice, alice_domain, on_commit_calls, published
):
    webhook = make_webhook(alice, alice_domain, "http://127.0.0.1:9/")

    [accepted] = accept.messages_accept([_new(webhook)])

    assert published == [accepted.delivery_ids]
    assert False not in on_commit_calls


def test_it_publishes_what_is_stored_inside_a_transaction_only_on_commit(
    alice, alice_domain, on_commit_calls, published
):
    webhook = make_webhook(alice, alice_domain, "http://127.0.0.1:9/")

    with transaction.atomic():
        [accepted] = accept.messages_accept([_new(webhook)])
        assert published == []

    assert published == [accepted.delivery_ids]
    assert on_commit_calls == [True]


def test_a_redelivery_is_queued_once_the_row_is_due(
    alice, alice_domain, on_commit_calls, published
):
    webhook = make_webhook(alice, alice_domain, "http://127.0.0.1:9/")
    [accepted] = accept.messages_accept([_new(webhook)], enqueue=False)
    row = Delivery.objects.get(id=accepted.delivery_ids[0])
    row.status = Delivery.Status.FAILED
    row.save(update_fields=["status"])

    delivery.redeliver(delivery=row)

    assert published == [[row.id]]
    assert Delivery.objects.get(id=row.id).status == Delivery.Status.PENDING
    assert False not in on_commit_calls
