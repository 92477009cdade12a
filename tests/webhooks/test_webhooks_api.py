from __future__ import annotations

import uuid

import pytest

from accounts.models import AuditLogEntry
from domains.models import Domain
from policies.models import SmtpSecurityPolicy
from tests.delivery_fixtures import make_webhook
from webhooks.models import DeliveryLog, Webhook

pytestmark = pytest.mark.django_db


@pytest.fixture
def body(alice_domain, delivery_settings):
    return {"address": "inbox@alice.example", "target_url": "https://hooks.example.com/in"}


def create(client, body, **extra):
    return client.post("/api/v1/webhooks", {**body, **extra}, format="json")


def assert_422(response, field: str) -> None:
    assert response.status_code == 422, response.content
    assert response.json()["code"] == "validation_error"
    assert field in response.json()["details"], response.json()


def test_it_creates_a_webhook_and_shows_the_secret_once(alice_api, alice, body):
    r = create(alice_api, body, rate_limit=10, custom_headers={"X-Token": "abc"})
    assert r.status_code == 201
    created = r.json()
    assert created["secret"].startswith("whsec_")
    assert len(created["secret"]) == len("whsec_") + 44
    assert created["address"] == "inbox@alice.example"
    assert created["active"] is True
    assert created["rate_limit"] == 10
    assert created["custom_headers"] == {"X-Token": "abc"}
    assert created["smtp_security_policy_id"] is None
    fetched = alice_api.get(f"/api/v1/webhooks/{created['id']}").json()
    assert fetched["secret"] != created["secret"]
    assert "****" in fetched["secret"]
    assert alice_api.get("/api/v1/webhooks").json()[0]["id"] == created["id"]
    assert AuditLogEntry.objects.filter(account=alice, action="webhook.created").exists()


def test_it_keeps_a_given_secret(alice_api, body):
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    r = create(alice_api, body, secret=secret)
    assert r.json()["secret"] == secret
    assert Webhook.objects.get().secret == secret


def test_it_normalises_the_address(alice_api, body):
    r = create(alice_api, body, address="InBox@ALICE.example")
    assert r.json()["address"] == "inbox@alice.example"


def test_it_accepts_a_catch_all_and_a_public_domain(alice_api, body, public_domain):
    assert create(alice_api, body, address="*@alice.example").status_code == 201
    assert create(alice_api, body, address="alice@public.example").status_code == 201


def test_it_refuses_an_unverified_domain(alice_api, alice, body):
    Domain.objects.create(account=alice, name="pending.example")
    assert_422(create(alice_api, body, address="a@pending.example"), "address")


def test_it_refuses_another_accounts_verified_domain(alice_api, bob, body):
    Domain.objects.create(account=bob, name="bob.example", verified=True)
    assert_422(create(alice_api, body, address="a@bob.example"), "address")


@pytest.mark.parametrize("address", ["no-at-sign", "a b@alice.example", "x@-bad-.com", "@x.com"])
def test_it_refuses_malformed_addresses(alice_api, body, address):
    assert_422(create(alice_api, body, address=address), "address")


def test_it_refuses_a_taken_address_service_wide(alice_api, bob_api, bob, body, public_domain):
    assert create(alice_api, body).status_code == 201
    r = create(alice_api, body)
    assert r.status_code == 409
    assert r.json()["code"] == "conflict"
    assert create(alice_api, body, address="*@alice.example").status_code == 201
    assert create(alice_api, body, address="*@alice.example").status_code == 409
    assert create(alice_api, body, address="x@public.example").status_code == 201
    assert create(bob_api, body, address="x@public.example").status_code == 409


@pytest.mark.parametrize(
    "url", ["ftp://example.com/x", "not a url", "https://", "//example.com/x", "https://u@x.io/"]
)
def test_it_refuses_bad_target_urls(alice_api, body, url):
    assert_422(create(alice_api, body, target_url=url), "target_url")


def test_it_refuses_http_targets_unless_allowed(alice_api, body, settings):
    settings.CONDUIT_ALLOW_HTTP_TARGETS = False
    assert_422(create(alice_api, body, target_url="http://hooks.example.com/"), "target_url")
    settings.CONDUIT_ALLOW_HTTP_TARGETS = True
    assert create(alice_api, body, target_url="http://hooks.example.com/").status_code == 201


@pytest.mark.parametrize(
    "headers",
    [
        {"Host": "evil.example"},
        {"Content-Length": "1"},
        {"webhook-signature": "v1,forged"},
        {"X-Ok": "line\r\nInjected: yes"},
        {"Bad Name": "x"},
        {"X-Ok:": "x"},
    ],
)
def test_it_refuses_bad_custom_headers(alice_api, body, headers):
    assert_422(create(alice_api, body, custom_headers=headers), "custom_headers")


