"""Recoveries through the API: a webhook's deliveries of a window queued again, sent at a pace."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.models import AuditLogEntry
from domains.models import Domain
from tests.delivery_fixtures import accept, make_webhook, wait_for
from webhooks import recovery
from webhooks.models import Delivery, InboundMessage, RecoveryJob, Webhook

pytestmark = pytest.mark.django_db


def recoveries(webhook: Webhook) -> str:
    return f"/api/v1/webhooks/{webhook.id}/recoveries"


def failed(webhook: Webhook, count: int = 1, *, status: str = "failed") -> list[Delivery]:
    """Deliveries to ``webhook`` that ran out of attempts (or reached ``status``).

    One transaction: the accept's publish runs after the commit, when the
    deliveries are already final, so a running worker skips them instead of
    delivering them before they could fail.
    """
    with transaction.atomic():
        ids = [accept(webhook).delivery_ids[0] for _ in range(count)]
        Delivery.objects.filter(id__in=ids).update(
            status=status, attempts=10, last_error="HTTP 500", next_attempt_at=None
        )
    return list(Delivery.objects.filter(id__in=ids).order_by("created_at", "id"))


def since_an_hour_ago() -> str:
    return (timezone.now() - timedelta(hours=1)).isoformat()


def finish(job_id) -> int:
    """Every step of the job, here and now; how many steps ran."""
    steps = 0
    while recovery.advance(job_id=job_id) is not None:
        steps += 1
        assert steps < 100
    return steps + 1


def start(api, webhook: Webhook, **body):
    body.setdefault("since", since_an_hour_ago())
    return api.post(recoveries(webhook), body, format="json")


@pytest.fixture
def bob_webhook(bob, httpserver, delivery_settings) -> Webhook:
    domain = Domain.objects.create(account=bob, name="bob.example", verified=True)
    return make_webhook(bob, domain, httpserver.url_for("/bob"))


# --- Recovering ----------------------------------------------------------------------


def per_step(settings, monkeypatch, count: int) -> None:
    """A recovery rate that sends ``count`` deliveries a step, however long
    the steps take."""
    settings.CONDUIT_RECOVERY_RATE = count / recovery.STEP_PAUSE
    monkeypatch.setattr(recovery, "MAX_SHARE_SECONDS", recovery.STEP_PAUSE)


@pytest.mark.usefixtures("storage_half")
def test_it_queues_every_failed_delivery_of_the_window_again_in_batches(
    alice_api, webhook, bob_webhook, monkeypatch, settings
):
    monkeypatch.setattr(recovery, "QUEUE_BATCH", 2)
    per_step(settings, monkeypatch, 2)
    lost = failed(webhook, 5)
    [delivered] = failed(webhook, status="delivered")
    [old] = failed(webhook)
    Delivery.objects.filter(id=old.id).update(created_at=timezone.now() - timedelta(hours=3))
    [purged] = failed(webhook)
    InboundMessage.objects.filter(id=purged.message_id).update(raw_purged_at=timezone.now())
    [elsewhere] = failed(bob_webhook)

    response = start(alice_api, webhook)

    assert response.status_code == 201, response.content
    body = response.json()
    assert response["Location"] == f"{recoveries(webhook)}/{body['id']}"
    assert body["state"] == "running"
    assert body["statuses"] == ["failed"]
    assert (body["matched"], body["queued"], body["done"]) == (5, 0, 0)
    assert finish(body["id"]) == 4  # 2 + 2 + 1, then the step that finds nothing left
    for item in Delivery.objects.filter(id__in=[d.id for d in lost]):
        assert item.status == "pending" and item.attempts == 0 and item.last_error == ""
        assert item.next_attempt_at is not None and item.recovery_id is not None
    # Same rows, so the same webhook-id on every replay.
    assert {d.id for d in Delivery.objects.filter(recovery__isnull=False)} == {d.id for d in lost}
    for untouched in (delivered, old, purged, elsewhere):
        again = Delivery.objects.get(id=untouched.id)
        assert (again.status, again.attempts) == (untouched.status, 10)
    progress = alice_api.get(f"{recoveries(webhook)}/{body['id']}").json()
    assert progress["state"] == "finished" and progress["finished_at"] is not None
    assert progress["all_queued_at"] is not None
    assert (progress["matched"], progress["queued"], progress["done"]) == (5, 5, 0)
    assert not Delivery.objects.filter(held=True).exists()


@pytest.mark.usefixtures("storage_half")
def test_it_queues_every_match_at_once_and_sends_them_at_its_rate(
    alice_api, webhook, settings, monkeypatch
):
    per_step(settings, monkeypatch, 2)
    lost = failed(webhook, 5)
    body = start(alice_api, webhook).json()

    assert recovery.advance(job_id=body["id"]) == recovery.STEP_PAUSE

    progress = alice_api.get(f"{recoveries(webhook)}/{body['id']}").json()
    assert (progress["state"], progress["queued"], progress["done"]) == ("running", 5, 0)
    assert progress["all_queued_at"] is not None
    # The two oldest are sent again; the rest wait in the queue, as they were.
    rows = Delivery.objects.in_bulk([d.id for d in lost])
    assert [rows[d.id].status for d in lost] == ["pending"] * 2 + ["failed"] * 3
    assert [rows[d.id].held for d in lost] == [False] * 2 + [True] * 3
    assert all(rows[d.id].attempts == 10 for d in lost[2:])
    # Held deliveries are not done, even though their state is final.
    Delivery.objects.filter(id__in=[d.id for d in lost[:2]]).update(status="delivered")
    progress = alice_api.get(f"{recoveries(webhook)}/{body['id']}").json()
    assert progress["done"] == 2

    assert finish(body["id"]) == 3  # 2 + 1, then the step that finds nothing left
    assert Delivery.objects.filter(status="pending", held=False).count() == 3


@pytest.mark.usefixtures("storage_half")
def test_it_recovers_the_statuses_asked_for(alice_api, webhook):
    failed(webhook, 2)
    [delivered] = failed(webhook, status="delivered")

    body = start(alice_api, webhook, statuses=["delivered"]).json()
    finish(body["id"])

    assert body["matched"] == 1 and body["statuses"] == ["delivered"]
    assert Delivery.objects.get(id=delivered.id).status == "pending"
    assert Delivery.objects.filter(status="failed").count() == 2


def test_it_counts_what_was_delivered_or_failed_again_as_done(alice_api, webhook):
    lost = failed(webhook, 3)
    body = start(alice_api, webhook).json()
    finish(body["id"])
    Delivery.objects.filter(id=lost[0].id).update(status="delivered")
    Delivery.objects.filter(id=lost[1].id).update(status="failed")

    progress = alice_api.get(f"{recoveries(webhook)}/{body['id']}").json()

    assert (progress["matched"], progress["queued"], progress["done"]) == (3, 3, 2)


def test_it_is_audited(alice_api, alice, webhook):
    failed(webhook, 2)
    body = start(alice_api, webhook).json()
    alice_api.post(f"{recoveries(webhook)}/{body['id']}/cancel")

    created = AuditLogEntry.objects.get(account=alice, action="recovery.created")
    assert created.metadata["recovery_id"] == body["id"]
    assert created.metadata["matched"] == 2 and created.metadata["statuses"] == ["failed"]
    cancelled = AuditLogEntry.objects.get(account=alice, action="recovery.cancelled")
    assert cancelled.metadata["recovery_id"] == body["id"]


def test_the_same_request_again_returns_the_same_job_and_sends_nothing_twice(alice_api, webhook):
    failed(webhook, 2)
    request = {"since": since_an_hour_ago(), "statuses": ["failed"]}
    first = start(alice_api, webhook, **request).json()
    finish(first["id"])
    Delivery.objects.update(status="failed", attempts=10)

    again = start(alice_api, webhook, **request)

    assert again.status_code == 200, again.content
    assert again.json()["id"] == first["id"]
    assert RecoveryJob.objects.count() == 1
    assert Delivery.objects.filter(status="failed").count() == 2  # not queued again


def test_a_cancelled_job_does_not_stop_the_same_request_from_starting_anew(alice_api, webhook):
    failed(webhook)
    request = {"since": since_an_hour_ago()}
    first = start(alice_api, webhook, **request).json()
    alice_api.post(f"{recoveries(webhook)}/{first['id']}/cancel")

    again = start(alice_api, webhook, **request)

    assert again.status_code == 201 and again.json()["id"] != first["id"]


@pytest.mark.usefixtures("storage_half")
def test_it_sends_nothing_while_its_sent_deliveries_have_not_been_tried(
    alice_api, webhook, monkeypatch, settings
):
    monkeypatch.setattr(recovery, "BACKLOG", 3)
    per_step(settings, monkeypatch, 2)
    failed(webhook, 6)
    body = start(alice_api, webhook).json()

    def sent() -> int:
        return Delivery.objects.filter(recovery_id=body["id"], held=False).count()

    assert recovery.advance(job_id=body["id"]) == recovery.STEP_PAUSE
    assert (RecoveryJob.objects.get(id=body["id"]).queued, sent()) == (6, 2)
    assert recovery.advance(job_id=body["id"]) == recovery.STEP_PAUSE
    assert sent() == 3  # only as many as the backlog has room for
    # Three wait for their first attempt: new mail must not queue behind more.
    assert recovery.advance(job_id=body["id"]) == recovery.BACKLOGGED_PAUSE
    assert sent() == 3
    Delivery.objects.filter(recovery_id=body["id"], held=False).update(
        status="delivered", attempts=1
    )

    assert recovery.advance(job_id=body["id"]) == recovery.STEP_PAUSE
    assert recovery.advance(job_id=body["id"]) == recovery.STEP_PAUSE
    assert sent() == 6
    assert recovery.advance(job_id=body["id"]) is None  # nothing left to queue or send


def test_a_job_whose_webhook_is_paused_meanwhile_waits_for_it(alice_api, webhook):
    failed(webhook, 2)
    body = start(alice_api, webhook).json()
    alice_api.post(f"/api/v1/webhooks/{webhook.id}/pause")

    assert recovery.advance(job_id=body["id"]) == recovery.HELD_PAUSE
    assert RecoveryJob.objects.get(id=body["id"]).queued == 0

    alice_api.post(f"/api/v1/webhooks/{webhook.id}/resume")
    finish(body["id"])
    assert RecoveryJob.objects.get(id=body["id"]).queued == 2


def test_the_beat_steps_again_a_job_whose_step_was_lost(alice_api, webhook):
    failed(webhook)
    body = start(alice_api, webhook).json()
    assert recovery.resume_stalled() == 0
    RecoveryJob.objects.filter(id=body["id"]).update(
        updated_at=timezone.now() - recovery.STALLED_AFTER - timedelta(seconds=1)
    )

    assert recovery.resume_stalled() == 1


# --- Listing, reading, cancelling ----------------------------------------------------


def test_it_lists_recoveries_newest_first_paged(alice_api, webhook):
    failed(webhook)
    made = []
    for hours in (1, 2, 3):
        body = start(
            alice_api, webhook, since=(timezone.now() - timedelta(hours=hours)).isoformat()
        )
        made.append(body.json()["id"])
        finish(made[-1])

    response = alice_api.get(recoveries(webhook), {"page_size": 2})

    assert response.status_code == 200
    assert [item["id"] for item in response.json()] == [made[2], made[1]]
    assert response["X-Total-Count"] == "3"
    assert 'rel="next"' in response["Link"]


def test_listing_recoveries_costs_the_same_queries_for_any_number(alice_api, webhook):
    failed(webhook, 2)

    def queries_for_a_page() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert alice_api.get(recoveries(webhook)).status_code == 200
        return len(captured)

    since = timezone.now() - timedelta(hours=1)
    body = start(alice_api, webhook, since=since.isoformat()).json()
    finish(body["id"])
    one = queries_for_a_page()
    for minutes in range(1, 6):
        body = start(alice_api, webhook, since=(since - timedelta(minutes=minutes)).isoformat())
        finish(body.json()["id"])
    assert queries_for_a_page() == one


def test_a_running_job_can_be_cancelled_and_queues_nothing_more(
    alice_api, webhook, monkeypatch, settings
):
    monkeypatch.setattr(recovery, "QUEUE_BATCH", 2)
    per_step(settings, monkeypatch, 1)
    lost = failed(webhook, 4)
    body = start(alice_api, webhook).json()
    recovery.advance(job_id=body["id"])

    response = alice_api.post(f"{recoveries(webhook)}/{body['id']}/cancel")

    assert response.status_code == 200, response.content
    assert response.json()["state"] == "cancelled" and response.json()["queued"] == 2
    assert recovery.advance(job_id=body["id"]) is None
    # The one it sent goes on; the one it held is left as it was found.
    rows = Delivery.objects.in_bulk([d.id for d in lost])
    assert [rows[d.id].status for d in lost] == ["pending", "failed", "failed", "failed"]
    assert not any(row.held for row in rows.values())
    assert rows[lost[1].id].recovery_id is None and rows[lost[1].id].attempts == 10


# --- Bad input -----------------------------------------------------------------------


def test_cancelling_a_finished_job_is_a_conflict(alice_api, webhook):
    failed(webhook)
    body = start(alice_api, webhook).json()
    finish(body["id"])

    response = alice_api.post(f"{recoveries(webhook)}/{body['id']}/cancel")

    assert response.status_code == 409
    assert response.json()["code"] == "recovery_finished"
    assert "already finished" in response.json()["error"]


def test_cancelling_a_cancelled_job_is_a_conflict(alice_api, webhook):
    body = start(alice_api, webhook).json()
    alice_api.post(f"{recoveries(webhook)}/{body['id']}/cancel")

    response = alice_api.post(f"{recoveries(webhook)}/{body['id']}/cancel")

    assert response.status_code == 409
    assert response.json()["code"] == "recovery_finished"


def test_a_second_recovery_while_one_runs_is_a_conflict_naming_it(alice_api, webhook):
    failed(webhook)
    running = start(alice_api, webhook).json()

    response = start(alice_api, webhook, since=(timezone.now() - timedelta(hours=2)).isoformat())

    assert response.status_code == 409
    assert response.json()["code"] == "recovery_running"
    assert f"{recoveries(webhook)}/{running['id']}" in response.json()["error"]
    assert RecoveryJob.objects.count() == 1


def test_recovering_a_paused_webhook_is_a_conflict_saying_to_resume_it(alice_api, webhook):
    alice_api.post(f"/api/v1/webhooks/{webhook.id}/pause")

    response = start(alice_api, webhook)

    assert response.status_code == 409
    assert response.json()["code"] == "webhook_paused"
    assert f"/api/v1/webhooks/{webhook.id}/resume" in response.json()["error"]
    assert not RecoveryJob.objects.exists()


def test_recovering_an_inactive_webhook_is_a_conflict_saying_to_reactivate_it(alice_api, webhook):
    Webhook.objects.filter(id=webhook.id).update(active=False)

    response = start(alice_api, webhook)

    assert response.status_code == 409
    assert response.json()["code"] == "webhook_inactive"
    assert '"active": true' in response.json()["error"]


def test_until_before_since_is_refused(alice_api, webhook):
    now = timezone.now()

    response = start(
        alice_api,
        webhook,
        since=now.isoformat(),
        until=(now - timedelta(minutes=5)).isoformat(),
    )

    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "validation_error"
    assert "until must be later than since" in body["details"]["until"][0]


def test_a_window_wider_than_the_retention_is_refused(alice_api, webhook):
    Webhook.objects.filter(id=webhook.id).update(raw_retention_days=2)
    now = timezone.now()

    response = start(
        alice_api, webhook, since=(now - timedelta(days=3)).isoformat(), until=now.isoformat()
    )

    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "validation_error"
    assert "keeps raw messages 2 days" in body["details"]["since"][0]


def test_an_unknown_status_is_refused(alice_api, webhook):
    response = start(alice_api, webhook, statuses=["delivering"])

    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"
    assert "is not a valid choice" in response.json()["details"]["statuses.0"][0]


def test_another_accounts_or_an_unknown_webhook_is_not_found(alice_api, bob_webhook, webhook):
    for target in (bob_webhook, Webhook(id=uuid.UUID(int=1))):
        assert start(alice_api, target).status_code == 404
        listed = alice_api.get(recoveries(target))
        assert listed.status_code == 404 and listed.json()["code"] == "not_found"


def test_an_unknown_or_another_webhooks_recovery_is_not_found(
    alice_api, bob_api, webhook, bob_webhook
):
    mine = start(alice_api, webhook).json()
    other = make_webhook(
        webhook.account, webhook.domain, webhook.target_url, address="x@alice.example"
    )
    for path in (
        f"{recoveries(webhook)}/{bob_webhook.id}",  # no such recovery
        f"{recoveries(other)}/{mine['id']}",  # another webhook's
        f"{recoveries(bob_webhook)}/{mine['id']}",  # another account's webhook
    ):
        for response in (alice_api.get(path), alice_api.post(f"{path}/cancel")):
            assert response.status_code == 404, path
            assert response.json()["code"] == "not_found"
    response = bob_api.get(f"{recoveries(webhook)}/{mine['id']}")
    assert response.status_code == 404 and response.json()["code"] == "not_found"


# --- Through a real worker -----------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_worker_runs_the_recovery_and_delivers_with_the_same_webhook_id(
    alice_api, webhook, httpserver, celery_worker
):
    httpserver.expect_request("/hook").respond_with_data("ok")
    lost = failed(webhook, 3)

    body = start(alice_api, webhook).json()

    def progress_when_finished():
        progress = alice_api.get(f"{recoveries(webhook)}/{body['id']}").json()
        return progress if progress["state"] == "finished" and progress["done"] == 3 else None

    progress = wait_for(progress_when_finished)
    assert progress["state"] == "finished" and progress["queued"] == 3
    sent = {request.headers["webhook-id"] for request, _ in httpserver.log}
    assert sent == {f"msg_{d.id.hex}" for d in lost}
    assert all(d.attempts == 1 for d in Delivery.objects.all())
