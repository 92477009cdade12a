"""The claim rule, written once as a Q and once as SQL: both select the same rows."""

from __future__ import annotations

import itertools
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from tests.delivery_fixtures import accept, make_webhook
from webhooks import storage
from webhooks.models import Delivery, Webhook

pytestmark = pytest.mark.django_db

STATUSES = [s.value for s in Delivery.Status]


def test_the_sql_and_the_q_select_the_same_rows(alice, alice_domain):
    now = timezone.now()
    times = {
        "null": None,
        "past": now - timedelta(seconds=1),
        "now": now,
        "future": now + timedelta(minutes=5),
    }
    webhooks = {
        paused: make_webhook(
            alice,
            alice_domain,
            "http://127.0.0.1:9/",
            address=f"{'paused' if paused else 'running'}@{alice_domain.name}",
            paused_at=now - timedelta(minutes=1) if paused else None,
        )
        for paused in (False, True)
    }
    cases = {}
    for paused, status, next_at, leased in itertools.product(webhooks, STATUSES, times, times):
        raw = f"{paused} {status} {next_at} {leased}".encode()
        [delivery_id] = accept(webhooks[paused], raw=raw).delivery_ids
        Delivery.objects.filter(id=delivery_id).update(
            status=status, next_attempt_at=times[next_at], leased_until=times[leased]
        )
        cases[delivery_id] = (paused, status, next_at, leased)

    by_q = set(Delivery.objects.filter(storage.claimable(now)).values_list("id", flat=True))
    quote = connection.ops.quote_name
    deliveries, hooks = (quote(m._meta.db_table) for m in (Delivery, Webhook))
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT d.id FROM {deliveries} AS d JOIN {hooks} AS hook "
            f"ON hook.id = d.webhook_id WHERE {storage.CLAIMABLE_SQL}",
            storage.claimable_params(now),
        )
        by_sql = {row[0] for row in cursor.fetchall()}

    assert len(cases) == 2 * 4 * 4 * 4
    assert by_sql == by_q
    # And the rule is the one the state machine draws: a paused webhook's
    # deliveries are never claimable, whatever their state.
    expected = {
        i
        for i, (paused, status, next_at, leased) in cases.items()
        if not paused
        and (
            (status == "pending" and next_at in ("null", "past", "now"))
            or (status == "delivering" and leased in ("past", "now"))
        )
    }
    assert by_q == expected
