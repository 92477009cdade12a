"""mail_silent: a webhook expecting mail every N hours that got none is told, once a stretch."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from notifications import tasks
from notifications.models import Notification
from tests.notifications.helpers import Target, attempt, new_delivery, ops_events
from webhooks.models import DeliveryLog, Webhook

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("notify_settings", "eager_tasks")]


def receive(webhook):
    """A message arrives and is delivered, as the worker does within seconds."""
    attempt(new_delivery(webhook))


def age(webhook, hours):
    Webhook.objects.filter(id=webhook.id).update(created_at=timezone.now() - timedelta(hours=hours))


def test_a_webhook_without_mail_for_its_window_is_told_once(
    webhook, smtp_server, ops_webhook, httpserver
):
    Webhook.objects.filter(id=webhook.id).update(expect_mail_every_hours=6)
    age(webhook, 7)

    assert tasks.check_silence() == 1
    assert tasks.check_silence() == 0  # the same silent stretch

    [notice] = Notification.objects.all()
    assert notice.event == "mail_silent"
    assert notice.details["last_mail_at"] is None
    assert notice.channels == {"email": "sent", "webhook": "sent"}
    [mail] = smtp_server.messages
    assert (
        mail["Subject"]
        == "[Conduit] No mail reached webhook inbox@alice.example in the last 6 hours"
    )
    body = smtp_server.bodies()[0]
    assert "Last message received: never" in body
    assert "MX record" in body
    assert '{"expect_mail_every_hours": null}' in body
    [event] = ops_events(httpserver, ops_webhook.webhook_secret)
    assert event["type"] == "mail_silent"


def test_mail_ends_a_silent_stretch_and_the_next_one_is_told_again(
    webhook, smtp_server, httpserver
):
    Target(httpserver, status=200)
    Webhook.objects.filter(id=webhook.id).update(expect_mail_every_hours=6)
    age(webhook, 30)
    assert tasks.check_silence() == 1
    Notification.objects.update(created_at=timezone.now() - timedelta(hours=20))
    receive(webhook)
    DeliveryLog.objects.update(attempted_at=timezone.now() - timedelta(hours=8))

    assert tasks.check_silence() == 1

    latest = Notification.objects.order_by("-created_at").first()
    assert latest.details["last_mail_at"] is not None
    assert len(smtp_server.messages) == 2


def test_a_webhook_that_got_mail_within_its_window_is_not_told(webhook, smtp_server, httpserver):
    Target(httpserver, status=200)
    Webhook.objects.filter(id=webhook.id).update(expect_mail_every_hours=6)
    age(webhook, 30)
    receive(webhook)
    assert tasks.check_silence() == 0
    assert smtp_server.messages == []


def test_a_simulated_delivery_is_not_mail(webhook, smtp_server, alice_api, httpserver):
    Target(httpserver, status=200)
    Webhook.objects.filter(id=webhook.id).update(expect_mail_every_hours=6)
    age(webhook, 30)
    r = alice_api.post(f"/api/v1/webhooks/{webhook.id}/simulate", {}, format="json")
    assert r.status_code == 200, r.content
    assert tasks.check_silence() == 1


@pytest.mark.parametrize(
    "change",
    [
        {"expect_mail_every_hours": None},  # off, the default
        {"expect_mail_every_hours": 6, "active": False},
        {"expect_mail_every_hours": 6, "paused_at": timezone.now()},
    ],
)
def test_it_leaves_webhooks_alone_that_do_not_expect_mail(webhook, smtp_server, change):
    Webhook.objects.filter(id=webhook.id).update(**change)
    age(webhook, 30)
    assert tasks.check_silence() == 0
    assert Notification.objects.count() == 0
