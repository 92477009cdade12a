"""The Django admin as an operator uses it: every model, search, filters, actions."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import quote

import pytest
from django.test import Client
from django.utils import timezone

from accounts import services
from accounts.models import AuditLogEntry
from tests.admin_fixtures import make_delivery
from tests.delivery_fixtures import RAW, accept, make_webhook
from tests.factories import AccountFactory
from webhooks import recovery
from webhooks.models import Delivery, DeliveryLog, InboundMessage, RecoveryJob, Webhook

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
        "/admin/webhooks/recoveryjob/",
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


# --- The operator's desk ---------------------------------------------------------


@pytest.fixture
def two_webhooks(alice, alice_domain, bob):
    from domains.models import Domain

    bob_domain = Domain.objects.create(account=bob, name="bob.example", verified=True)
    return (
        make_webhook(alice, alice_domain, "https://hooks.alice.example/"),
        make_webhook(bob, bob_domain, "https://hooks.bob.example/"),
    )


def listed(page) -> list:
    return list(page.context["cl"].result_list)


def test_it_is_the_projects_admin_site_set_the_documented_way():
    from django.apps import apps
    from django.contrib import admin

    from conduit.admin import ConduitAdminSite

    assert type(admin.site._wrapped) is ConduitAdminSite
    assert apps.get_app_config("admin").default_site == "conduit.admin.ConduitAdminSite"


def test_it_links_view_site_to_the_api_docs(operator_client):
    page = operator_client.get("/admin/")
    assert page.context["site_url"] == "/api/v1/docs"
    assert 'href="/api/v1/docs"' in page.content.decode()


def test_it_lists_attempts_deliveries_and_messages_newest_first_to_the_second(
    operator_client, two_webhooks
):
    hook, _ = two_webhooks
    at = timezone.now().replace(microsecond=0) - timedelta(hours=3)
    old = make_delivery(hook, at=at, message_id="<old@example.net>")
    new = make_delivery(hook, at=at + timedelta(hours=1), message_id="<new@example.net>")

    logs = listed(operator_client.get("/admin/webhooks/deliverylog/"))
    assert [log.smtp_message_id for log in logs] == ["<new@example.net>", "<old@example.net>"]
    assert [d.id for d in listed(operator_client.get("/admin/webhooks/delivery/"))] == [
        new.id,
        old.id,
    ]
    messages = listed(operator_client.get("/admin/webhooks/inboundmessage/"))
    assert [m.id for m in messages] == [new.message_id, old.message_id]
    page = operator_client.get("/admin/webhooks/deliverylog/").content.decode()
    first_attempt = at + timedelta(seconds=1)
    assert f"{first_attempt:%Y-%m-%d %H:%M:%S} UTC" in page


def test_it_shows_webhook_status_error_sender_and_duration_of_each_attempt(
    operator_client, two_webhooks
):
    hook, _ = two_webhooks
    long_error = "Could not connect to https://hooks.alice.example/: connection refused " * 3
    make_delivery(
        hook,
        at=timezone.now(),
        status=Delivery.Status.FAILED,
        attempts=[(None, long_error)],
        mail_from="mallory@example.net",
    )
    page = operator_client.get("/admin/webhooks/deliverylog/")
    columns = page.context["cl"].list_display
    assert columns[:6] == ["attempted_at", "webhook", "status", "short_error", "sender", "duration"]
    html = page.content.decode()
    assert "inbox@alice.example" in html
    assert "no response" in html
    assert "mallory@example.net" in html
    assert "10 ms" in html
    # The error is cut short in its cell; the whole of it is its tooltip.
    assert f'title="{long_error}"' in html
    assert html.count(long_error) == 1
    assert f">{long_error[:40]}" in html and "…</span>" in html


def test_it_filters_attempts_by_outcome_webhook_account_and_date(operator_client, two_webhooks):
    alice_hook, bob_hook = two_webhooks
    now = timezone.now()
    make_delivery(alice_hook, at=now, message_id="<ok@x>")
    make_delivery(
        alice_hook, at=now, status="failed", attempts=[(503, "HTTP 503")], message_id="<503@x>"
    )
    make_delivery(
        bob_hook, at=now, status="failed", attempts=[(None, "refused")], message_id="<none@x>"
    )
    make_delivery(bob_hook, at=now - timedelta(days=40), message_id="<old@x>")

    def ids(query: str) -> set[str]:
        page = operator_client.get(f"/admin/webhooks/deliverylog/?{query}")
        assert page.status_code == 200, query
        return {log.smtp_message_id for log in listed(page)}

    assert ids("outcome=ok") == {"<ok@x>", "<old@x>"}
    assert ids("outcome=http_error") == {"<503@x>"}
    assert ids("outcome=no_response") == {"<none@x>"}
    assert ids(f"webhook__id__exact={bob_hook.id}") == {"<none@x>", "<old@x>"}
    assert ids(f"webhook__account__id__exact={alice_hook.account_id}") == {"<ok@x>", "<503@x>"}
    since = quote((now - timedelta(days=7)).isoformat())
    assert ids(f"attempted_at__gte={since}") == {"<ok@x>", "<503@x>", "<none@x>"}
    delivery_page = operator_client.get(
        f"/admin/webhooks/delivery/?status__exact=failed&webhook__account__id__exact={bob_hook.account_id}"
    )
    assert [d.message.message_id_header for d in listed(delivery_page)] == ["<none@x>"]


@pytest.mark.parametrize(
    "url",
    [
        "/admin/webhooks/deliverylog/",
        "/admin/webhooks/delivery/",
        "/admin/webhooks/inboundmessage/",
    ],
)
@pytest.mark.parametrize(
    ("q", "expected"),
    [("<wanted@mail.example>", "wanted"), ("carol@example.net", "wanted"), ("inbox@bob", "bob")],
)
def test_it_searches_by_message_id_sender_and_recipient(
    operator_client, two_webhooks, url, q, expected
):
    alice_hook, bob_hook = two_webhooks
    now = timezone.now()
    make_delivery(
        alice_hook, at=now, mail_from="carol@example.net", message_id="<wanted@mail.example>"
    )
    make_delivery(
        alice_hook, at=now, mail_from="dave@example.net", message_id="<other@mail.example>"
    )
    make_delivery(bob_hook, at=now, mail_from="erin@example.net", message_id="<bob@mail.example>")
    found = listed(operator_client.get(url, {"q": q}))
    assert len(found) == 1, (url, q, found)
    html = operator_client.get(url, {"q": q}).content.decode()
    assert ("carol@example.net" in html) == (expected == "wanted")


def test_it_shows_a_messages_deliveries_and_every_attempt(operator_client, two_webhooks):
    hook, _ = two_webhooks
    failed = make_delivery(
        hook,
        at=timezone.now(),
        status=Delivery.Status.FAILED,
        attempts=[(503, "HTTP 503 from the target"), (None, "Connection refused")],
    )
    page = operator_client.get(f"/admin/webhooks/inboundmessage/{failed.message_id}/change/")
    html = page.content.decode()
    assert page.status_code == 200
    assert [log.attempt for log in page.context["attempts"]] == [1, 2]
    assert "Every attempt (2)" in html
    assert "HTTP 503 from the target" in html and "Connection refused" in html
    assert f"/admin/webhooks/delivery/{failed.id}/change/" in html  # the deliveries inline


@pytest.mark.parametrize("model", ["deliverylog", "delivery", "inboundmessage"])
def test_it_offers_no_save_on_records_the_service_writes(operator_client, two_webhooks, model):
    hook, _ = two_webhooks
    item = make_delivery(hook, at=timezone.now())
    record_id = {
        "deliverylog": item.logs.get().id,
        "delivery": item.id,
        "inboundmessage": item.message_id,
    }[model]
    url = f"/admin/webhooks/{model}/{record_id}/change/"
    page = operator_client.get(url)
    assert page.status_code == 200
    html = page.content.decode()
    assert 'name="_save"' not in html and 'name="_continue"' not in html
    assert operator_client.post(url, {}).status_code == 403
    assert operator_client.get(f"/admin/webhooks/{model}/add/").status_code == 403


def test_it_redelivers_failed_deliveries_in_bulk_and_skips_those_on_their_way(
    operator_client, two_webhooks, monkeypatch, django_capture_on_commit_callbacks
):
    from webhooks import delivery

    queued = []
    monkeypatch.setattr(delivery, "enqueue", lambda **kw: queued.append(kw["delivery_id"]))
    hook, _ = two_webhooks
    now = timezone.now()
    failed = [
        make_delivery(hook, at=now, status="failed", attempts=[(500, "HTTP 500")]) for _ in range(2)
    ]
    pending = make_delivery(hook, at=now, status="pending", attempts=[])
    with django_capture_on_commit_callbacks(execute=True):
        r = operator_client.post(
            "/admin/webhooks/delivery/",
            {"action": "redeliver", "_selected_action": [str(d.id) for d in [*failed, pending]]},
            follow=True,
        )
    assert [str(m) for m in r.context["messages"]] == [
        "2 deliveries queued again.",
        "Skipped 1 delivery(ies) still pending or being sent: they are already queued.",
    ]
    assert sorted(queued) == sorted(d.id for d in failed)
    assert set(
        Delivery.objects.filter(id__in=[d.id for d in failed]).values_list("status", flat=True)
    ) == {Delivery.Status.PENDING}


def test_it_draws_the_last_24_hours_by_outcome_from_one_query(
    operator_client, two_webhooks, django_assert_num_queries
):
    from webhooks.dashboard import delivery_dashboard

    alice_hook, bob_hook = two_webhooks
    now = timezone.now()
    for hours_ago in (0, 0, 5):
        make_delivery(alice_hook, at=now - timedelta(hours=hours_ago))
    make_delivery(bob_hook, at=now - timedelta(hours=2), status="failed", attempts=[(500, "x")])
    make_delivery(bob_hook, at=now, status="pending", attempts=[(503, "HTTP 503")])  # retrying
    make_delivery(alice_hook, at=now, status="pending", attempts=[])  # waiting
    make_delivery(alice_hook, at=now - timedelta(hours=30), status="failed")  # too old

    with django_assert_num_queries(1):
        dashboard = delivery_dashboard(now=now)

    assert dashboard.totals == {
        "delivered": 3,
        "pending": 1,
        "delivering": 0,
        "retrying": 1,
        "failed": 1,
    }
    assert len(dashboard.bars) == 24
    assert dashboard.bars[-1].counts == {"delivered": 2, "retrying": 1, "pending": 1}
    assert dashboard.bars[-6].counts == {"delivered": 1}
    assert dashboard.bars[-3].counts == {"failed": 1}
    # The tallest bar fills the chart; the others are drawn to its scale.
    assert sum(s.height for s in dashboard.bars[-1].segments) == dashboard.height
    assert dashboard.bars[-6].segments[0].height == dashboard.height / 4
    [failing] = dashboard.failing
    assert (failing.address, failing.failed, failing.retrying) == ("inbox@bob.example", 1, 1)

    html = operator_client.get("/admin/").content.decode()
    assert 'id="delivery-dashboard"' in html
    assert html.count('class="outcome-delivered"') == 2
    assert "Delivered: <strong>3</strong>" in html
    assert "Retrying: <strong>1</strong>" in html
    assert "inbox@bob.example" in html


def test_it_lists_the_failing_webhooks(operator_client, webhook, settings):
    settings.CONDUIT_NOTIFY_FAILING_AFTER = 3
    page = "/admin/webhooks/webhook/"
    assert operator_client.get(f"{page}?failing=yes").context["cl"].result_count == 0
    Webhook.objects.filter(id=webhook.id).update(
        consecutive_failures=3, failing_since=timezone.now()
    )
    assert operator_client.get(f"{page}?failing=yes").context["cl"].result_count == 1
    assert operator_client.get(f"{page}?failing=no").context["cl"].result_count == 0


def test_it_pauses_and_resumes_webhooks_audited(operator_client, webhook):
    page = "/admin/webhooks/webhook/"
    r = operator_client.post(page, {"action": "pause", "_selected_action": [str(webhook.id)]})
    assert r.status_code == 302
    webhook.refresh_from_db()
    assert webhook.paused_at is not None and webhook.active
    assert operator_client.get(f"{page}?paused=yes").context["cl"].result_count == 1
    r = operator_client.post(page, {"action": "resume", "_selected_action": [str(webhook.id)]})
    assert r.status_code == 302
    webhook.refresh_from_db()
    assert webhook.paused_at is None
    entries = AuditLogEntry.objects.filter(action__in=["webhook.paused", "webhook.resumed"])
    assert sorted(e.action for e in entries) == ["webhook.paused", "webhook.resumed"]


def test_a_messages_page_downloads_its_original(operator_client, webhook):
    accept(webhook, raw=RAW)
    message = InboundMessage.objects.get()
    page = operator_client.get(f"/admin/webhooks/inboundmessage/{message.id}/change/")
    raw_url = f"/admin/webhooks/inboundmessage/{message.id}/raw/"
    assert raw_url in page.content.decode()

    response = operator_client.get(raw_url)

    assert response.status_code == 200
    assert response["Content-Type"] == "message/rfc822"
    assert response.content == RAW
    assert Client().get(raw_url).status_code == 302  # to the login page


def test_a_purged_messages_page_says_when_instead_of_offering_it(operator_client, webhook):
    accept(webhook, raw=RAW)
    InboundMessage.objects.update(raw=None, raw_purged_at=timezone.now())
    message = InboundMessage.objects.get()
    page = operator_client.get(f"/admin/webhooks/inboundmessage/{message.id}/change/")
    assert "Original purged at" in page.content.decode()
    assert "Redeliver (same webhook-id)" not in page.content.decode()

    response = operator_client.get(f"/admin/webhooks/inboundmessage/{message.id}/raw/", follow=True)

    assert next(str(m) for m in response.context["messages"]).startswith(
        "The original of this message was purged at "
    )


def test_it_redelivers_a_message_to_every_webhook_audited_per_account(
    operator_client, two_webhooks, monkeypatch, django_capture_on_commit_callbacks
):
    from webhooks import accept as webhook_accept
    from webhooks import delivery

    queued = []
    monkeypatch.setattr(delivery, "enqueue", lambda **kw: queued.append(kw["delivery_id"]))
    alices, bobs = two_webhooks
    stored = webhook_accept.message_accept(
        raw=RAW,
        mail_from="sender@example.net",
        recipients={alices.id: [alices.address], bobs.id: [bobs.address]},
        accounts={alices.id: alices.account_id, bobs.id: bobs.account_id},
        client_ip="192.0.2.10",
        helo="mail.example.net",
        message_id_header="<abc123@example.net>",
    )
    Delivery.objects.update(status=Delivery.Status.FAILED, attempts=10, next_attempt_at=None)
    page = operator_client.get(f"/admin/webhooks/inboundmessage/{stored.message_id}/change/")
    assert "Redeliver (same webhook-id)" in page.content.decode()

    with django_capture_on_commit_callbacks(execute=True):
        r = operator_client.post(
            "/admin/webhooks/inboundmessage/",
            {"action": "redeliver", "_selected_action": [str(stored.message_id)]},
            follow=True,
        )

    assert [str(m) for m in r.context["messages"]] == ["2 deliveries queued again."]
    assert sorted(queued) == sorted(stored.delivery_ids)
    assert set(Delivery.objects.values_list("status", "attempts")) == {("pending", 0)}
    entries = AuditLogEntry.objects.filter(action="message.redelivered")
    assert {e.account_id for e in entries} == {alices.account_id, bobs.account_id}
    assert {e.metadata["operator"] for e in entries} == {"ops@conduit.email"}


# --- Recoveries ----------------------------------------------------------------------


def test_it_recovers_a_webhook_from_its_page_and_shows_the_progress(operator_client, webhook):
    hour_ago = timezone.now() - timedelta(hours=1)
    lost = [
        make_delivery(webhook, at=hour_ago + timedelta(minutes=n), status="failed") for n in (1, 2)
    ]
    page = operator_client.get(f"/admin/webhooks/webhook/{webhook.id}/change/").content.decode()
    form_url = f"/admin/webhooks/webhook/{webhook.id}/recover/"
    assert form_url in page
    assert operator_client.get(form_url).status_code == 200

    r = operator_client.post(
        form_url, {"since": hour_ago.strftime("%Y-%m-%d %H:%M:%S"), "statuses": ["failed"]}
    )

    job = RecoveryJob.objects.get()
    assert r.status_code == 302 and r["Location"] == f"/admin/webhooks/recoveryjob/{job.id}/change/"
    assert (job.webhook_id, job.matched, job.operator) == (webhook.id, 2, "ops@conduit.email")
    entry = AuditLogEntry.objects.get(action="recovery.created")
    assert entry.metadata["operator"] == "ops@conduit.email"
    while recovery.advance(job_id=job.id) is not None:
        pass
    Delivery.objects.filter(id=lost[0].id).update(status="delivered")
    listed = operator_client.get("/admin/webhooks/recoveryjob/").content.decode()
    assert '<td class="field-matched">2</td>' in listed
    assert '<td class="field-queued">2</td>' in listed
    assert '<td class="field-done">1</td>' in listed
    page = operator_client.get(f"/admin/webhooks/webhook/{webhook.id}/change/").content.decode()
    assert "finished" in page and '<td class="field-done">' in page


def test_the_recover_form_says_why_it_cannot_start(operator_client, webhook):
    webhook.paused_at = timezone.now()
    webhook.save()

    r = operator_client.post(
        f"/admin/webhooks/webhook/{webhook.id}/recover/",
        {
            "since": (timezone.now() - timedelta(hours=1)).strftime("%Y-%m-%d %H:%M:%S"),
            "statuses": ["failed"],
        },
    )

    assert r.status_code == 200
    assert "Resume it first" in r.content.decode()
    assert not RecoveryJob.objects.exists()


def test_it_cancels_a_running_recovery(operator_client, webhook):
    make_delivery(webhook, at=timezone.now() - timedelta(minutes=5), status="failed")
    operator_client.post(
        f"/admin/webhooks/webhook/{webhook.id}/recover/",
        {
            "since": (timezone.now() - timedelta(hours=1)).strftime("%Y-%m-%d %H:%M:%S"),
            "statuses": ["failed"],
        },
    )
    job = RecoveryJob.objects.get()

    r = operator_client.post(
        "/admin/webhooks/recoveryjob/", {"action": "cancel", "_selected_action": [str(job.id)]}
    )

    assert r.status_code == 302
    job.refresh_from_db()
    assert job.state == "cancelled" and job.finished_at is not None
    assert (
        AuditLogEntry.objects.get(action="recovery.cancelled").metadata["operator"]
        == "ops@conduit.email"
    )
