"""Inbound messages through the API: list, get, download the original, delete, redeliver."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.utils import timezone
from werkzeug import Response as WerkzeugResponse

from accounts.models import Account, AuditLogEntry
from domains.models import Domain
from tests.delivery_fixtures import RAW, make_webhook
from webhooks import accept, delivery, retention
from webhooks.models import AccountMessage, Delivery, DeliveryLog, InboundMessage, Webhook

pytestmark = pytest.mark.django_db

MESSAGES = "/api/v1/messages"


def store(*webhooks: Webhook, raw: bytes = RAW, mail_from: str = "sender@example.net", **fields):
    """One message to each webhook's address, as the ingress stores it."""
    return accept.message_accept(
        raw=raw,
        mail_from=mail_from,
        recipients={w.id: [w.address.replace("*@", "any@")] for w in webhooks},
        accounts={w.id: w.account_id for w in webhooks},
        client_ip="192.0.2.10",
        helo="mail.example.net",
        message_id_header=fields.pop("message_id_header", "<abc123@example.net>"),
        subject=fields.pop("subject", "Hello there"),
        spf_result="pass",
        dkim_domains=["example.net"],
        **fields,
    )


@pytest.fixture
def bob_domain(bob) -> Domain:
    return Domain.objects.create(account=bob, name="bob.example", verified=True)


@pytest.fixture
def bob_webhook(bob, bob_domain, httpserver, delivery_settings) -> Webhook:
    return make_webhook(bob, bob_domain, httpserver.url_for("/bob"))


def page(response) -> list[dict]:
    assert response.status_code == 200, response.content
    return response.json()


def ids(response) -> list[str]:
    return [item["id"] for item in page(response)]


# --- Listing -------------------------------------------------------------------------


def test_it_lists_the_accounts_messages_newest_first_paged_with_a_kept_total(
    alice_api, webhook, bob_api, bob_webhook
):
    stored = [store(webhook, subject=f"number {i}") for i in range(5)]
    store(bob_webhook)

    response = alice_api.get(MESSAGES, {"page_size": 2})

    assert ids(response) == [str(stored[4].message_id), str(stored[3].message_id)]
    assert response["X-Total-Count"] == "5"
    assert 'page=3&page_size=2>; rel="last"' in response["Link"]
    assert ids(alice_api.get(MESSAGES, {"page": 3, "page_size": 2})) == [str(stored[0].message_id)]
    first = page(response)[0]
    assert first["subject"] == "number 4"
    assert first["mail_from"] == "sender@example.net"
    assert first["rcpt_to"] == [webhook.address]
    assert first["message_id"] == "<abc123@example.net>"
    assert first["size"] == len(RAW)
    assert first["raw_available"] is True and first["raw_purged_at"] is None
    [state] = first["deliveries"]
    assert state["webhook_id"] == str(webhook.id)
    assert state["status"] == "pending" and state["attempts"] == 0
    assert state["id"] == str(stored[4].delivery_ids[0])
    # The total is the account's counter, not a COUNT(*) of its messages.
    Account.objects.filter(id=webhook.account_id).update(message_count=12345)
    assert alice_api.get(MESSAGES)["X-Total-Count"] == "12345"
    assert bob_api.get(MESSAGES)["X-Total-Count"] == "1"


def test_a_message_to_two_accounts_is_listed_by_each_with_only_its_own_deliveries(
    alice_api, webhook, bob_api, bob_webhook
):
    shared = store(webhook, bob_webhook)

    [alices] = page(alice_api.get(MESSAGES))
    [bobs] = page(bob_api.get(MESSAGES))

    assert alices["id"] == bobs["id"] == str(shared.message_id)
    assert [d["webhook_id"] for d in alices["deliveries"]] == [str(webhook.id)]
    assert [d["webhook_id"] for d in bobs["deliveries"]] == [str(bob_webhook.id)]
    assert alices["rcpt_to"] == [webhook.address] and bobs["rcpt_to"] == [bob_webhook.address]


