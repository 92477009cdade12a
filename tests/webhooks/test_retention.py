"""Raw message retention chosen per webhook: the API fields, their bounds, the purge."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from accounts.models import AuditLogEntry
from tests.delivery_fixtures import RAW, accept, make_webhook
from tests.factories import AccountFactory
from webhooks import accept as webhook_accept
from webhooks import delivery
from webhooks.models import Delivery, InboundMessage, Webhook
from webhooks.tasks import purge_raw_messages

pytestmark = pytest.mark.django_db


def _body(**extra) -> dict:
    return {"address": "inbox@alice.example", "target_url": "https://hooks.example.com/in", **extra}


def _accept_for(*webhooks: Webhook) -> InboundMessage:
    accepted = webhook_accept.message_accept(
        raw=RAW,
        mail_from="sender@example.net",
        recipients={w.id: [w.address] for w in webhooks},
        accounts={w.id: w.account_id for w in webhooks},
        client_ip="192.0.2.10",
        helo="mail.example.net",
        message_id_header="<abc123@example.net>",
    )
    return InboundMessage.objects.get(id=accepted.message_id)


def _age(message: InboundMessage, days: float) -> None:
    InboundMessage.objects.filter(id=message.id).update(
        received_at=timezone.now() - timedelta(days=days)
    )


def _finish(message: InboundMessage, status: str = Delivery.Status.DELIVERED) -> None:
    Delivery.objects.filter(message=message).update(status=status)


def _kept(message: InboundMessage) -> bool:
    message.refresh_from_db()
    return message.raw is not None and message.raw_purged_at is None


@pytest.fixture
def hooks(alice, alice_domain, delivery_settings, httpserver):
    def make(name: str, **fields) -> Webhook:
        return make_webhook(
            alice,
            alice_domain,
            httpserver.url_for("/hook"),
            address=f"{name}@alice.example",
            **fields,
        )

    return make


# --- The API fields ------------------------------------------------------------------


def test_it_sets_and_shows_retention_and_attachment_links(alice_api, alice, alice_domain):
    created = alice_api.post(
        "/api/v1/webhooks",
        _body(raw_retention_days=3, delete_raw_when_delivered=True, attachment_link_threshold=1024),
        format="json",
    )
    assert created.status_code == 201, created.content
    body = created.json()
    assert body["raw_retention_days"] == 3
    assert body["delete_raw_when_delivered"] is True
    assert body["attachment_link_threshold"] == 1024

    updated = alice_api.put(
        f"/api/v1/webhooks/{body['id']}",
        {"raw_retention_days": None, "attachment_link_threshold": None},
        format="json",
    ).json()
    assert updated["raw_retention_days"] is None
    assert updated["attachment_link_threshold"] is None
    assert updated["delete_raw_when_delivered"] is True  # left out: kept
    entry = AuditLogEntry.objects.filter(account=alice, action="webhook.updated").get()
    assert entry.metadata["changed"] == ["attachment_link_threshold", "raw_retention_days"]


def test_a_new_webhook_keeps_raw_messages_for_the_service_default(alice_api, alice_domain):
    body = alice_api.post("/api/v1/webhooks", _body(), format="json").json()
    assert body["raw_retention_days"] is None
    assert body["delete_raw_when_delivered"] is False
    assert body["attachment_link_threshold"] is None


@pytest.mark.parametrize("days", [-1, 31, 10_000])
def test_it_refuses_a_retention_outside_the_operators_bounds(alice_api, alice_domain, days):
    r = alice_api.post("/api/v1/webhooks", _body(raw_retention_days=days), format="json")
    assert r.status_code == 422
    assert r.json()["code"] == "validation_error"
    [message] = r.json()["details"]["raw_retention_days"]
    assert "0 to 30 days" in message
    assert not Webhook.objects.exists()


def test_the_bound_is_the_operators_setting(alice_api, alice_domain, settings, webhook):
    settings.CONDUIT_RAW_MESSAGE_MAX_RETENTION_DAYS = 10
    r = alice_api.put(f"/api/v1/webhooks/{webhook.id}", {"raw_retention_days": 11}, format="json")
    assert r.status_code == 422
    assert r.json()["code"] == "validation_error"
    assert "0 to 10 days" in r.json()["details"]["raw_retention_days"][0]
    ok = alice_api.put(f"/api/v1/webhooks/{webhook.id}", {"raw_retention_days": 10}, format="json")
    assert ok.status_code == 200
    assert ok.json()["raw_retention_days"] == 10


def test_it_refuses_a_negative_attachment_link_threshold(alice_api, alice_domain):
    r = alice_api.post("/api/v1/webhooks", _body(attachment_link_threshold=-5), format="json")
    assert r.status_code == 422
    assert r.json()["code"] == "validation_error"
    assert "attachment_link_threshold" in r.json()["details"]


# --- The admin -------------------------------------------------------------------------


def _admin_form(client: Client, webhook: Webhook) -> dict:
    """The change form's current values, as the browser would post them back."""
    page = client.get(f"/admin/webhooks/webhook/{webhook.id}/change/")
    form = page.context["adminform"].form
    data = {}
    for name, field in form.fields.items():
        value = form.initial.get(name, field.initial)
        if value is None or value is False:
            continue
        data[name] = str(value.pk if hasattr(value, "pk") else value)
    data["custom_headers"] = "{}"
    for formset in page.context["inline_admin_formsets"]:
        management = formset.formset.management_form
        for name in management.fields:
            data[f"{management.prefix}-{name}"] = management.initial.get(name, 0)
    return data


