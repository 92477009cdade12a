"""Never a flood: one notice per webhook and event per interval, a recovery
cancels the pending failure notices, a burst becomes one digest mail."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from notifications import services, tasks
from notifications.models import Notification, NotificationSettings
from tests.delivery_fixtures import make_webhook
from tests.notifications.helpers import ops_events
from webhooks.health import Event

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("notify_settings")]

FAILING = {"consecutive_failures": 3, "failing_since": "2026-04-02T12:00:00+00:00"}


def record(webhook, event=Event.WEBHOOK_FAILING, **facts):
    return services.webhook_event_record(
        event=event, webhook_id=webhook.id, facts={**FAILING, **facts}
    )


def test_a_recovery_cancels_the_failure_notices_not_yet_sent(
    webhook, smtp_server, ops_webhook, httpserver
):
    failing = record(webhook)
    gave_up = record(webhook, Event.DELIVERY_GAVE_UP)
    recovered = record(webhook, Event.WEBHOOK_RECOVERED)

    assert services.notifications_send(account_id=webhook.account_id) == 1

    statuses = {n.event: n.status for n in Notification.objects.all()}
    assert statuses == {
        "webhook_failing": "cancelled",
        "delivery_gave_up": "cancelled",
        "webhook_recovered": "sent",
    }
    assert {failing.id, gave_up.id, recovered.id} == set(
        Notification.objects.values_list("id", flat=True)
    )
    [mail] = smtp_server.messages
    assert "recovered" in mail["Subject"]
    assert [e["type"] for e in ops_events(httpserver, ops_webhook.webhook_secret)] == [
        "webhook_recovered"
    ]


def test_a_notice_already_sent_is_not_taken_back_by_a_recovery(webhook, smtp_server):
    record(webhook)
    services.notifications_send(account_id=webhook.account_id)
    record(webhook, Event.WEBHOOK_RECOVERED)
    services.notifications_send(account_id=webhook.account_id)
    assert [m["Subject"].split(":")[0] for m in smtp_server.messages] == [
        "[Conduit] Webhook inbox@alice.example is failing",
        "[Conduit] Webhook inbox@alice.example recovered",
    ]


def test_it_sends_one_notice_per_webhook_and_event_per_interval(webhook, smtp_server):
    start = timezone.now()
    assert services.notification_record(
        account=webhook.account,
        event=Event.WEBHOOK_FAILING,
        summary="first",
        details={},
        webhook=webhook,
        now=start,
    )
    later = [start + timedelta(minutes=m) for m in (1, 59)]
    for now in later:
        again = services.notification_record(
            account=webhook.account,
            event=Event.WEBHOOK_FAILING,
            summary="again",
            details={},
            webhook=webhook,
            now=now,
        )
        assert again is None
    # Another event of the same webhook is other news.
    assert record(webhook, Event.DELIVERY_GAVE_UP) is not None
    # Past the interval (60 minutes by default) it is told again.
    assert services.notification_record(
        account=webhook.account,
        event=Event.WEBHOOK_FAILING,
        summary="an hour later",
        details={},
        webhook=webhook,
        now=start + timedelta(minutes=61),
    )
    assert Notification.objects.filter(event="webhook_failing").count() == 2


def test_the_interval_is_the_accounts(webhook):
    NotificationSettings.objects.create(account=webhook.account, interval_minutes=5)
    start = timezone.now()
    for minutes, expected in ((0, True), (4, False), (6, True)):
        notice = services.notification_record(
            account=webhook.account,
            event=Event.WEBHOOK_FAILING,
            summary="s",
            details={},
            webhook=webhook,
            now=start + timedelta(minutes=minutes),
        )
        assert (notice is not None) is expected


def test_a_burst_across_many_webhooks_becomes_one_digest_mail(
    alice, alice_domain, webhook, smtp_server, ops_webhook, httpserver
):
    hooks = [webhook] + [
        make_webhook(
            alice, alice_domain, httpserver.url_for("/hook"), address=f"in{n}@alice.example"
        )
        for n in range(4)
    ]
    for hook in hooks:
        record(hook)

    assert services.notifications_send(account_id=alice.id) == 5

    [mail] = smtp_server.messages
    assert mail["Subject"] == "[Conduit] 5 notices about your webhooks and domains"
    body = smtp_server.bodies()[0]
    assert "5 things happened close together" in body
    for hook in hooks:
        assert f"Webhook {hook.address} is failing" in body
    # The operational webhook gets each event on its own.
    events = ops_events(httpserver, ops_webhook.webhook_secret)
    assert sorted(e["data"]["webhook_id"] for e in events) == sorted(str(h.id) for h in hooks)
    assert set(Notification.objects.values_list("status", flat=True)) == {"sent"}
    # Nothing left: a second sender finds nothing.
    assert services.notifications_send(account_id=alice.id) == 0
    assert len(smtp_server.messages) == 1


def test_events_the_account_turned_off_are_not_recorded(webhook, smtp_server):
    NotificationSettings.objects.create(
        account=webhook.account, events=["webhook_recovered", "mail_silent"]
    )
    assert record(webhook) is None
    assert record(webhook, Event.DELIVERY_GAVE_UP) is None
    assert Notification.objects.count() == 0


def test_without_a_channel_nothing_is_recorded(webhook):
    NotificationSettings.objects.create(account=webhook.account, email_enabled=False)
    assert record(webhook) is None


def test_with_email_off_only_the_operational_webhook_is_told(
    webhook, smtp_server, ops_webhook, httpserver
):
    NotificationSettings.objects.filter(account=webhook.account).update(email_enabled=False)
    record(webhook)
    services.notifications_send(account_id=webhook.account_id)
    assert smtp_server.messages == []
    assert Notification.objects.get().channels == {"email": "off", "webhook": "sent"}
    assert len(ops_events(httpserver, ops_webhook.webhook_secret)) == 1


def test_a_channel_that_fails_is_reported_on_the_notice(webhook, smtp_server, httpserver):
    httpserver.expect_request("/broken").respond_with_data("no", status=500)
    NotificationSettings.objects.create(
        account=webhook.account,
        webhook_url=httpserver.url_for("/broken"),
        webhook_secret="whsec_QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0NTY3ODk=",
    )
    record(webhook)
    services.notifications_send(account_id=webhook.account_id)
    assert Notification.objects.get().channels == {"email": "sent", "webhook": "failed: HTTP 500"}


def test_the_beat_sends_notices_whose_task_was_lost(webhook, smtp_server, settings):
    notice = record(webhook)
    assert tasks.send_due() == 0  # still inside its digest window
    Notification.objects.filter(id=notice.id).update(
        created_at=timezone.now() - timedelta(seconds=settings.CONDUIT_NOTIFY_DIGEST_SECONDS + 1)
    )
    assert tasks.send_due() == 1
    assert len(smtp_server.messages) == 1