def test_it_filters_by_webhook_status_sender_recipient_time_message_id_and_text(
    alice, alice_api, webhook, alice_domain, httpserver
):
    other = make_webhook(
        alice, alice_domain, httpserver.url_for("/other"), address="o@alice.example"
    )
    first = store(webhook, subject="Invoice March", mail_from="billing@shop.example")
    second = store(other, subject="Party", message_id_header="<party@x.example>")
    third = store(webhook, other, subject="Hello again", mail_from="Friend@Mail.example")
    Delivery.objects.filter(id=first.delivery_ids[0]).update(status=Delivery.Status.FAILED)
    earlier = timezone.now() - timedelta(days=3)
    InboundMessage.objects.filter(id=first.message_id).update(received_at=earlier)
    AccountMessage.objects.filter(message_id=first.message_id).update(received_at=earlier)

    def found(**query) -> list[str]:
        response = alice_api.get(MESSAGES, query)
        listed = ids(response)
        assert response["X-Total-Count"] == str(len(listed))
        return listed

    one, two, three = (str(m.message_id) for m in (first, second, third))
    assert found(webhook_id=str(other.id)) == [three, two]
    assert found(status="failed") == [one]
    assert found(status="pending") == [three, two]
    assert found(status="pending", webhook_id=str(webhook.id)) == [three]
    assert found(sender="friend@mail.EXAMPLE") == [three]
    assert found(recipient="O@alice.example") == [three, two]
    assert found(since=(earlier + timedelta(hours=1)).isoformat()) == [three, two]
    assert found(until=(earlier + timedelta(hours=1)).isoformat()) == [one]
    assert found(message_id="party@x.example") == [two]
    assert found(message_id="<party@x.example>") == [two]
    assert found(q="invoice") == [one]
    assert found(q="mail.example") == [three]
    assert found(q="nothing like it") == []


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"status": "lost"}, "status"),
        ({"since": "yesterday"}, "since"),
        ({"webhook_id": "not-a-uuid"}, "webhook_id"),
        ({"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"}, "until"),
        ({"q": "x" * 201}, "q"),
    ],
)
def test_it_refuses_bad_filters_with_422(alice_api, query, field):
    response = alice_api.get(MESSAGES, query)

    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"
    assert field in response.json()["details"]


def test_a_filter_on_an_unknown_or_foreign_webhook_is_404(alice_api, bob_webhook):
    for webhook_id in (bob_webhook.id, "00000000-0000-0000-0000-000000000000"):
        response = alice_api.get(MESSAGES, {"webhook_id": str(webhook_id)})
        assert response.status_code == 404
        assert response.json()["code"] == "not_found"


def test_a_filtered_total_is_counted_up_to_a_cap(alice_api, webhook, monkeypatch):
    from webhooks import selectors

    monkeypatch.setattr(selectors, "MESSAGE_COUNT_CAP", 2)
    for _ in range(3):
        store(webhook)

    response = alice_api.get(MESSAGES, {"status": "pending"})

    assert len(page(response)) == 3
    assert response["X-Total-Count"] == "2"
    assert alice_api.get(MESSAGES)["X-Total-Count"] == "3"


def test_listing_a_page_takes_the_same_few_queries_however_many_messages(
    alice_api, webhook, django_assert_max_num_queries
):
    for _ in range(30):
        store(webhook)
    # Authentication, the page, the page's deliveries.
    with django_assert_max_num_queries(4):
        assert len(page(alice_api.get(MESSAGES))) == 30


# --- Getting one -----------------------------------------------------------------