def test_an_operator_sets_retention_and_links_in_the_admin(webhook):
    operator = AccountFactory(email="ops@conduit.email", is_staff=True, is_superuser=True)
    client = Client()
    client.force_login(operator)
    data = _admin_form(client, webhook)

    data.update(raw_retention_days="2", delete_raw_when_delivered="on")
    data["attachment_link_threshold"] = "5000"
    r = client.post(f"/admin/webhooks/webhook/{webhook.id}/change/", data)
    assert r.status_code == 302, r.context["adminform"].form.errors
    webhook.refresh_from_db()
    assert webhook.raw_retention_days == 2
    assert webhook.delete_raw_when_delivered is True
    assert webhook.attachment_link_threshold == 5000

    data["raw_retention_days"] = "400"
    r = client.post(f"/admin/webhooks/webhook/{webhook.id}/change/", data)
    assert r.status_code == 200
    assert "0 to 30 days" in str(r.context["adminform"].form.errors["raw_retention_days"])
    webhook.refresh_from_db()
    assert webhook.raw_retention_days == 2


# --- The purge -------------------------------------------------------------------------


def test_it_purges_after_the_webhooks_own_retention(hooks):
    short = hooks("short", raw_retention_days=2)
    old, recent = _accept_for(short), _accept_for(short)
    _finish(old), _finish(recent)
    _age(old, 2.5)
    _age(recent, 1.5)

    assert purge_raw_messages() == 1
    assert not _kept(old)
    assert old.raw_purged_at is not None
    assert _kept(recent)


def test_a_webhook_without_a_choice_keeps_the_service_default(hooks, settings):
    settings.CONDUIT_RAW_MESSAGE_RETENTION_DAYS = 7
    plain = hooks("plain")
    message = _accept_for(plain)
    _finish(message)
    _age(message, 6)
    assert purge_raw_messages() == 0
    _age(message, 8)
    assert purge_raw_messages() == 1
    assert not _kept(message)


def test_a_shared_message_keeps_its_raw_for_the_longest_retention(hooks):
    short, long = hooks("short", raw_retention_days=1), hooks("long", raw_retention_days=10)
    message = _accept_for(short, long)
    _finish(message)
    _age(message, 5)
    assert purge_raw_messages() == 0
    assert _kept(message)
    _age(message, 11)
    assert purge_raw_messages() == 1
    assert not _kept(message)