@pytest.mark.parametrize("value", [-1, "many"])
def test_it_refuses_a_bad_rate_limit(alice_api, body, value):
    assert_422(create(alice_api, body, rate_limit=value), "rate_limit")


@pytest.mark.parametrize("template", ["{% if subject %}open", "{% nosuchtag %}", "{{ x|nope }}"])
def test_it_refuses_a_template_with_a_syntax_error(alice_api, body, template):
    assert_422(create(alice_api, body, payload_template=template), "payload_template")


@pytest.mark.parametrize("secret", ["plain-secret", "whsec_!!!", "whsec_c2hvcnQ="])
def test_it_refuses_a_malformed_secret(alice_api, body, secret):
    assert_422(create(alice_api, body, secret=secret), "secret")


def test_it_refuses_another_accounts_policy(alice_api, bob, body):
    policy = SmtpSecurityPolicy.objects.create(account=bob, name="bob's")
    assert_422(
        create(alice_api, body, smtp_security_policy_id=str(policy.id)), "smtp_security_policy_id"
    )


def test_it_attaches_and_clears_a_policy(alice_api, alice, body):
    policy = SmtpSecurityPolicy.objects.create(account=alice, name="strict")
    created = create(alice_api, body, smtp_security_policy_id=str(policy.id)).json()
    assert created["smtp_security_policy_id"] == str(policy.id)
    r = alice_api.put(f"/api/v1/webhooks/{created['id']}", {"clear_security_policy": True})
    assert r.status_code == 200
    assert r.json()["smtp_security_policy_id"] is None


def test_it_detaches_a_deleted_policy(alice_api, alice, body):
    policy = SmtpSecurityPolicy.objects.create(account=alice, name="strict")
    created = create(alice_api, body, smtp_security_policy_id=str(policy.id)).json()
    policy.delete()
    assert (
        alice_api.get(f"/api/v1/webhooks/{created['id']}").json()["smtp_security_policy_id"] is None
    )


def test_it_updates_only_the_fields_sent(alice_api, body):
    created = create(alice_api, body, rate_limit=5).json()
    r = alice_api.put(f"/api/v1/webhooks/{created['id']}", {"target_url": "https://new.example/x"})
    assert r.status_code == 200
    assert r.json()["target_url"] == "https://new.example/x"
    assert r.json()["rate_limit"] == 5
    assert r.json()["address"] == "inbox@alice.example"


def test_it_refuses_an_update_to_a_taken_address(alice_api, body):
    create(alice_api, body, address="one@alice.example")
    second = create(alice_api, body, address="two@alice.example").json()
    r = alice_api.put(f"/api/v1/webhooks/{second['id']}", {"address": "one@alice.example"})
    assert r.status_code == 409


def test_it_validates_updates_too(alice_api, body):
    created = create(alice_api, body).json()
    r = alice_api.put(f"/api/v1/webhooks/{created['id']}", {"rate_limit": -5})
    assert_422(r, "rate_limit")


def test_it_answers_404_for_another_accounts_webhook(alice_api, bob_api, body, bob):
    created = create(alice_api, body).json()
    url = f"/api/v1/webhooks/{created['id']}"
    for response in (
        bob_api.get(url),
        bob_api.put(url, {"rate_limit": 1}),
        bob_api.delete(url),
        bob_api.get(url + "/logs"),
        bob_api.post(url + "/simulate", {}),
    ):
        assert response.status_code == 404
        assert response.json()["code"] == "not_found"
    assert Webhook.objects.filter(id=created["id"]).exists()


def test_it_deletes_a_webhook(alice_api, alice, body):
    created = create(alice_api, body).json()
    assert alice_api.delete(f"/api/v1/webhooks/{created['id']}").status_code == 204
    assert not Webhook.objects.exists()
    assert AuditLogEntry.objects.filter(account=alice, action="webhook.deleted").exists()


def test_it_deletes_webhooks_with_their_domain(alice_api, alice_domain, body):
    create(alice_api, body)
    alice_domain.delete()
    assert not Webhook.objects.exists()


def test_simulate_cuts_a_from_over_320_characters_as_the_schema_says(
    alice_api, alice, alice_domain, httpserver, delivery_settings
):
    hook = make_webhook(alice, alice_domain, httpserver.url_for("/sim"))
    httpserver.expect_request("/sim").respond_with_data("ok")
    sender = "a" * 390 + "@example.net"

    r = alice_api.post(f"/api/v1/webhooks/{hook.id}/simulate", {"from": sender}, format="json")

    # The contract gives simulateWebhook no 422: the simulation runs, with the
    # value cut where the schema's description says, and no maxLength claimed.
    assert r.status_code == 200
    assert DeliveryLog.objects.get(webhook=hook).sender == sender[:320]
    schema = alice_api.get("/api/v1/openapi.json").json()
    field = schema["components"]["schemas"]["SimulateWebhookRequest"]["properties"]["from"]
    assert "maxLength" not in field
    assert "cut to 320" in field["description"]