def test_it_shows_a_message_with_what_each_webhook_received_and_every_attempt(
    alice, alice_api, webhook, alice_domain, httpserver
):
    template = '{"subject": {{ subject|json }}, "to": {{ envelope.rcpt_to|json }}}'
    templated = make_webhook(
        alice,
        alice_domain,
        httpserver.url_for("/templated"),
        address="t@alice.example",
        payload_template=template,
    )
    httpserver.expect_ordered_request("/hook").respond_with_data("down for now", status=503)
    httpserver.expect_ordered_request("/templated").respond_with_data("thanks", status=200)
    stored = store(webhook, templated)
    for delivery_id in stored.delivery_ids:
        delivery.deliver(delivery_id=delivery_id)
    received = {request.path: request.get_data() for request, _ in httpserver.log}

    response = alice_api.get(f"{MESSAGES}/{stored.message_id}")

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["id"] == str(stored.message_id)
    assert body["mail_from"] == "sender@example.net"
    assert sorted(body["rcpt_to"]) == sorted([webhook.address, templated.address])
    assert (body["client_ip"], body["helo"]) == ("192.0.2.10", "mail.example.net")
    assert body["authentication"] == {
        "spf": "pass",
        "dkim": ["example.net"],
        "smtp_auth_user": None,
    }
    assert body["headers"]["subject"] == "Hello there"
    assert body["headers"]["from"] == {"address": "sender@example.net", "name": "Sender Name"}
    assert body["headers"]["message_id"] == "<abc123@example.net>"
    plain, rendered = (
        next(d for d in body["deliveries"] if d["webhook_id"] == str(w.id))
        for w in (webhook, templated)
    )
    # Exactly what the targets received.
    assert plain["payload"] == json.loads(received["/hook"])
    assert plain["body"] is None and plain["content_type"] == "application/json"
    assert rendered["body"] == received["/templated"].decode()
    assert rendered["content_type"] == "application/json"
    assert plain["webhook_message_id"] == f"msg_{stored.delivery_ids[0].hex}"
    assert plain["status"] == "pending" and plain["attempts"] == 1
    assert plain["next_attempt_at"] is not None
    [attempt] = plain["logs"]
    assert attempt["http_status"] == 503 and attempt["attempt"] == 1
    assert attempt["response_excerpt"] == "down for now"
    assert attempt["duration_ms"] >= 0 and attempt["error"] == ""
    assert rendered["status"] == "delivered" and rendered["next_attempt_at"] is None
    assert [log["http_status"] for log in rendered["logs"]] == [200]


def test_a_template_that_fails_to_render_says_why(
    alice, alice_api, alice_domain, httpserver, settings
):
    settings.CONDUIT_TEMPLATE_MAX_LOOP_ITERATIONS = 5
    broken = make_webhook(
        alice,
        alice_domain,
        httpserver.url_for("/x"),
        address="b@alice.example",
        payload_template="{% for c in subject|make_list %}{{ c }}{% endfor %}",
    )
    stored = store(broken)

    [item] = alice_api.get(f"{MESSAGES}/{stored.message_id}").json()["deliveries"]

    assert item["body"] is None and item["content_type"] is None
    assert "CONDUIT_TEMPLATE_MAX_LOOP_ITERATIONS" in item["template_error"]
    assert item["payload"]["subject"] == "Hello there"


def test_another_accounts_or_an_unknown_message_is_404(alice_api, bob_webhook):
    foreign = store(bob_webhook)
    for message_id in (foreign.message_id, "00000000-0000-0000-0000-000000000000"):
        for path in ("", "/raw"):
            response = alice_api.get(f"{MESSAGES}/{message_id}{path}")
            assert response.status_code == 404
            assert response.json()["code"] == "not_found"
        response = alice_api.delete(f"{MESSAGES}/{message_id}")
        assert response.status_code == 404
        response = alice_api.post(f"{MESSAGES}/{message_id}/redeliver", {}, format="json")
        assert response.status_code == 404
    assert InboundMessage.objects.filter(id=foreign.message_id).exists()


# --- The original ----------------------------------------------------------------


def test_it_downloads_the_original_as_message_rfc822(alice_api, webhook):
    raw = RAW + bytes(range(256))
    stored = store(webhook, raw=raw)

    for accept_header in ("message/rfc822", "application/json", "*/*"):
        response = alice_api.get(f"{MESSAGES}/{stored.message_id}/raw", HTTP_ACCEPT=accept_header)
        assert response.status_code == 200
        assert response["Content-Type"] == "message/rfc822"
        assert response.content == raw
        assert f'filename="{stored.message_id}.eml"' in response["Content-Disposition"]