def test_a_default_retention_outlasts_a_shorter_one(hooks, settings):
    settings.CONDUIT_RAW_MESSAGE_RETENTION_DAYS = 7
    short, plain = hooks("short", raw_retention_days=1), hooks("plain")
    message = _accept_for(short, plain)
    _finish(message)
    _age(message, 3)
    assert purge_raw_messages() == 0
    _age(message, 7.5)
    assert purge_raw_messages() == 1


def test_a_message_waiting_for_delivery_keeps_its_raw_whatever_the_retention(hooks):
    none_kept = hooks("zero", raw_retention_days=0)
    message = _accept_for(none_kept)
    _age(message, 1)
    assert purge_raw_messages() == 0
    assert _kept(message)
    _finish(message, Delivery.Status.FAILED)
    assert purge_raw_messages() == 1


def test_it_drops_the_raw_as_soon_as_it_was_delivered_when_asked(hooks, httpserver):
    httpserver.expect_request("/hook").respond_with_data("ok")
    hook = hooks("gone", delete_raw_when_delivered=True)
    accept(hook)
    d = Delivery.objects.get()
    delivery.deliver(delivery_id=d.id)
    assert Delivery.objects.get().status == Delivery.Status.DELIVERED
    message = InboundMessage.objects.get()
    assert message.raw is None
    assert message.raw_purged_at is not None


def test_a_failed_delivery_keeps_the_raw_despite_delete_when_delivered(hooks, httpserver):
    httpserver.expect_request("/hook").respond_with_data("no", status=400)
    hook = hooks("gone", delete_raw_when_delivered=True, raw_retention_days=3)
    accept(hook)
    delivery.deliver(delivery_id=Delivery.objects.get().id)
    assert Delivery.objects.get().status == Delivery.Status.FAILED
    message = InboundMessage.objects.get()
    assert _kept(message)
    assert purge_raw_messages() == 0
    _age(message, 4)
    assert purge_raw_messages() == 1


def test_delete_when_delivered_waits_for_every_webhook_of_the_message(hooks, httpserver):
    httpserver.expect_request("/hook").respond_with_data("ok")
    first = hooks("first", delete_raw_when_delivered=True)
    second = hooks("second", delete_raw_when_delivered=True)
    keeper = hooks("keeper")
    both = _accept_for(first, second)
    mixed = _accept_for(first, keeper)

    d1, d2 = Delivery.objects.filter(message=both).order_by("webhook__address")
    delivery.deliver(delivery_id=d1.id)
    assert _kept(both)  # the second webhook has not had it yet
    delivery.deliver(delivery_id=d2.id)
    assert not _kept(both)

    for d in Delivery.objects.filter(message=mixed):
        delivery.deliver(delivery_id=d.id)
    assert _kept(mixed)  # the keeper's retention applies
    assert purge_raw_messages() == 0


def test_the_periodic_purge_catches_delivered_messages_that_were_not_dropped(hooks):
    hook = hooks("gone", delete_raw_when_delivered=True)
    message = _accept_for(hook)
    _finish(message)  # delivered without the delivery's own purge (e.g. its store was down)
    assert purge_raw_messages() == 1
    assert not _kept(message)


def test_a_purged_message_is_not_delivered(hooks, httpserver):
    hook = hooks("zero", raw_retention_days=0)
    accept(hook)
    d = Delivery.objects.get()
    _finish(d.message, Delivery.Status.FAILED)
    assert purge_raw_messages() == 1
    delivery.redeliver(delivery=d)
    delivery.deliver(delivery_id=d.id)
    again = Delivery.objects.get()
    assert again.status == Delivery.Status.FAILED
    assert "purged" in again.last_error
    assert httpserver.log == []
