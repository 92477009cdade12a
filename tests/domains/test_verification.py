"""verifyDomain against the real loopback DNS server (tests/dnsserver.py)."""

from __future__ import annotations

import pytest

from accounts.models import AuditLogEntry
from domains.models import Domain

pytestmark = pytest.mark.django_db

MX_HOST = "mx.conduit.email"


@pytest.fixture(autouse=True)
def _dns_settings(settings, dns_server):
    settings.CONDUIT_DNS_SERVERS = dns_server.address
    settings.CONDUIT_DNS_TIMEOUT = 0.5
    settings.CONDUIT_MX_HOST = MX_HOST


@pytest.fixture
def domain(alice):
    return Domain.objects.create(account=alice, name="example.com")


def verify(client, domain):
    return client.post(f"/api/v1/domains/{domain.id}/verify")


def publish(dns_server, domain, *, mx_priority=10, mx_host=MX_HOST):
    dns_server.add_txt(f"_conduit-verify.{domain.name}", domain.verification_token)
    dns_server.add_mx(domain.name, mx_priority, mx_host)


def assert_verification_failed(response, checks):
    assert response.status_code == 422, response.content
    body = response.json()
    assert body["code"] == "verification_failed"
    assert body["error"].startswith("Could not verify example.com.")
    assert sorted(body["details"]) == sorted(checks)
    for check in checks:
        assert f"{check.upper()} check failed: " in body["error"]
        assert len(body["details"][check]) == 1
    return body


# --- success -------------------------------------------------------------------------


def test_it_verifies_a_domain_with_the_right_records(alice_api, alice, domain, dns_server):
    publish(dns_server, domain)

    r = verify(alice_api, domain)

    assert r.status_code == 200
    assert r.json()["verified"] is True
    assert r.json()["id"] == str(domain.id)
    domain.refresh_from_db()
    assert domain.verified is True
    assert domain.verified_at is not None
    assert {(q.name, q.qtype) for q in dns_server.queries} == {
        ("_conduit-verify.example.com", "TXT"),
        ("example.com", "MX"),
    }
    entry = AuditLogEntry.objects.get(account=alice, action="domain.verified")
    assert entry.metadata == {
        "domain_id": str(domain.id),
        "name": "example.com",
        "claims_removed": 0,
    }


def test_it_finds_the_token_among_several_txt_records(alice_api, domain, dns_server):
    dns_server.add_txt("_conduit-verify.example.com", "google-site-verification=abc")
    dns_server.add_txt("_conduit-verify.example.com", domain.verification_token)
    dns_server.add_txt("_conduit-verify.example.com", "conduit-verify=someone-elses")
    dns_server.add_mx("example.com", 10, MX_HOST)

    r = verify(alice_api, domain)

    assert r.status_code == 200
    assert r.json()["verified"] is True


def test_it_ignores_case_and_trailing_dots_of_mx_hosts(alice_api, domain, dns_server, settings):
    settings.CONDUIT_MX_HOST = "mx.conduit.email."
    publish(dns_server, domain, mx_host="MX.Conduit.EMAIL.")

    r = verify(alice_api, domain)

    assert r.status_code == 200
    assert r.json()["verified"] is True


def test_it_accepts_the_right_mx_among_others(alice_api, domain, dns_server):
    dns_server.add_mx("example.com", 5, "mx.previous-provider.net")
    publish(dns_server, domain)

    assert verify(alice_api, domain).status_code == 200


def test_it_checks_the_configured_mx_host(alice_api, domain, dns_server, settings):
    settings.CONDUIT_MX_HOST = "mx.self-hosted.example"
    publish(dns_server, domain)

    r = verify(alice_api, domain)

    body = assert_verification_failed(r, ["mx"])
    assert "expected mx.self-hosted.example (priority 10)" in body["error"]


def test_it_removes_other_accounts_claims_of_the_name(alice_api, alice, bob, charlie, dns_server):
    bobs = Domain.objects.create(account=bob, name="example.com")
    bobs_other = Domain.objects.create(account=bob, name="other.example")
    charlies = Domain.objects.create(account=charlie, name="example.com")
    domain = Domain.objects.create(account=alice, name="example.com")
    publish(dns_server, domain)

    r = verify(alice_api, domain)

    assert r.status_code == 200
    assert list(Domain.objects.filter(name="example.com")) == [domain]
    assert not Domain.objects.filter(id__in=[bobs.id, charlies.id]).exists()
    assert Domain.objects.filter(id=bobs_other.id).exists()
    verified = AuditLogEntry.objects.get(account=alice, action="domain.verified")
    assert verified.metadata["claims_removed"] == 2
    removed = AuditLogEntry.objects.get(account=bob, action="domain.claim_removed")
    assert removed.metadata == {
        "domain_id": str(bobs.id),
        "name": "example.com",
        "reason": "verified by another account",
    }
    assert removed.ip is None


def test_it_returns_a_verified_domain_without_looking_it_up_again(alice_api, alice, dns_server):
    domain = Domain.objects.create(account=alice, name="example.com", verified=True)

    r = verify(alice_api, domain)

    assert r.status_code == 200
    assert r.json()["verified"] is True
    assert dns_server.queries == []


