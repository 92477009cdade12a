"""Each event of a webhook fires once, from the attempt that causes it, and reaches
both channels: a real SMTP server and the operational webhook (a local HTTP server)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from notifications.models import Notification
from tests.notifications.helpers import Target, attempt, new_delivery, ops_events
from webhooks.models import Delivery, Webhook

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("storage_half", "notify_settings", "eager_tasks"),
]


def notices(event: str | None = None) -> list[Notification]:
    found = Notification.objects.order_by("created_at")
    return list(found.filter(event=event) if event else found)


def test_it_tells_once_when_a_webhook_has_failed_three_attempts_in_a_row(
    webhook, httpserver, smtp_server, ops_webhook
):
    target = Target(httpserver, status=500)
    first = new_delivery(webhook)
    attempt(first)
    second = new_delivery(webhook, 1)
    attempt(second)
    assert notices() == []
    attempt(first)  # the third failed attempt in a row

    [notice] = notices()
    assert notice.event == "webhook_failing"
    assert notice.status == "sent"
    assert notice.channels == {"email": "sent", "webhook": "sent"}
    assert notice.details["consecutive_failures"] == 3
    assert notice.details["messages_waiting"] == 2
    webhook.refresh_from_db()
    assert webhook.consecutive_failures == 3
    assert notice.details["failing_since"] == webhook.failing_since.isoformat()

    [mail] = smtp_server.messages
    assert mail["To"] == "alice@example.com"
    assert mail["Subject"] == (
        "[Conduit] Webhook inbox@alice.example is failing: its last 3 delivery attempts failed"
    )
    body = smtp_server.bodies()[0]
    assert f"Failing since: {webhook.failing_since.isoformat()}" in body
    assert "Last error:    HTTP 500" in body
    assert "Messages waiting for delivery: 2" in body
    assert (
        f"GET http://127.0.0.1:8000/api/v1/webhooks/{webhook.id}/logs   (listDeliveryLogs)" in body
    )
    [event] = ops_events(httpserver, ops_webhook.webhook_secret)
    assert event["type"] == "webhook_failing"
    assert event["data"]["id"] == str(notice.id)
    assert event["data"]["webhook_id"] == str(webhook.id)
    assert event["data"]["messages_waiting"] == 2

    # The streak's later failures are the same news.
    attempt(second)
    attempt(first)
    assert len(notices()) == 1
    assert len(smtp_server.messages) == 1
    target.status = 200


def test_it_tells_when_a_failing_webhook_recovers_and_what_failed_meanwhile(
    webhook, httpserver, smtp_server, ops_webhook
):
    target = Target(httpserver, status=503)
    given_up = new_delivery(webhook)
    Delivery.objects.filter(id=given_up).update(attempts=9)  # its next attempt is its last
    waiting = new_delivery(webhook, 1)
    attempt(given_up)
    attempt(waiting)
    attempt(waiting)
    assert [n.event for n in notices()] == ["delivery_gave_up", "webhook_failing"]

    target.status = 200
    attempt(waiting)

    recovered = notices("webhook_recovered")
    assert len(recovered) == 1
    assert recovered[0].details["failed_for_good"] == 1
    assert recovered[0].details["consecutive_failures"] == 3
    webhook.refresh_from_db()
    assert (webhook.consecutive_failures, webhook.failing_since) == (0, None)
    mail = smtp_server.messages[-1]
    assert (
        mail["Subject"]
        == "[Conduit] Webhook inbox@alice.example recovered: deliveries succeed again"
    )
    body = smtp_server.bodies()[-1]
    assert "Deliveries that failed for good while it was failing: 1" in body
    assert f"POST http://127.0.0.1:8000/api/v1/webhooks/{webhook.id}/recoveries" in body
    assert "(createRecovery)" in body
    since = recovered[0].details["failing_since"]
    assert f'{{"since": "{since}", "statuses": ["failed"]}}' in body
    types = [e["type"] for e in ops_events(httpserver, ops_webhook.webhook_secret)]
    assert types == ["delivery_gave_up", "webhook_failing", "webhook_recovered"]

    # Healthy again: further successes say nothing.
    attempt(new_delivery(webhook, 2))
    assert len(notices()) == 3


def test_a_delivery_that_gives_up_is_told_once_per_interval(
    webhook, httpserver, smtp_server, ops_webhook
):
    Target(httpserver, status=400)  # any 4xx but 410 is final
    attempt(new_delivery(webhook))
    attempt(new_delivery(webhook, 1))

    [notice] = notices()
    assert notice.event == "delivery_gave_up"
    assert len(smtp_server.messages) == 1
    body = smtp_server.bodies()[0]
    assert "will not be retried" in body
    assert f"/api/v1/messages/{notice.details['message_id']}/redeliver (redeliverMessage)" in body
    assert len(ops_events(httpserver, ops_webhook.webhook_secret)) == 1


def test_a_410_deactivates_the_webhook_and_says_how_to_reactivate_it(
    webhook, httpserver, smtp_server, ops_webhook
):
    Target(httpserver, status=410)
    attempt(new_delivery(webhook))

    webhook.refresh_from_db()
    assert webhook.active is False
    [deactivated] = notices("webhook_deactivated")
    assert deactivated.details["reason"].startswith("The target answered 410 Gone")
    assert len(notices("delivery_gave_up")) == 1
    body = next(b for b in smtp_server.bodies() if "was deactivated" in b)
    assert "mail to inbox@alice.example is refused (SMTP 550)" in body
    assert f"PUT http://127.0.0.1:8000/api/v1/webhooks/{webhook.id}   (updateWebhook)" in body
    assert '{"active": true}' in body
    types = sorted(e["type"] for e in ops_events(httpserver, ops_webhook.webhook_secret))
    assert types == ["delivery_gave_up", "webhook_deactivated"]


def test_a_webhook_failing_every_attempt_for_too_long_is_deactivated(
    webhook, httpserver, smtp_server, ops_webhook, settings
):
    settings.CONDUIT_DEACTIVATE_FAILING_AFTER_HOURS = 48
    Target(httpserver, status=500)
    since = timezone.now() - timedelta(hours=49)
    Webhook.objects.filter(id=webhook.id).update(consecutive_failures=40, failing_since=since)

    attempt(new_delivery(webhook))

    webhook.refresh_from_db()
    assert webhook.active is False
    assert webhook.deactivated_reason.startswith("Every delivery attempt failed for more than 48")
    [notice] = notices("webhook_deactivated")
    assert notice.details["failing_since"] == since.isoformat()
    assert notice.channels == {"email": "sent", "webhook": "sent"}
    # Already off: the next failure deactivates nothing and tells nothing.
    attempt(new_delivery(webhook, 1))
    assert len(notices("webhook_deactivated")) == 1


def test_a_successful_attempt_of_a_healthy_webhook_costs_no_query_for_the_accounting(
    webhook, httpserver, storage_half
):
    Target(httpserver, status=200)
    due = new_delivery(webhook)
    Delivery.objects.filter(id=due).update(next_attempt_at=timezone.now())
    with CaptureQueriesContext(connection) as queries:
        assert attempt_without_setup(due) == "attempted"
    if storage_half == "postgresql":
        # The claim and the statement that records the attempt, as before.
        assert len(queries) == 2, [q["sql"][:80] for q in queries.captured_queries]
    else:
        # The ORM half reads the streak under the webhook's lock, in the record's transaction.
        assert sum("FOR UPDATE" in q["sql"] for q in queries.captured_queries) == 1
    assert Delivery.objects.get(id=due).status == "delivered"
    assert notices() == []


def attempt_without_setup(delivery_id):
    from webhooks import delivery

    return delivery.deliver(delivery_id=delivery_id)


def test_a_reactivated_webhook_starts_a_new_failure_streak(
    webhook, httpserver, smtp_server, alice_api, settings
):
    settings.CONDUIT_DEACTIVATE_FAILING_AFTER_HOURS = 48
    Target(httpserver, status=500)
    since = timezone.now() - timedelta(hours=49)
    Webhook.objects.filter(id=webhook.id).update(consecutive_failures=40, failing_since=since)
    attempt(new_delivery(webhook))
    assert Webhook.objects.get(id=webhook.id).active is False

    r = alice_api.put(f"/api/v1/webhooks/{webhook.id}", {"active": True}, format="json")
    assert r.status_code == 200, r.content
    # The held delivery went out at once (tasks run eagerly here) and failed:
    # the first failure of a new streak, not a reason to switch it off again.
    assert r.json()["active"] is True
    assert r.json()["consecutive_failures"] == 1
    assert r.json()["failing_since"] > since.isoformat()
    attempt(new_delivery(webhook, 1))
    webhook.refresh_from_db()
    assert webhook.active is True
    assert webhook.consecutive_failures == 2


def test_an_update_never_writes_back_a_stale_copy_of_the_engines_counts(webhook):
    from webhooks import services

    stale = Webhook.objects.get(id=webhook.id)
    since = timezone.now() - timedelta(minutes=5)
    # A worker records attempts after the request read the webhook.
    Webhook.objects.filter(id=webhook.id).update(
        consecutive_failures=4, failing_since=since, log_count=7
    )
    services.webhook_update(webhook=stale, data={"name": "Renamed"}, ip=None)
    stored = Webhook.objects.get(id=webhook.id)
    assert stored.name == "Renamed"
    assert (stored.consecutive_failures, stored.failing_since, stored.log_count) == (4, since, 7)