def test_a_purged_original_is_410_saying_when(alice_api, webhook):
    stored = store(webhook)
    Delivery.objects.update(status=Delivery.Status.DELIVERED)
    InboundMessage.objects.update(received_at=timezone.now() - timedelta(days=30))
    assert retention.purge_raw_messages() == 1
    purged_at = InboundMessage.objects.get().raw_purged_at

    for accept_header in ("message/rfc822", "application/json"):
        response = alice_api.get(f"{MESSAGES}/{stored.message_id}/raw", HTTP_ACCEPT=accept_header)
        assert response.status_code == 410
        assert response["Content-Type"] == "application/json"
        assert response.json()["code"] == "message_purged"
        assert f"{purged_at:%Y-%m-%d %H:%M:%S} UTC" in response.json()["error"]
    body = alice_api.get(f"{MESSAGES}/{stored.message_id}").json()
    assert body["raw_available"] is False and body["raw_purged_at"] is not None
    assert body["headers"] is None and body["deliveries"][0]["payload"] is None
    assert body["subject"] == "Hello there"
    assert page(alice_api.get(MESSAGES))[0]["raw_available"] is False


# --- Deleting --------------------------------------------------------------------


def test_deleting_removes_the_message_its_deliveries_and_logs_audited(
    alice, alice_api, webhook, httpserver
):
    httpserver.expect_request("/hook").respond_with_data("no", status=500)
    kept = store(webhook)
    gone = store(webhook)
    delivery.deliver(delivery_id=gone.delivery_ids[0])
    delivery.deliver(delivery_id=kept.delivery_ids[0])
    assert Webhook.objects.get(id=webhook.id).log_count == 2

    response = alice_api.delete(f"{MESSAGES}/{gone.message_id}", REMOTE_ADDR="198.51.100.4")

    assert response.status_code == 204
    assert not InboundMessage.objects.filter(id=gone.message_id).exists()
    assert not Delivery.objects.filter(id__in=gone.delivery_ids).exists()
    assert DeliveryLog.objects.filter(webhook=webhook).count() == 1
    # The logs' total stays true, and so does the messages'.
    logs = alice_api.get(f"/api/v1/webhooks/{webhook.id}/logs")
    assert logs["X-Total-Count"] == "1" and len(logs.json()) == 1
    assert alice_api.get(MESSAGES)["X-Total-Count"] == "1"
    assert ids(alice_api.get(MESSAGES)) == [str(kept.message_id)]
    entry = AuditLogEntry.objects.get(action="message.deleted")
    assert entry.account == alice and entry.ip == "198.51.100.4"
    assert entry.metadata == {
        "message_id": str(gone.message_id),
        "deliveries": 1,
        "content_deleted": True,
    }
    assert alice_api.delete(f"{MESSAGES}/{gone.message_id}").status_code == 404


def test_deleting_a_shared_message_leaves_the_other_accounts_copy(
    alice_api, webhook, bob_api, bob_webhook
):
    shared = store(webhook, bob_webhook)

    assert alice_api.delete(f"{MESSAGES}/{shared.message_id}").status_code == 204

    assert page(alice_api.get(MESSAGES)) == []
    [bobs] = page(bob_api.get(MESSAGES))
    assert bobs["id"] == str(shared.message_id)
    assert bob_api.get(f"{MESSAGES}/{shared.message_id}/raw").content == RAW
    assert list(Delivery.objects.values_list("webhook_id", flat=True)) == [bob_webhook.id]
    assert AuditLogEntry.objects.get(action="message.deleted").metadata["content_deleted"] is False
    assert bob_api.delete(f"{MESSAGES}/{shared.message_id}").status_code == 204
    assert not InboundMessage.objects.exists()


# --- Redelivering ------------------------------------------------------------------


