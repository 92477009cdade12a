from __future__ import annotations

import pytest

from accounts.models import Account, AuditLogEntry
from tests.conftest import client_for

pytestmark = pytest.mark.django_db


def test_it_signs_up(api):
    r = api.post(
        "/api/v1/accounts", {"email": "New.User@Example.COM", "password": "a-long-pass-phrase"}
    )
    assert r.status_code == 201
    body = r.json()
    assert body["email"] == "new.user@example.com"
    assert body["timezone"] == "UTC"
    assert set(body) == {"id", "email", "timezone", "created_at", "updated_at"}
    assert body["created_at"].endswith("Z")
    account = Account.objects.get(id=body["id"])
    assert account.check_password("a-long-pass-phrase")
    assert AuditLogEntry.objects.filter(account=account, action="account.created").exists()


def test_it_refuses_a_duplicate_email_in_another_case(api, alice):
    r = api.post("/api/v1/accounts", {"email": "ALICE@example.com", "password": "another-pass-9"})
    assert r.status_code == 409
    assert r.json()["code"] == "conflict"
    assert Account.objects.count() == 1


@pytest.mark.parametrize("password", ["short", "password123", "1234567890123", ""])
def test_it_refuses_a_weak_password(api, password):
    r = api.post("/api/v1/accounts", {"email": "dan@example.com", "password": password})
    assert r.status_code == 422
    body = r.json()
    assert body["code"] == "validation_error"
    assert "password" in body["details"]
    assert not Account.objects.exists()


def test_it_refuses_a_missing_password(api):
    r = api.post("/api/v1/accounts", {"email": "dan@example.com"})
    assert r.status_code == 422
    assert r.json()["details"]["password"]


@pytest.mark.parametrize("email", ["not-an-email", "a@", "@example.com", ""])
def test_it_refuses_a_bad_email(api, email):
    r = api.post("/api/v1/accounts", {"email": email, "password": "a-long-pass-phrase"})
    assert r.status_code == 422
    assert r.json()["code"] == "validation_error"
    assert "email" in r.json()["details"]


def test_it_gets_the_current_account(alice_api, alice):
    r = alice_api.get("/api/v1/accounts/me")
    assert r.status_code == 200
    assert r.json()["id"] == str(alice.id)
    assert r.json()["email"] == "alice@example.com"


def test_it_requires_auth_for_the_current_account(api):
    r = api.get("/api/v1/accounts/me")
    assert r.status_code == 401
    assert r.json()["code"] == "unauthorized"


def test_it_updates_the_timezone(alice_api, alice):
    r = alice_api.put("/api/v1/accounts/me/timezone", {"timezone": "Europe/Paris"})
    assert r.status_code == 204
    alice.refresh_from_db()
    assert alice.timezone == "Europe/Paris"


def test_it_refuses_an_unknown_timezone(alice_api, alice):
    r = alice_api.put("/api/v1/accounts/me/timezone", {"timezone": "Mars/Olympus_Mons"})
    assert r.status_code == 422
    assert r.json()["code"] == "validation_error"
    assert "timezone" in r.json()["details"]
    alice.refresh_from_db()
    assert alice.timezone == "UTC"


def test_it_deletes_the_account(alice_api, alice, password):
    r = alice_api.delete("/api/v1/accounts/me", {"confirm": True, "password": password})
    assert r.status_code == 204
    assert not Account.objects.filter(id=alice.id).exists()


def test_it_refuses_delete_without_confirm(alice_api, alice, password):
    r = alice_api.delete("/api/v1/accounts/me", {"password": password})
    assert r.status_code == 422
    assert "confirm" in r.json()["details"]
    r = alice_api.delete("/api/v1/accounts/me", {"confirm": False, "password": password})
    assert r.status_code == 422
    assert r.json()["code"] == "validation_error"
    assert Account.objects.filter(id=alice.id).exists()


def test_it_refuses_delete_with_a_wrong_password(alice_api, alice):
    r = alice_api.delete("/api/v1/accounts/me", {"confirm": True, "password": "not-it-at-all"})
    assert r.status_code == 401
    assert r.json()["code"] == "unauthorized"
    assert Account.objects.filter(id=alice.id).exists()


def test_it_deletes_only_its_own_account(alice, bob, password):
    client_for(alice).delete("/api/v1/accounts/me", {"confirm": True, "password": password})
    assert Account.objects.filter(id=bob.id).exists()