@pytest.mark.parametrize("debug", [True, False])
def test_simulate_blocks_a_private_target_without_telling_its_address(
    alice_api, alice, alice_domain, settings, debug
):
    settings.DEBUG = debug
    settings.CONDUIT_ALLOW_PRIVATE_TARGETS = False
    settings.CONDUIT_ALLOW_HTTP_TARGETS = True
    hook = make_webhook(alice, alice_domain, "http://localhost:9/hook")  # stored before

    r = alice_api.post(f"/api/v1/webhooks/{hook.id}/simulate", {}, format="json")

    assert r.status_code == 200
    error = r.json()["error"]
    assert error.startswith("Blocked: localhost does not resolve to a public internet address")
    assert "127.0.0.1" not in error and "::1" not in error  # not a DNS oracle
    assert ("CONDUIT_ALLOW_PRIVATE_TARGETS" in error) is debug
    assert DeliveryLog.objects.get().error == error


def test_it_simulates_a_delivery(alice_api, alice, alice_domain, httpserver, delivery_settings):
    hook = make_webhook(alice, alice_domain, httpserver.url_for("/sim"))
    httpserver.expect_request("/sim").respond_with_data("ok", status=202)
    r = alice_api.post(
        f"/api/v1/webhooks/{hook.id}/simulate",
        {"from": "tester@example.net", "subject": "Grüße", "text": "Hallo"},
    )
    assert r.status_code == 200
    result = r.json()
    assert result["http_status"] == 202
    assert result["simulated"] is True
    assert result["error"] is None
    assert result["duration_ms"] >= 0
    request, _ = httpserver.log[0]
    payload = request.get_json()
    assert payload["simulated"] is True
    assert payload["subject"] == "Grüße"
    assert payload["text"].strip() == "Hallo"
    assert "webhook-signature" in request.headers
    log = DeliveryLog.objects.get()
    assert log.simulated and log.sender == "tester@example.net" and log.http_status == 202


def test_it_reports_a_failed_simulation(alice_api, alice, alice_domain, settings):
    settings.CONDUIT_ALLOW_PRIVATE_TARGETS = False
    hook = make_webhook(alice, alice_domain, "http://127.0.0.1:9/x")
    result = alice_api.post(f"/api/v1/webhooks/{hook.id}/simulate", {}).json()
    assert result["http_status"] is None
    assert "Blocked" in result["error"]
    assert DeliveryLog.objects.get().error == result["error"]


def test_it_pages_delivery_logs_newest_first(
    alice_api, alice, alice_domain, httpserver, delivery_settings
):
    hook = make_webhook(alice, alice_domain, httpserver.url_for("/sim"))
    httpserver.expect_request("/sim").respond_with_data("ok")
    for n in range(3):
        alice_api.post(f"/api/v1/webhooks/{hook.id}/simulate", {"from": f"s{n}@example.net"})
    r = alice_api.get(f"/api/v1/webhooks/{hook.id}/logs?page_size=2")
    assert r.status_code == 200
    assert [log["sender"] for log in r.json()] == ["s2@example.net", "s1@example.net"]
    assert r["X-Total-Count"] == "3"
    assert 'rel="next"' in r["Link"]
    entry = r.json()[0]
    assert set(entry) == {
        "id",
        "webhook_id",
        "attempted_at",
        "duration_ms",
        "http_status",
        "error",
        "sender",
        "smtp_message_id",
        "simulated",
        "payload_format",
    }
    assert entry["payload_format"] == "conduit"
    r = alice_api.get(f"/api/v1/webhooks/{hook.id}/logs?page=2&page_size=2")
    assert [log["sender"] for log in r.json()] == ["s0@example.net"]
    one = alice_api.get(f"/api/v1/webhooks/{hook.id}/logs/{entry['id']}")
    assert one.status_code == 200 and one.json()["id"] == entry["id"]


def test_it_answers_404_for_a_log_of_another_webhook(
    alice_api, alice, alice_domain, httpserver, delivery_settings
):
    one = make_webhook(alice, alice_domain, httpserver.url_for("/a"), address="a@alice.example")
    two = make_webhook(alice, alice_domain, httpserver.url_for("/b"), address="b@alice.example")
    httpserver.expect_request("/a").respond_with_data("ok")
    alice_api.post(f"/api/v1/webhooks/{one.id}/simulate", {})
    log = DeliveryLog.objects.get()
    r = alice_api.get(f"/api/v1/webhooks/{two.id}/logs/{log.id}")
    assert r.status_code == 404


