"""The Django admin as an operator uses it: every model, search, filters, actions."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from accounts import services
from accounts.models import AuditLogEntry
from tests.delivery_fixtures import RAW, accept, make_webhook
from tests.factories import AccountFactory
from webhooks.models import Delivery, DeliveryLog, InboundMessage

pytestmark = pytest.mark.django_db


@pytest.fixture
def operator_client() -> Client:
    operator = AccountFactory(email="ops@conduit.email", is_staff=True, is_superuser=True)
    client = Client()
    client.force_login(operator)
    return client


@pytest.mark.parametrize(
    "url",
    [
        "/admin/",
        "/admin/accounts/account/",
        "/admin/accounts/apitoken/",
        "/admin/accounts/authsession/",
        "/admin/accounts/auditlogentry/",
        "/admin/domains/domain/",
        "/admin/policies/smtpsecuritypolicy/",
        "/admin/webhooks/webhook/",
        "/admin/webhooks/delivery/",
        "/admin/webhooks/inboundmessage/",
        "/admin/webhooks/deliverylog/",
    ],
)
def test_it_renders_every_admin_list(operator_client, url):
    assert operator_client.get(url).status_code == 200


def test_it_searches_accounts_by_email_and_filters_active(operator_client, alice, bob):
    bob.is_active = False
    bob.save()
    page = operator_client.get("/admin/accounts/account/?q=alice").content.decode()
    assert "alice@example.com" in page and "bob@example.org" not in page
    page = operator_client.get("/admin/accounts/account/?is_active__exact=0").content.decode()
    assert "bob@example.org" in page and "alice@example.com" not in page


def test_it_never_shows_token_secrets(operator_client, alice):
    issued = services.api_token_create(
        account=alice, name="deploy", expires_in=None, allowed_ips=[], ip=None
    )
    page = operator_client.get("/admin/accounts/apitoken/").content.decode()
    assert "deploy" in page
    assert issued.token not in page
    assert issued.api_token.token_hash not in page
    page = operator_client.get(f"/admin/accounts/apitoken/{issued.api_token.id}/change/")
    assert issued.api_token.token_hash not in page.content.decode()


def test_it_revokes_sessions(operator_client, alice):
    session = services.session_issue(account=alice, ip=None, user_agent="t").session
    r = operator_client.post(
        "/admin/accounts/authsession/",
        {"action": "revoke", "_selected_action": [str(session.id)]},
    )
    assert r.status_code == 302
    session.refresh_from_db()
    assert session.revoked_at is not None


def test_it_keeps_the_audit_log_read_only_and_filterable(operator_client, alice):
    entry = AuditLogEntry.objects.create(account=alice, action="session.signed_in")
    AuditLogEntry.objects.create(account=alice, action="password.changed")
    page = operator_client.get("/admin/accounts/auditlogentry/?action=password.changed")
    assert page.status_code == 200
    assert page.context["cl"].result_count == 1
    r = operator_client.post(f"/admin/accounts/auditlogentry/{entry.id}/change/", {})
    assert r.status_code == 403
    assert operator_client.get("/admin/accounts/auditlogentry/add/").status_code == 403
    r = operator_client.post(f"/admin/accounts/auditlogentry/{entry.id}/delete/", {"post": "yes"})
    assert r.status_code == 403
    assert AuditLogEntry.objects.filter(id=entry.id).exists()


def test_it_shows_a_webhooks_last_20_logs(operator_client, alice, alice_domain):
    hook = make_webhook(alice, alice_domain, "https://hooks.example/")
    now = timezone.now()
    for n in range(25):
        DeliveryLog.objects.create(
            webhook=hook,
            attempted_at=now - timedelta(minutes=n),
            http_status=200,
            sender=f"sender{n}@example.net",
        )
    page = operator_client.get(f"/admin/webhooks/webhook/{hook.id}/change/").content.decode()
    assert "sender0@example.net" in page and "sender19@example.net" in page
    assert "sender20@example.net" not in page
    assert hook.secret not in page


def test_it_redelivers_a_failed_delivery_with_the_same_id(operator_client, webhook, monkeypatch):
    from webhooks import delivery

    queued = []
    monkeypatch.setattr(delivery, "enqueue", lambda **kw: queued.append(kw["delivery_id"]))
    accept(webhook)
    failed = Delivery.objects.get()
    Delivery.objects.filter(id=failed.id).update(status=Delivery.Status.FAILED, attempts=10)
    page = operator_client.get("/admin/webhooks/delivery/?status__exact=failed")
    assert page.context["cl"].result_count == 1
    r = operator_client.post(
        "/admin/webhooks/delivery/", {"action": "redeliver", "_selected_action": [str(failed.id)]}
    )
    assert r.status_code == 302
    again = Delivery.objects.get()
    assert again.id == failed.id
    assert again.status == Delivery.Status.PENDING
    assert again.next_attempt_at <= timezone.now()


def test_it_keeps_messages_read_only(operator_client, webhook):
    accept(webhook, raw=RAW)
    message = InboundMessage.objects.get()
    page = operator_client.get(f"/admin/webhooks/inboundmessage/{message.id}/change/")
    assert page.status_code == 200
    assert "sender@example.net" in page.content.decode()
    assert operator_client.get("/admin/webhooks/inboundmessage/add/").status_code == 403