def test_redelivering_queues_the_same_deliveries_again_from_attempt_one(
    alice, alice_api, webhook, alice_domain, httpserver
):
    other = make_webhook(
        alice, alice_domain, httpserver.url_for("/other"), address="o@alice.example"
    )
    httpserver.expect_request("/hook").respond_with_data("gone", status=400)
    httpserver.expect_request("/other").respond_with_data("ok", status=200)
    stored = store(webhook, other)
    for delivery_id in stored.delivery_ids:
        delivery.deliver(delivery_id=delivery_id)
    assert set(Delivery.objects.values_list("status", flat=True)) == {"failed", "delivered"}

    response = alice_api.post(
        f"{MESSAGES}/{stored.message_id}/redeliver", {}, format="json", REMOTE_ADDR="192.0.2.1"
    )

    assert response.status_code == 202, response.content
    queued = response.json()["deliveries"]
    assert sorted(d["id"] for d in queued) == sorted(str(i) for i in stored.delivery_ids)
    for item in queued:
        assert item["status"] == "pending" and item["attempts"] == 0
    entry = AuditLogEntry.objects.get(action="message.redelivered")
    assert entry.account == alice and entry.ip == "192.0.2.1"
    assert sorted(entry.metadata["delivery_ids"]) == sorted(str(i) for i in stored.delivery_ids)
    # Sent again with the same webhook-id, counted as attempt 1.
    httpserver.clear_log()
    for delivery_id in stored.delivery_ids:
        assert delivery.deliver(delivery_id=delivery_id) == "attempted"
    sent_ids = sorted(request.headers["webhook-id"] for request, _ in httpserver.log)
    assert sent_ids == sorted(f"msg_{i.hex}" for i in stored.delivery_ids)
    assert set(DeliveryLog.objects.filter(webhook=other).values_list("attempt", flat=True)) == {1}


def test_redelivering_to_one_webhook_leaves_the_others(alice, alice_api, webhook, alice_domain):
    other = make_webhook(alice, alice_domain, "http://127.0.0.1:9/", address="o@alice.example")
    stored = store(webhook, other)
    Delivery.objects.update(status=Delivery.Status.FAILED, attempts=10, next_attempt_at=None)

    response = alice_api.post(
        f"{MESSAGES}/{stored.message_id}/redeliver", {"webhook_id": str(other.id)}, format="json"
    )

    assert response.status_code == 202
    assert [d["webhook_id"] for d in response.json()["deliveries"]] == [str(other.id)]
    states = dict(Delivery.objects.values_list("webhook_id", "attempts"))
    assert states == {webhook.id: 10, other.id: 0}
    assert Delivery.objects.get(webhook=other).status == Delivery.Status.PENDING


def test_redelivering_queues_the_tasks_after_the_commit(
    alice_api, webhook, django_capture_on_commit_callbacks, monkeypatch
):
    queued = []
    monkeypatch.setattr(delivery, "enqueue", lambda **kwargs: queued.append(kwargs))
    stored = store(webhook)

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        alice_api.post(f"{MESSAGES}/{stored.message_id}/redeliver", {}, format="json")

    assert len(callbacks) == 1
    assert queued == [{"delivery_id": stored.delivery_ids[0]}]


def test_redelivering_refuses_what_it_cannot_send(
    alice_api, webhook, bob_webhook, alice, alice_domain
):
    stored = store(webhook)
    path = f"{MESSAGES}/{stored.message_id}/redeliver"
    unrelated = make_webhook(alice, alice_domain, "http://127.0.0.1:9/", address="u@alice.example")

    for webhook_id in (bob_webhook.id, unrelated.id, "00000000-0000-0000-0000-000000000000"):
        response = alice_api.post(path, {"webhook_id": str(webhook_id)}, format="json")
        assert response.status_code == 404, webhook_id
        assert response.json()["code"] == "not_found"
    response = alice_api.post(path, {"webhook_id": "nope"}, format="json")
    assert response.status_code == 422 and "webhook_id" in response.json()["details"]

    webhook.delete()
    response = alice_api.post(path, {}, format="json")
    assert response.status_code == 409 and response.json()["code"] == "no_deliveries"

    InboundMessage.objects.update(raw=None, raw_purged_at=timezone.now())
    response = alice_api.post(path, {}, format="json")
    assert response.status_code == 410 and response.json()["code"] == "message_purged"
    assert not AuditLogEntry.objects.filter(action="message.redelivered").exists()


def test_the_webhook_target_answer_is_cut_to_an_excerpt(alice_api, webhook, httpserver):
    httpserver.expect_request("/hook").respond_with_response(
        WerkzeugResponse("y" * 5000, status=500)
    )
    stored = store(webhook)
    delivery.deliver(delivery_id=stored.delivery_ids[0])

    body = alice_api.get(f"{MESSAGES}/{stored.message_id}").json()

    [attempt] = body["deliveries"][0]["logs"]
    assert attempt["response_excerpt"] == "y" * 1000
