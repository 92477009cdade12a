"""The whole path through a real Celery worker on the real broker: mail in, the
webhook fails, the account is mailed (real SMTP) and posted to (real HTTP), the
webhook recovers at its retry and the account is told that too."""

from __future__ import annotations

import pytest
from django.db import connection

from notifications.models import Notification
from tests.delivery_fixtures import accept, wait_for
from tests.notifications.helpers import Target, ops_events
from webhooks.models import Delivery


@pytest.fixture
def worker_settings(notify_settings):
    notify_settings.CONDUIT_NOTIFY_FAILING_AFTER = 1
    notify_settings.CONDUIT_NOTIFY_DIGEST_SECONDS = 0.2
    return notify_settings


@pytest.mark.django_db(transaction=True)
def test_a_failing_then_recovered_webhook_is_told_through_the_worker(
    webhook, httpserver, smtp_server, ops_webhook, worker_settings, celery_worker
):
    target = Target(httpserver, status=502)
    accepted = accept(webhook)

    failing = wait_for(
        lambda: Notification.objects.filter(event="webhook_failing", status="sent").first()
    )
    wait_for(lambda: smtp_server.messages)
    assert "is failing" in smtp_server.messages[0]["Subject"]
    assert smtp_server.messages[0]["X-Envelope-To"] == "alice@example.com"
    wait_for(lambda: Notification.objects.get(id=failing.id).channels)

    target.status = 200  # the retry (5 s later) gets through
    wait_for(
        lambda: Delivery.objects.filter(id=accepted.delivery_ids[0], status="delivered").exists(),
        timeout=30,
    )
    recovered = wait_for(
        lambda: (
            Notification.objects.filter(event="webhook_recovered", status="sent")
            .exclude(channels={})
            .first()
        )
    )
    assert recovered.channels == {"email": "sent", "webhook": "sent"}
    wait_for(lambda: len(smtp_server.messages) == 2)
    assert "recovered" in smtp_server.messages[1]["Subject"]
    types = [e["type"] for e in ops_events(httpserver, ops_webhook.webhook_secret)]
    assert types == ["webhook_failing", "webhook_recovered"]
    assert Notification.objects.count() == 2
    # The worker thread's connection must not keep the test database from being dropped.
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
