from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from accounts.models import AuditLogEntry
from accounts.tasks import purge_audit_log

pytestmark = pytest.mark.django_db


def test_it_lists_the_audit_log_newest_first(api, alice, alice_api):
    api.post("/api/v1/sessions", {"email": "alice@example.com", "password": "wrong-pass-x"})
    alice_api.put("/api/v1/accounts/me/timezone", {"timezone": "Asia/Tokyo"})
    r = alice_api.get("/api/v1/accounts/me/audit-log")
    assert r.status_code == 200
    entries = r.json()
    assert [e["action"] for e in entries] == ["account.timezone_changed", "session.sign_in_failed"]
    assert entries[0]["ip"] == "127.0.0.1"
    assert entries[0]["metadata"] == {"old": "UTC", "new": "Asia/Tokyo"}
    assert set(entries[0]) == {"id", "action", "ip", "metadata", "created_at"}
    assert r["X-Total-Count"] == "2"


def test_it_pages_the_audit_log(alice_api, alice):
    for n in range(5):
        AuditLogEntry.objects.create(account=alice, action=f"test.{n}")
    r = alice_api.get("/api/v1/accounts/me/audit-log?page=2&page_size=2")
    assert [e["action"] for e in r.json()] == ["test.2", "test.1"]
    assert r["X-Total-Count"] == "5"
    assert 'rel="next"' in r["Link"] and 'rel="prev"' in r["Link"]
    # Out-of-range paging is clamped (the contract gives listAuditLog no 422).
    r = alice_api.get("/api/v1/accounts/me/audit-log?page_size=500")
    assert r.status_code == 200
    assert len(r.json()) == 5
    assert "page_size=200" in r["Link"]


def test_it_shows_only_the_accounts_own_entries(alice_api, bob):
    AuditLogEntry.objects.create(account=bob, action="bob.secret")
    assert alice_api.get("/api/v1/accounts/me/audit-log").json() == []


def test_it_records_the_forwarded_address_only_from_trusted_proxies(api, alice, settings):
    body = {"email": "alice@example.com", "password": "wrong-pass-x"}
    api.post("/api/v1/sessions", body, HTTP_X_FORWARDED_FOR="203.0.113.9")
    assert AuditLogEntry.objects.get().ip == "127.0.0.1"
    settings.CONDUIT_TRUSTED_PROXIES = ["127.0.0.1"]
    AuditLogEntry.objects.all().delete()
    api.post("/api/v1/sessions", body, HTTP_X_FORWARDED_FOR="203.0.113.9")
    assert AuditLogEntry.objects.get().ip == "203.0.113.9"


def test_it_purges_entries_older_than_180_days(alice):
    old = AuditLogEntry.objects.create(account=alice, action="old")
    recent = AuditLogEntry.objects.create(account=alice, action="recent")
    AuditLogEntry.objects.filter(id=old.id).update(created_at=timezone.now() - timedelta(days=181))
    AuditLogEntry.objects.filter(id=recent.id).update(
        created_at=timezone.now() - timedelta(days=179)
    )
    assert purge_audit_log() == 1
    assert list(AuditLogEntry.objects.values_list("action", flat=True)) == ["recent"]
