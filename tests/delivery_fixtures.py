from __future__ import annotations

import time

import pytest
from celery.contrib.testing.worker import start_worker

from conduit.celery import app as celery_app
from domains.models import Domain
from webhooks import accept as webhook_accept
from webhooks import storage
from webhooks.models import Webhook

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@pytest.fixture(params=["postgresql", "orm"])
def storage_half(request, monkeypatch) -> str:
    """Runs a test twice: with the PostgreSQL statements of webhooks/storage.py,
    and with their ORM twins (what SQLite runs) on the same database."""
    monkeypatch.setattr(storage, "FAST_PATHS", request.param == "postgresql")
    return request.param


@pytest.fixture
def delivery_settings(settings):
    """Local HTTP targets are allowed, as in development; short timeouts."""
    settings.CONDUIT_ALLOW_PRIVATE_TARGETS = True
    settings.CONDUIT_ALLOW_HTTP_TARGETS = True
    settings.CONDUIT_DELIVERY_TIMEOUT = 2.0
    settings.CONDUIT_DELIVERY_CONNECT_TIMEOUT = 1.0
    return settings


@pytest.fixture
def alice_domain(alice) -> Domain:
    return Domain.objects.create(account=alice, name="alice.example", verified=True)


@pytest.fixture
def public_domain(charlie) -> Domain:
    return Domain.objects.create(
        account=charlie, name="public.example", is_public=True, verified=True
    )


def make_webhook(account, domain, url: str, **fields) -> Webhook:
    fields.setdefault("address", f"inbox@{domain.name}")
    return Webhook.objects.create(
        account=account, domain=domain, target_url=url, secret=SECRET, **fields
    )


@pytest.fixture
def webhook(alice, alice_domain, httpserver, delivery_settings) -> Webhook:
    return make_webhook(alice, alice_domain, httpserver.url_for("/hook"))


RAW = (
    b"From: Sender Name <sender@example.net>\r\n"
    b"To: inbox@alice.example\r\n"
    b"Subject: Hello there\r\n"
    b"Message-ID: <abc123@example.net>\r\n"
    b"Date: Thu, 02 Apr 2026 12:00:00 +0000\r\n"
    b"\r\n"
    b"Hi Alice,\r\nthis is the body.\r\n"
)


def accept(webhook: Webhook, raw: bytes = RAW, rcpt: str | None = None):
    return webhook_accept.message_accept(
        raw=raw,
        mail_from="sender@example.net",
        recipients={webhook.id: [rcpt or webhook.address]},
        accounts={webhook.id: webhook.account_id},
        client_ip="192.0.2.10",
        helo="mail.example.net",
        message_id_header="<abc123@example.net>",
        spf_result="pass",
        dkim_domains=["example.net"],
    )


@pytest.fixture
def celery_worker(transactional_db):
    """A real Celery worker (in a thread) consuming the real Redis broker."""
    celery_app.control.purge()
    with start_worker(
        celery_app, pool="solo", concurrency=1, perform_ping_check=False, shutdown_timeout=10
    ) as worker:
        yield worker


def wait_for(predicate, timeout: float = 20.0):
    """What ``predicate`` returns once it is true (a worker's work seen from the test)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not met in time")
