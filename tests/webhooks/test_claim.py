"""The claim rule, written once as a Q and once as SQL: both select the same rows."""

from __future__ import annotations

import itertools
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from tests.delivery_fixtures import accept, make_webhook
from webhooks import storage
from webhooks.models import Delivery

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
    webhook = make_webhook(alice, alice_domain, "http://127.0.0.1:9/")
    cases = {}
    for status, next_at, leased in itertools.product(STATUSES, times, times):
        [delivery_id] = accept(webhook, raw=f"{status} {next_at} {leased}".encode()).delivery_ids
        Delivery.objects.filter(id=delivery_id).update(
            status=status, next_attempt_at=times[next_at], leased_until=times[leased]
        )
        cases[delivery_id] = (status, next_at, leased)

    by_q = set(Delivery.objects.filter(storage.claimable(now)).values_list("id", flat=True))
    table = connection.ops.quote_name(Delivery._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT d.id FROM {table} AS d WHERE {storage.CLAIMABLE_SQL}",
            storage.claimable_params(now),
        )
        by_sql = {row[0] for row in cursor.fetchall()}

    assert len(cases) == 4 * 4 * 4
    assert by_sql == by_q
    # And the rule is the one the state machine draws.
    expected = {
        i
        for i, (status, next_at, leased) in cases.items()
        if (status == "pending" and next_at in ("null", "past", "now"))
        or (status == "delivering" and leased in ("past", "now"))
    }
    assert by_q == expected
