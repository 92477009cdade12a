"""Notification settings, the webhook's silence window and the list of notices, through the API."""

from __future__ import annotations

import json

import pytest
from django.utils import timezone
from standardwebhooks.webhooks import Webhook as StandardWebhook

from accounts.models import AuditLogEntry
from notifications.models import EVENTS, Notification, NotificationSettings
from tests.ingress.processes import free_port

pytestmark = pytest.mark.django_db

SETTINGS = "/api/v1/accounts/me/notification-settings"
NOTICES = "/api/v1/accounts/me/notifications"


def put(client, **body):
    return client.put(SETTINGS, body, format="json")


def assert_422(response, field, code="validation_error"):
    assert response.status_code == 422, response.content
    body = response.json()
    assert body["code"] == code
    assert field in body["details"], body
    return body


def test_it_answers_the_defaults_before_anything_was_set(alice_api):
    r = alice_api.get(SETTINGS)
    assert r.status_code == 200
    assert r.json() == {
        "email_enabled": True,
        "email": "alice@example.com",
        "webhook_url": "",
        "webhook_secret": "",
        "events": EVENTS,
        "interval_minutes": 60,
    }


def test_it_needs_a_signed_in_account(api):
    assert api.get(SETTINGS).status_code == 401
    assert api.put(SETTINGS, {}, format="json").status_code == 401
    assert api.get(NOTICES).status_code == 401


def test_it_sets_an_operational_webhook_and_shows_its_secret_once(
    alice_api, alice, httpserver, delivery_settings
):
    httpserver.expect_request("/ops", method="POST").respond_with_data("", status=204)
    url = httpserver.url_for("/ops")

    r = put(alice_api, webhook_url=url, events=["webhook_failing", "mail_silent"])

    assert r.status_code == 200, r.content
    secret = r.json()["webhook_secret"]
    assert secret.startswith("whsec_") and "*" not in secret
    assert r.json()["events"] == ["webhook_failing", "mail_silent"]
    # The URL was tested with a signed event before it was kept.
    [(request, _)] = httpserver.log
    StandardWebhook(secret).verify(request.get_data(), dict(request.headers))
    assert json.loads(request.get_data())["type"] == "notification.test"
    assert NotificationSettings.objects.get(account=alice).webhook_secret == secret
    # Masked from now on, also when other fields change.
    shown = alice_api.get(SETTINGS).json()["webhook_secret"]
    assert shown.startswith("whsec_****") and shown != secret
    assert "*" in put(alice_api, interval_minutes=30).json()["webhook_secret"]
    entry = AuditLogEntry.objects.filter(action="notifications.updated").order_by("created_at")[0]
    assert entry.metadata["changed"] == ["events", "webhook_url", "webhook_secret"]

    rotated = put(alice_api, rotate_webhook_secret=True).json()["webhook_secret"]
    assert rotated.startswith("whsec_") and "*" not in rotated and rotated != secret

    off = put(alice_api, webhook_url="").json()
    assert (off["webhook_url"], off["webhook_secret"]) == ("", "")


def test_it_refuses_an_operational_webhook_url_nobody_answers_on(alice_api, delivery_settings):
    url = f"http://127.0.0.1:{free_port()}/ops"
    body = assert_422(put(alice_api, webhook_url=url), "webhook_url", "webhook_url_unreachable")
    assert "did not accept a signed test event" in body["error"]
    assert "answer 2xx" in body["error"]
    assert NotificationSettings.objects.filter(webhook_url=url).count() == 0


def test_it_refuses_an_operational_webhook_url_that_answers_an_error(
    alice_api, httpserver, delivery_settings
):
    httpserver.expect_request("/ops").respond_with_data("nope", status=404)
    body = assert_422(
        put(alice_api, webhook_url=httpserver.url_for("/ops")),
        "webhook_url",
        "webhook_url_unreachable",
    )
    assert body["details"]["webhook_url"] == ["failed: HTTP 404"]


def test_it_refuses_a_plain_http_url_in_production(alice_api, settings):
    settings.CONDUIT_ALLOW_HTTP_TARGETS = False
    body = assert_422(put(alice_api, webhook_url="http://ops.example.com/hook"), "webhook_url")
    assert "https" in body["details"]["webhook_url"][0]


