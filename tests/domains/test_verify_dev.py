"""manage.py domain_verify_dev: a development domain verified without DNS, audited."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from accounts.models import AuditLogEntry
from domains.models import Domain

pytestmark = pytest.mark.django_db


def run(*args: str) -> str:
    out = StringIO()
    call_command("domain_verify_dev", *args, stdout=out)
    return out.getvalue()


def test_it_claims_and_verifies_a_domain_in_development(settings, alice):
    settings.DEBUG = True
    out = run("Example.TEST", "--account", "Alice@Example.com")
    domain = Domain.objects.get(account=alice, name="example.test")
    assert domain.verified
    assert domain.verified_at is not None
    assert "Claimed example.test for alice@example.com." in out
    assert f"Verified example.test for alice@example.com without DNS (domain id {domain.id})" in out
    entry = AuditLogEntry.objects.get(account=alice, action="domain.verified_without_dns")
    assert entry.metadata == {
        "domain_id": str(domain.id),
        "name": "example.test",
        "claims_removed": 0,
        "reason": "development domain, verified with manage.py domain_verify_dev",
    }
    assert AuditLogEntry.objects.filter(account=alice, action="domain.claimed").count() == 1


def test_it_verifies_an_existing_claim_and_removes_the_others(settings, alice, bob):
    settings.DEBUG = True
    mine = Domain.objects.create(account=alice, name="example.test")
    Domain.objects.create(account=bob, name="example.test")
    run("example.test", "--account", "alice@example.com")
    mine.refresh_from_db()
    assert mine.verified
    assert list(Domain.objects.filter(name="example.test")) == [mine]
    assert AuditLogEntry.objects.filter(account=bob, action="domain.claim_removed").exists()


def test_it_says_when_the_domain_is_already_verified(settings, alice):
    settings.DEBUG = True
    Domain.objects.create(account=alice, name="example.test", verified=True)
    out = run("example.test", "--account", "alice@example.com")
    assert out.strip() == "example.test is already verified for alice@example.com."
    assert not AuditLogEntry.objects.filter(action="domain.verified_without_dns").exists()


def test_it_is_refused_in_production(settings, alice):
    settings.DEBUG = False
    with pytest.raises(CommandError) as refused:
        run("example.test", "--account", "alice@example.com")
    assert str(refused.value).startswith("Refused: DEBUG is off, so this is taken for a production")
    assert "--force" in str(refused.value)
    assert not Domain.objects.filter(name="example.test").exists()


def test_force_verifies_in_production_and_says_so_in_the_audit_log(settings, alice):
    settings.DEBUG = False
    run("example.test", "--account", "alice@example.com", "--force")
    assert Domain.objects.get(name="example.test").verified
    entry = AuditLogEntry.objects.get(account=alice, action="domain.verified_without_dns")
    assert entry.metadata["reason"].endswith("--force (DEBUG off)")


def test_it_names_an_unknown_account(settings, db):
    settings.DEBUG = True
    with pytest.raises(CommandError) as refused:
        run("example.test", "--account", "nobody@example.com")
    assert str(refused.value) == (
        "No account has the email nobody@example.com. Sign up first (POST /api/v1/accounts), "
        "then run this again."
    )


def test_it_refuses_a_domain_verified_by_another_account(settings, alice, bob):
    settings.DEBUG = True
    Domain.objects.create(account=bob, name="example.test", verified=True)
    with pytest.raises(CommandError) as refused:
        run("example.test", "--account", "alice@example.com")
    assert (
        str(refused.value) == "example.test is verified by another account and cannot be claimed."
    )


def test_it_refuses_what_is_not_a_domain_name(settings, alice):
    settings.DEBUG = True
    with pytest.raises(CommandError) as refused:
        run("localhost", "--account", "alice@example.com")
    assert str(refused.value).startswith("'localhost' is not a domain name: ")
