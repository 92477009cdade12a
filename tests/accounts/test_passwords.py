from __future__ import annotations

import re
import time
from datetime import timedelta

import pytest
from django.core import mail
from django.test import override_settings
from django.utils import timezone

from accounts.models import ApiToken, AuditLogEntry, AuthSession, PasswordResetToken
from tests.accounts.test_sessions import bearer, sign_in
from tests.conftest import client_for

pytestmark = pytest.mark.django_db(transaction=True)

NEW_PASSWORD = "a-brand-new-passphrase"


def test_it_changes_the_password_and_revokes_other_sessions(api, alice, password):
    other = sign_in(api).json()
    current = client_for(alice)
    current.post("/api/v1/accounts/me/api-tokens", {"name": "ci"})
    r = current.put(
        "/api/v1/accounts/me/password",
        {"current_password": password, "new_password": NEW_PASSWORD},
    )
    assert r.status_code == 204
    alice.refresh_from_db()
    assert alice.check_password(NEW_PASSWORD)
    assert current.get("/api/v1/accounts/me").status_code == 200
    assert bearer(other["access_token"]).get("/api/v1/accounts/me").status_code == 401
    # Tokens survive unless asked.
    assert ApiToken.objects.filter(account=alice).count() == 1
    assert AuditLogEntry.objects.filter(account=alice, action="password.changed").exists()


def test_it_revokes_api_tokens_on_request(alice, password):
    client = client_for(alice)
    token = client.post("/api/v1/accounts/me/api-tokens", {"name": "ci"}).json()["token"]
    r = client.put(
        "/api/v1/accounts/me/password",
        {"current_password": password, "new_password": NEW_PASSWORD, "revoke_api_tokens": True},
    )
    assert r.status_code == 204
    assert not ApiToken.objects.filter(account=alice).exists()
    assert bearer(token).get("/api/v1/accounts/me").status_code == 401


def test_it_refuses_a_wrong_current_password(alice_api, alice, password):
    r = alice_api.put(
        "/api/v1/accounts/me/password",
        {"current_password": "not-the-password", "new_password": NEW_PASSWORD},
    )
    assert r.status_code == 401
    alice.refresh_from_db()
    assert alice.check_password(password)


def test_it_refuses_a_weak_new_password(alice_api, alice, password):
    r = alice_api.put(
        "/api/v1/accounts/me/password", {"current_password": password, "new_password": "abc"}
    )
    assert r.status_code == 422
    assert "new_password" in r.json()["details"]


def _request_reset(api, email="alice@example.com"):
    """Ask for a reset and wait for the worker to have sent its mail."""
    sent = len(mail.outbox)
    r = api.post("/api/v1/accounts/me/password-reset", {"email": email})
    assert r.status_code == 202
    deadline = time.monotonic() + 20
    while len(mail.outbox) == sent:
        assert time.monotonic() < deadline, "the worker sent no reset mail"
        time.sleep(0.02)
    return r


def _token_from_mail() -> str:
    assert len(mail.outbox) == 1
    match = re.search(r"cdp_[A-Za-z0-9_-]+", mail.outbox[0].body)
    assert match
    return match.group(0)


def test_it_emails_a_reset_token_and_resets(api, alice, mail_worker):
    other = sign_in(api).json()
    _request_reset(api, email="ALICE@example.com")
    message = mail.outbox[0]
    assert message.to == ["alice@example.com"]
    assert "Reset your Conduit password" in message.subject
    token = _token_from_mail()
    r = api.put(
        "/api/v1/accounts/me/password-reset", {"token": token, "new_password": NEW_PASSWORD}
    )
    assert r.status_code == 204
    alice.refresh_from_db()
    assert alice.check_password(NEW_PASSWORD)
    assert bearer(other["access_token"]).get("/api/v1/accounts/me").status_code == 401
    assert AuditLogEntry.objects.filter(account=alice, action="password.reset").exists()


def test_it_answers_202_for_an_unknown_address_and_sends_nothing(api, alice, mail_worker):
    r = api.post("/api/v1/accounts/me/password-reset", {"email": "nobody@example.com"})
    assert r.status_code == 202
    # The one worker takes tasks in order: once alice's mail is out, the
    # unknown address's task has run too.
    _request_reset(api, email="alice@example.com")
    assert [message.to for message in mail.outbox] == [["alice@example.com"]]
    assert not AuditLogEntry.objects.filter(metadata__email="nobody@example.com").exists()


def test_it_answers_202_even_to_a_malformed_request(api):
    r = api.post("/api/v1/accounts/me/password-reset", {})
    assert r.status_code == 202


def test_it_refuses_a_used_reset_token(api, alice, mail_worker):
    _request_reset(api)
    token = _token_from_mail()
    body = {"token": token, "new_password": NEW_PASSWORD}
    assert api.put("/api/v1/accounts/me/password-reset", body).status_code == 204
    r = api.put(
        "/api/v1/accounts/me/password-reset", {"token": token, "new_password": "yet-another-pass"}
    )
    assert r.status_code == 401
    assert r.json()["code"] == "unauthorized"


def test_it_refuses_an_expired_reset_token(api, alice, password, mail_worker):
    _request_reset(api)
    token = _token_from_mail()
    PasswordResetToken.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    r = api.put(
        "/api/v1/accounts/me/password-reset", {"token": token, "new_password": NEW_PASSWORD}
    )
    assert r.status_code == 401
    alice.refresh_from_db()
    assert alice.check_password(password)


@override_settings(CONDUIT_PASSWORD_RESET_TTL=600)
def test_it_takes_the_reset_lifetime_from_settings(api, alice, mail_worker):
    _request_reset(api)
    reset = PasswordResetToken.objects.get()
    assert 590 <= (reset.expires_at - timezone.now()).total_seconds() <= 600


def test_it_refuses_a_weak_password_on_reset_and_keeps_the_token(api, alice, mail_worker):
    _request_reset(api)
    token = _token_from_mail()
    r = api.put("/api/v1/accounts/me/password-reset", {"token": token, "new_password": "abc"})
    assert r.status_code == 422
    r = api.put(
        "/api/v1/accounts/me/password-reset", {"token": token, "new_password": NEW_PASSWORD}
    )
    assert r.status_code == 204


def test_it_keeps_only_the_hash_of_a_reset_token(api, alice, mail_worker):
    _request_reset(api)
    token = _token_from_mail()
    assert not PasswordResetToken.objects.filter(token_hash=token).exists()
    assert AuthSession.objects.count() == 0
