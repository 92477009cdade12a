from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from accounts.models import ApiToken, AuditLogEntry
from tests.accounts.test_sessions import bearer

pytestmark = pytest.mark.django_db


def create(client, **body):
    body.setdefault("name", "deploy")
    return client.post("/api/v1/accounts/me/api-tokens", body, format="json")


def test_it_creates_a_token_shown_once(alice_api, alice):
    r = create(alice_api, expires_in=3600, allowed_ips=["10.0.0.0/8", "192.0.2.1"])
    assert r.status_code == 201
    body = r.json()
    assert body["token"].startswith("cdt_")
    assert len(body["token"]) > 40
    assert body["allowed_ips"] == ["10.0.0.0/8", "192.0.2.1"]
    assert body["last_used_at"] is None
    assert body["expires_at"] is not None
    stored = ApiToken.objects.get(id=body["id"])
    assert body["token"] != stored.token_hash
    listed = alice_api.get("/api/v1/accounts/me/api-tokens").json()
    assert len(listed) == 1
    assert listed[0]["token"] != body["token"]
    assert listed[0]["token"].startswith(body["token"][:8])
    assert listed[0]["token"].endswith("****")
    assert AuditLogEntry.objects.filter(account=alice, action="api_token.created").exists()


def test_it_authenticates_with_a_token_and_tracks_last_use(alice_api, alice):
    token = create(alice_api).json()["token"]
    r = bearer(token).get("/api/v1/accounts/me")
    assert r.status_code == 200
    assert r.json()["email"] == "alice@example.com"
    first = ApiToken.objects.get().last_used_at
    assert first is not None
    # A second request within the minute does not write again.
    bearer(token).get("/api/v1/accounts/me")
    assert ApiToken.objects.get().last_used_at == first
    ApiToken.objects.update(last_used_at=timezone.now() - timedelta(minutes=5))
    bearer(token).get("/api/v1/accounts/me")
    assert ApiToken.objects.get().last_used_at > first - timedelta(seconds=1)


def test_it_refuses_an_expired_token(alice_api):
    token = create(alice_api, expires_in=60).json()["token"]
    ApiToken.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    r = bearer(token).get("/api/v1/accounts/me")
    assert r.status_code == 401
    assert r.json()["code"] == "unauthorized"


def test_it_refuses_a_token_used_from_a_disallowed_ip(alice_api):
    token = create(alice_api, allowed_ips=["192.0.2.0/24"]).json()["token"]
    assert bearer(token).get("/api/v1/accounts/me").status_code == 401
    r = bearer(token).get("/api/v1/accounts/me", REMOTE_ADDR="192.0.2.44")
    assert r.status_code == 200


def test_it_ignores_x_forwarded_for_by_default(alice_api):
    token = create(alice_api, allowed_ips=["192.0.2.0/24"]).json()["token"]
    r = bearer(token).get("/api/v1/accounts/me", HTTP_X_FORWARDED_FOR="192.0.2.44")
    assert r.status_code == 401


def test_it_honours_x_forwarded_for_from_a_trusted_proxy(alice_api, settings):
    settings.CONDUIT_TRUSTED_PROXIES = ["127.0.0.0/8"]
    token = create(alice_api, allowed_ips=["192.0.2.0/24"]).json()["token"]
    r = bearer(token).get("/api/v1/accounts/me", HTTP_X_FORWARDED_FOR="192.0.2.44, 127.0.0.5")
    assert r.status_code == 200


@pytest.mark.parametrize(
    "body,field",
    [
        ({"allowed_ips": ["not-an-ip"]}, "allowed_ips"),
        ({"allowed_ips": ["10.0.0.0/33"]}, "allowed_ips"),
        ({"expires_in": 0}, "expires_in"),
        ({"expires_in": -5}, "expires_in"),
        ({"name": ""}, "name"),
    ],
)
def test_it_refuses_bad_token_input(alice_api, body, field):
    r = create(alice_api, **body)
    assert r.status_code == 422
    assert r.json()["code"] == "validation_error"
    assert field in r.json()["details"]
    assert not ApiToken.objects.exists()


def test_it_revokes_a_token(alice_api, alice):
    created = create(alice_api).json()
    r = alice_api.delete(f"/api/v1/accounts/me/api-tokens/{created['id']}")
    assert r.status_code == 204
    assert bearer(created["token"]).get("/api/v1/accounts/me").status_code == 401
    assert AuditLogEntry.objects.filter(account=alice, action="api_token.revoked").exists()


class DeleteFails(Exception):
    pass


def test_it_writes_no_revocation_entry_for_a_token_that_was_not_deleted(
    alice_api, alice, monkeypatch
):
    created = create(alice_api).json()

    def delete_fails(*args, **kwargs):
        raise DeleteFails

    monkeypatch.setattr(ApiToken, "delete", delete_fails)

    r = alice_api.delete(f"/api/v1/accounts/me/api-tokens/{created['id']}")

    assert r.status_code == 500
    assert not AuditLogEntry.objects.filter(account=alice, action="api_token.revoked").exists()
    assert bearer(created["token"]).get("/api/v1/accounts/me").status_code == 200


def test_it_answers_404_for_another_accounts_token(alice_api, bob_api):
    created = create(bob_api).json()
    r = alice_api.delete(f"/api/v1/accounts/me/api-tokens/{created['id']}")
    assert r.status_code == 404
    assert r.json()["code"] == "not_found"
    assert ApiToken.objects.filter(id=created["id"]).exists()
    assert alice_api.get("/api/v1/accounts/me/api-tokens").json() == []
