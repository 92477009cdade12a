from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import override_settings
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.models import AuditLogEntry, AuthSession

pytestmark = pytest.mark.django_db


def sign_in(api, email="alice@example.com", password="correct-horse-battery-9", **extra):
    return api.post("/api/v1/sessions", {"email": email, "password": password}, **extra)


def bearer(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


def test_it_signs_in(api, alice):
    r = sign_in(api)
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"access_token", "refresh_token", "expires_in"}
    assert body["expires_in"] == 900
    assert body["access_token"].startswith("cda_")
    assert body["refresh_token"].startswith("cdr_")
    # Only hashes are stored.
    session = AuthSession.objects.get(account=alice)
    assert body["access_token"] not in (session.access_token_hash, session.refresh_token_hash)
    assert bearer(body["access_token"]).get("/api/v1/accounts/me").status_code == 200
    assert AuditLogEntry.objects.filter(account=alice, action="session.signed_in").exists()


def test_it_signs_in_with_the_email_in_another_case(api, alice):
    assert sign_in(api, email="Alice@Example.com").status_code == 200


def test_it_gives_the_same_answer_for_a_wrong_password_and_an_unknown_email(api, alice):
    wrong = sign_in(api, password="wrong-password-1")
    unknown = sign_in(api, email="nobody@example.com")
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json()
    assert wrong.json()["code"] == "unauthorized"
    assert AuditLogEntry.objects.filter(account=alice, action="session.sign_in_failed").exists()


def test_it_answers_401_to_missing_credentials(api):
    r = api.post("/api/v1/sessions", {"email": "alice@example.com"})
    assert r.status_code == 401
    assert r.json()["code"] == "unauthorized"


def test_it_throttles_the_11th_rapid_wrong_password(api, alice):
    for _ in range(10):
        assert sign_in(api, password="wrong-password-1").status_code == 401
    r = sign_in(api, password="wrong-password-1")
    assert r.status_code == 429
    assert r.json()["code"] == "rate_limited"
    assert 1 <= int(r["Retry-After"]) <= 900
    # Even the right password waits until the window ends.
    assert sign_in(api).status_code == 429


@override_settings(CONDUIT_SIGNIN_MAX_FAILURES_PER_IP=3)
def test_it_throttles_failures_per_address(api, alice, bob):
    for email in ["x@example.com", "y@example.com", "z@example.com"]:
        assert sign_in(api, email=email).status_code == 401
    r = sign_in(api, email="bob@example.org")
    assert r.status_code == 429
    # Another address is not affected.
    assert sign_in(api, email="bob@example.org", REMOTE_ADDR="192.0.2.7").status_code == 200


def test_it_refreshes_and_rotates(api, alice):
    first = sign_in(api).json()
    r = api.post("/api/v1/sessions/refresh", {"refresh_token": first["refresh_token"]})
    assert r.status_code == 200
    second = r.json()
    assert second["refresh_token"] != first["refresh_token"]
    assert bearer(second["access_token"]).get("/api/v1/accounts/me").status_code == 200
    # The old refresh token stops working.
    r = api.post("/api/v1/sessions/refresh", {"refresh_token": first["refresh_token"]})
    assert r.status_code == 401


def test_it_revokes_the_chain_when_a_rotated_refresh_token_is_reused(api, alice):
    first = sign_in(api).json()
    second = api.post("/api/v1/sessions/refresh", {"refresh_token": first["refresh_token"]}).json()
    third = api.post("/api/v1/sessions/refresh", {"refresh_token": second["refresh_token"]}).json()
    # An attacker replays the first one.
    r = api.post("/api/v1/sessions/refresh", {"refresh_token": first["refresh_token"]})
    assert r.status_code == 401
    assert r.json()["code"] == "unauthorized"
    # The legitimate latest tokens are dead too.
    assert bearer(third["access_token"]).get("/api/v1/accounts/me").status_code == 401
    r = api.post("/api/v1/sessions/refresh", {"refresh_token": third["refresh_token"]})
    assert r.status_code == 401
    assert AuditLogEntry.objects.filter(action="session.refresh_token_reused").exists()


def test_it_leaves_other_chains_alone_on_reuse(api, alice):
    other = sign_in(api).json()
    first = sign_in(api).json()
    api.post("/api/v1/sessions/refresh", {"refresh_token": first["refresh_token"]})
    api.post("/api/v1/sessions/refresh", {"refresh_token": first["refresh_token"]})
    assert bearer(other["access_token"]).get("/api/v1/accounts/me").status_code == 200


def test_it_refuses_an_expired_refresh_token(api, alice):
    tokens = sign_in(api).json()
    AuthSession.objects.update(refresh_expires_at=timezone.now() - timedelta(seconds=1))
    r = api.post("/api/v1/sessions/refresh", {"refresh_token": tokens["refresh_token"]})
    assert r.status_code == 401
    assert r.json()["code"] == "unauthorized"


def test_it_refuses_a_revoked_refresh_token(api, alice):
    tokens = sign_in(api).json()
    bearer(tokens["access_token"]).delete("/api/v1/sessions")
    r = api.post("/api/v1/sessions/refresh", {"refresh_token": tokens["refresh_token"]})
    assert r.status_code == 401


def test_it_refuses_an_unknown_refresh_token(api):
    r = api.post("/api/v1/sessions/refresh", {"refresh_token": "cdr_made-up"})
    assert r.status_code == 401


def test_it_refuses_an_expired_access_token(api, alice):
    tokens = sign_in(api).json()
    AuthSession.objects.update(access_expires_at=timezone.now() - timedelta(seconds=1))
    assert bearer(tokens["access_token"]).get("/api/v1/accounts/me").status_code == 401


@override_settings(CONDUIT_ACCESS_TOKEN_TTL=60)
def test_it_takes_token_lifetimes_from_settings(api, alice):
    assert sign_in(api).json()["expires_in"] == 60
    session = AuthSession.objects.get()
    assert 55 <= (session.access_expires_at - timezone.now()).total_seconds() <= 60


def test_it_signs_out(api, alice):
    tokens = sign_in(api).json()
    client = bearer(tokens["access_token"])
    assert client.delete("/api/v1/sessions").status_code == 204
    r = client.get("/api/v1/accounts/me")
    assert r.status_code == 401
    assert r.json()["code"] == "unauthorized"
    r = api.post("/api/v1/sessions/refresh", {"refresh_token": tokens["refresh_token"]})
    assert r.status_code == 401
    assert AuditLogEntry.objects.filter(account=alice, action="session.signed_out").exists()


def test_it_needs_auth_to_sign_out(api):
    assert api.delete("/api/v1/sessions").status_code == 401


def test_it_refuses_a_malformed_authorization_header(api, alice):
    api.credentials(HTTP_AUTHORIZATION="Bearer ")
    assert api.get("/api/v1/accounts/me").status_code == 401
    api.credentials(HTTP_AUTHORIZATION="Bearer cda_not-a-real-token")
    assert api.get("/api/v1/accounts/me").status_code == 401