# --- failures -------------------------------------------------------------------------


def test_it_reports_nxdomain(alice_api, alice, domain):
    r = verify(alice_api, domain)

    body = assert_verification_failed(r, ["txt", "mx"])
    token = domain.verification_token
    assert body["details"]["txt"] == [
        "No TXT record at _conduit-verify.example.com (NXDOMAIN); "
        f"expected a TXT record with value {token}"
    ]
    assert body["details"]["mx"] == [
        "No MX record for example.com (NXDOMAIN); expected mx.conduit.email (priority 10)"
    ]
    assert body["error"] == (
        "Could not verify example.com. TXT check failed: No TXT record at "
        "_conduit-verify.example.com (NXDOMAIN); expected a TXT record with value "
        f"{token}. MX check failed: No MX record for example.com (NXDOMAIN); expected "
        "mx.conduit.email (priority 10)."
    )
    domain.refresh_from_db()
    assert domain.verified is False
    assert domain.verified_at is None
    entry = AuditLogEntry.objects.get(account=alice, action="domain.verification_failed")
    assert entry.metadata == {
        "domain_id": str(domain.id),
        "name": "example.com",
        "failures": ["txt:nxdomain", "mx:nxdomain"],
    }


def test_it_reports_names_without_the_records(alice_api, domain, dns_server):
    dns_server.add_a("example.com", "192.0.2.1")
    dns_server.add_a("_conduit-verify.example.com", "192.0.2.1")

    r = verify(alice_api, domain)

    body = assert_verification_failed(r, ["txt", "mx"])
    assert body["details"]["txt"] == [
        "No TXT record at _conduit-verify.example.com; "
        f"expected a TXT record with value {domain.verification_token}"
    ]
    assert body["details"]["mx"] == [
        "No MX record for example.com; expected mx.conduit.email (priority 10)"
    ]


def test_it_reports_a_wrong_txt_value(alice_api, domain, dns_server):
    dns_server.add_txt("_conduit-verify.example.com", "conduit-verify=stale-token")
    dns_server.add_mx("example.com", 10, MX_HOST)

    r = verify(alice_api, domain)

    body = assert_verification_failed(r, ["txt"])
    assert body["details"]["txt"] == [
        'TXT record at _conduit-verify.example.com has value "conduit-verify=stale-token"; '
        f"expected a TXT record with value {domain.verification_token}"
    ]


def test_it_reports_a_wrong_mx_host(alice_api, domain, dns_server):
    publish(dns_server, domain, mx_host="mx.other.net")

    r = verify(alice_api, domain)

    body = assert_verification_failed(r, ["mx"])
    assert body["details"]["mx"] == [
        "MX record for example.com points to mx.other.net (priority 10); "
        "expected mx.conduit.email (priority 10)"
    ]


def test_it_reports_a_wrong_mx_priority(alice_api, domain, dns_server):
    publish(dns_server, domain, mx_priority=20)

    r = verify(alice_api, domain)

    body = assert_verification_failed(r, ["mx"])
    assert body["details"]["mx"] == [
        "MX record for example.com points to mx.conduit.email with priority 20; "
        "expected priority 10"
    ]


def test_it_reports_a_dns_timeout(alice_api, domain, dns_server):
    dns_server.set_timeout("_conduit-verify.example.com")
    dns_server.set_timeout("example.com")

    r = verify(alice_api, domain)

    body = assert_verification_failed(r, ["txt", "mx"])
    assert body["details"]["txt"] == [
        "DNS lookup of _conduit-verify.example.com (TXT) timed out after 0.5 s; try again later"
    ]
    assert body["details"]["mx"] == [
        "DNS lookup of example.com (MX) timed out after 0.5 s; try again later"
    ]
    domain.refresh_from_db()
    assert domain.verified is False


def test_it_leaves_other_claims_alone_when_verification_fails(alice_api, bob, domain):
    bobs = Domain.objects.create(account=bob, name="example.com")

    assert verify(alice_api, domain).status_code == 422

    assert Domain.objects.filter(id=bobs.id).exists()


# --- ownership -----------------------------------------------------------------------


@pytest.mark.parametrize("is_public", [False, True])
def test_it_refuses_to_verify_another_accounts_domain(alice_api, bob, dns_server, is_public):
    bobs = Domain.objects.create(
        account=bob, name="example.com", verified=is_public, is_public=is_public
    )

    r = verify(alice_api, bobs)

    assert r.status_code == 404
    assert r.json()["code"] == "not_found"
    assert dns_server.queries == []


def test_it_refuses_to_verify_a_claim_taken_by_another_account(alice_api, bob, domain, dns_server):
    # Alice's claim raced Bob's verification, so it outlived it.
    Domain.objects.create(account=bob, name="example.com", verified=True)
    publish(dns_server, domain)

    r = verify(alice_api, domain)

    assert r.status_code == 422
    assert r.json()["code"] == "verification_failed"
    assert r.json()["error"] == "example.com is already verified by another account."
    domain.refresh_from_db()
    assert domain.verified is False