def test_it_refuses_a_private_url_in_production(alice_api, settings):
    settings.CONDUIT_ALLOW_PRIVATE_TARGETS = False
    assert_422(put(alice_api, webhook_url="https://10.0.0.7/hook"), "webhook_url")
    assert_422(put(alice_api, webhook_url="https://localhost/hook"), "webhook_url")


@pytest.mark.parametrize("minutes", [0, 4, -10])
def test_it_refuses_an_interval_below_the_minimum(alice_api, minutes):
    body = assert_422(put(alice_api, interval_minutes=minutes), "interval_minutes")
    if minutes >= 0:
        assert "below the minimum of 5" in body["details"]["interval_minutes"][0]


def test_it_refuses_unknown_events(alice_api):
    assert_422(put(alice_api, events=["webhook_failing", "everything"]), "events.1")


def test_it_keeps_what_a_request_leaves_out(alice_api, alice):
    assert put(alice_api, email_enabled=False).status_code == 200
    r = put(alice_api, interval_minutes=15)
    assert r.json()["email_enabled"] is False
    assert r.json()["interval_minutes"] == 15
    assert r.json()["events"] == EVENTS


# --- The webhook's silence window ------------------------------------------------------


@pytest.fixture
def hook_url(webhook):
    return f"/api/v1/webhooks/{webhook.id}"


def test_a_webhook_takes_a_silence_window(alice_api, hook_url):
    assert alice_api.get(hook_url).json()["expect_mail_every_hours"] is None
    r = alice_api.put(hook_url, {"expect_mail_every_hours": 24}, format="json")
    assert r.status_code == 200, r.content
    assert r.json()["expect_mail_every_hours"] == 24
    assert r.json()["consecutive_failures"] == 0
    assert r.json()["failing_since"] is None
    off = alice_api.put(hook_url, {"expect_mail_every_hours": None}, format="json")
    assert off.json()["expect_mail_every_hours"] is None


@pytest.mark.parametrize("hours", [0, -1])
def test_it_refuses_a_silence_window_below_one_hour(alice_api, hook_url, hours):
    r = alice_api.put(hook_url, {"expect_mail_every_hours": hours}, format="json")
    body = assert_422(r, "expect_mail_every_hours")
    if hours == 0:
        assert "below one hour" in body["details"]["expect_mail_every_hours"][0]


def test_a_webhook_is_created_with_a_silence_window(alice_api, alice_domain, delivery_settings):
    r = alice_api.post(
        "/api/v1/webhooks",
        {
            "address": "daily@alice.example",
            "target_url": "https://hooks.example.com/in",
            "expect_mail_every_hours": 26,
        },
        format="json",
    )
    assert r.status_code == 201, r.content
    assert r.json()["expect_mail_every_hours"] == 26


# --- listNotifications -------------------------------------------------------------------


def test_it_lists_the_accounts_notices_newest_first_in_pages(alice_api, bob_api, alice, webhook):
    now = timezone.now()
    for n in range(3):
        Notification.objects.create(
            account=alice,
            webhook=webhook,
            event="webhook_failing",
            summary=f"notice {n}",
            details={"n": n},
            created_at=now - timezone.timedelta(minutes=10 - n),
        )

    r = alice_api.get(NOTICES, {"page_size": 2})

    assert r.status_code == 200
    assert r["X-Total-Count"] == "3"
    assert 'rel="next"' in r["Link"]
    assert [n["summary"] for n in r.json()] == ["notice 2", "notice 1"]
    first = r.json()[0]
    assert set(first) == {
        "id",
        "event",
        "status",
        "summary",
        "webhook_id",
        "domain_id",
        "details",
        "channels",
        "created_at",
        "sent_at",
    }
    assert first["webhook_id"] == str(webhook.id)
    assert first["status"] == "pending"
    assert [n["summary"] for n in alice_api.get(NOTICES, {"page": 2, "page_size": 2}).json()] == [
        "notice 0"
    ]
    assert bob_api.get(NOTICES).json() == []
