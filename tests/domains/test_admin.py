from __future__ import annotations

import pytest

from accounts.models import AuditLogEntry
from domains.models import Domain

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/domains/domain/"


def run_action(client, action, *domains):
    r = client.post(
        CHANGELIST,
        {"action": action, "_selected_action": [str(d.id) for d in domains]},
        follow=True,
    )
    assert r.status_code == 200
    return [str(m) for m in r.context["messages"]]


def test_it_lists_domains_with_owner_and_state(admin_client, alice, bob):
    Domain.objects.create(account=alice, name="alice.example")
    Domain.objects.create(account=bob, name="bob.example", verified=True, is_public=True)

    r = admin_client.get(CHANGELIST, {"is_public__exact": "1"})

    assert r.status_code == 200
    content = r.content.decode()
    assert "bob.example" in content
    assert "bob@example.org" in content
    assert "alice.example" not in content


def test_it_searches_domains_by_owner_email(admin_client, alice, bob):
    Domain.objects.create(account=alice, name="alice.example")
    Domain.objects.create(account=bob, name="bob.example")

    r = admin_client.get(CHANGELIST, {"q": "alice@"})

    assert "alice.example" in r.content.decode()
    assert "bob.example" not in r.content.decode()


def test_it_marks_verified_domains_public_and_skips_the_others(admin_client, alice):
    verified = Domain.objects.create(account=alice, name="verified.example", verified=True)
    unverified = Domain.objects.create(account=alice, name="unverified.example")

    messages = run_action(admin_client, "mark_public", verified, unverified)

    assert messages == [
        "Marked 1 domain(s) public.",
        "Skipped 1 unverified domain(s): verify a domain before making it public.",
    ]
    verified.refresh_from_db()
    unverified.refresh_from_db()
    assert verified.is_public is True
    assert unverified.is_public is False


def test_it_marks_domains_not_public(admin_client, alice):
    domain = Domain.objects.create(account=alice, name="a.example", verified=True, is_public=True)

    messages = run_action(admin_client, "mark_not_public", domain)

    assert messages == ["Marked 1 domain(s) not public."]
    domain.refresh_from_db()
    assert domain.is_public is False


def test_it_verifies_now_and_reports_each_result(admin_client, alice, settings, dns_server):
    settings.CONDUIT_DNS_SERVERS = dns_server.address
    settings.CONDUIT_DNS_TIMEOUT = 0.5
    good = Domain.objects.create(account=alice, name="good.example")
    bad = Domain.objects.create(account=alice, name="bad.example")
    done = Domain.objects.create(account=alice, name="done.example", verified=True)
    dns_server.add_txt("_conduit-verify.good.example", good.verification_token)
    dns_server.add_mx("good.example", 10, settings.CONDUIT_MX_HOST)

    messages = run_action(admin_client, "verify_now", good, bad, done)

    assert "good.example is verified." in messages
    assert "done.example is already verified." in messages
    [failure] = [m for m in messages if m.startswith("Could not verify bad.example.")]
    assert "TXT check failed: No TXT record at _conduit-verify.bad.example" in failure
    good.refresh_from_db()
    bad.refresh_from_db()
    assert good.verified is True
    assert bad.verified is False
    assert AuditLogEntry.objects.filter(account=alice, action="domain.verified").count() == 1


def test_it_shows_no_add_button(admin_client):
    r = admin_client.get(f"{CHANGELIST}add/")

    assert r.status_code == 403