def test_it_clamps_bad_paging(alice_api, alice, alice_domain):
    # The contract gives listDeliveryLogs no 422: out-of-range paging is clamped.
    hook = make_webhook(alice, alice_domain, "https://x.example/")
    r = alice_api.get(f"/api/v1/webhooks/{hook.id}/logs?page=0&page_size=201")
    assert r.status_code == 200
    assert "page=1&page_size=200" in r["Link"]
    r = alice_api.get(f"/api/v1/webhooks/{hook.id}/logs?page=x&page_size=-3")
    assert r.status_code == 200
    assert "page=1&page_size=1" in r["Link"]


class AuditDown(Exception):
    pass


def _audit_fails(*args, **kwargs):
    raise AuditDown


def test_it_keeps_the_webhook_unchanged_when_its_audit_entry_cannot_be_written(
    alice_api, body, monkeypatch
):
    created = create(alice_api, body).json()
    monkeypatch.setattr("webhooks.services.audit_record", _audit_fails)

    r = alice_api.put(f"/api/v1/webhooks/{created['id']}", {"target_url": "https://new.example/x"})

    assert r.status_code == 500

    assert Webhook.objects.get().target_url == "https://hooks.example.com/in"


def test_it_creates_no_webhook_without_its_audit_entry(alice_api, body, monkeypatch):
    monkeypatch.setattr("webhooks.services.audit_record", _audit_fails)

    assert create(alice_api, body).status_code == 500

    assert not Webhook.objects.exists()


def test_it_writes_no_deletion_entry_for_a_webhook_that_was_not_deleted(
    alice_api, alice, body, monkeypatch
):
    created = create(alice_api, body).json()
    monkeypatch.setattr(Webhook, "delete", _audit_fails)

    assert alice_api.delete(f"/api/v1/webhooks/{created['id']}").status_code == 500

    assert not AuditLogEntry.objects.filter(account=alice, action="webhook.deleted").exists()


@pytest.mark.django_db(transaction=True)
def test_reactivating_sweeps_the_held_deliveries_once_the_change_is_committed(
    alice_api, alice, body, monkeypatch
):
    created = create(alice_api, body, active=False).json()
    seen = []

    def sweep():
        # Runs after the commit: the reactivation and its audit entry are there.
        seen.append(
            (
                Webhook.objects.get(id=created["id"]).active,
                AuditLogEntry.objects.filter(account=alice, action="webhook.updated").exists(),
            )
        )

    monkeypatch.setattr("webhooks.delivery.sweep", sweep)

    r = alice_api.put(f"/api/v1/webhooks/{created['id']}", {"active": True})

    assert r.status_code == 200
    assert seen == [(True, True)]


def test_it_pauses_and_resumes_a_webhook_audited(alice_api, alice, alice_domain):
    webhook = make_webhook(alice, alice_domain, "https://hooks.example.com/in")
    shown = alice_api.get(f"/api/v1/webhooks/{webhook.id}").json()
    assert (shown["paused"], shown["paused_at"]) == (False, None)

    r = alice_api.post(f"/api/v1/webhooks/{webhook.id}/pause")
    assert r.status_code == 200, r.content
    paused = r.json()
    assert paused["paused"] is True and paused["paused_at"]
    assert paused["active"] is True  # still accepting mail
    # Pausing again keeps the first pause and writes nothing new.
    again = alice_api.post(f"/api/v1/webhooks/{webhook.id}/pause").json()
    assert again["paused_at"] == paused["paused_at"]
    assert alice_api.get("/api/v1/webhooks").json()[0]["paused"] is True

    r = alice_api.post(f"/api/v1/webhooks/{webhook.id}/resume")
    assert r.status_code == 200
    assert (r.json()["paused"], r.json()["paused_at"]) == (False, None)
    assert alice_api.post(f"/api/v1/webhooks/{webhook.id}/resume").status_code == 200
    actions = list(
        AuditLogEntry.objects.filter(account=alice, action__startswith="webhook.")
        .order_by("created_at")
        .values_list("action", "metadata__webhook_id")
    )
    assert actions == [("webhook.paused", str(webhook.id)), ("webhook.resumed", str(webhook.id))]


@pytest.mark.parametrize("action", ["pause", "resume"])
def test_it_hides_another_accounts_webhook_from_pause_and_resume(
    alice_api, bob, action, public_domain
):
    hook = make_webhook(bob, public_domain, "https://hooks.example.com/in")
    r = alice_api.post(f"/api/v1/webhooks/{hook.id}/{action}")
    assert r.status_code == 404
    assert r.json()["code"] == "not_found"
    r = alice_api.post(f"/api/v1/webhooks/{uuid.uuid4()}/{action}")
    assert (r.status_code, r.json()["code"]) == (404, "not_found")
    assert Webhook.objects.get().paused_at is None
