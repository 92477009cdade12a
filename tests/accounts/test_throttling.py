"""Failed sign-ins and 2FA codes: who gets throttled, and what happens with the cache down."""

from __future__ import annotations

import logging
import time

import pytest
from django.core.cache import cache
from django.test import override_settings

from accounts.models import AuditLogEntry
from tests.accounts.test_2fa import (  # noqa: F401  (an autouse fixture)
    COMPLETE,
    _away_from_a_step_boundary,
    assert_error,
    challenge,
    turn_on,
)
from tests.accounts.test_sessions import sign_in
from tests.conftest import client_for

pytestmark = pytest.mark.django_db

WRONG = "wrong-password-1"
GUESSER = "203.0.113.66"
OWNER = "198.51.100.7"


def test_it_lets_the_owner_in_from_another_address_while_the_guesser_waits(api, alice):
    for _ in range(10):
        assert sign_in(api, password=WRONG, REMOTE_ADDR=GUESSER).status_code == 401
    assert_error(sign_in(api, password=WRONG, REMOTE_ADDR=GUESSER), 429, "rate_limited")
    # The guesser's address is locked even with the right password...
    assert_error(sign_in(api, REMOTE_ADDR=GUESSER), 429, "rate_limited")
    # ...while the owner, from an address that guessed nothing, signs in.
    assert sign_in(api, REMOTE_ADDR=OWNER).status_code == 200


def test_it_gives_a_spread_out_guesser_one_guess_per_address(api, alice):
    for n in range(10):
        assert sign_in(api, password=WRONG, REMOTE_ADDR=f"192.0.2.{n + 1}").status_code == 401
    # The account is under attack: an address that has guessed wrong is locked...
    assert_error(sign_in(api, password=WRONG, REMOTE_ADDR="192.0.2.1"), 429, "rate_limited")
    assert_error(sign_in(api, REMOTE_ADDR="192.0.2.1"), 429, "rate_limited")
    # ...a new one gets a single guess...
    assert sign_in(api, password=WRONG, REMOTE_ADDR="192.0.2.50").status_code == 401
    assert_error(sign_in(api, password=WRONG, REMOTE_ADDR="192.0.2.50"), 429, "rate_limited")
    # ...and the owner's own address still lets the right password in.
    assert sign_in(api, REMOTE_ADDR=OWNER).status_code == 200


def test_it_lets_the_right_code_in_from_another_address(api, alice, alice_api):
    app, _ = turn_on(alice_api)
    token = challenge(api)
    for _ in range(10):
        r = api.post(COMPLETE, {"totp_token": token, "code": app.wrong_code()}, REMOTE_ADDR=GUESSER)
        assert_error(r, 401, "invalid_totp_code")
    # The next step's code, without spending it: refused here before it is checked.
    next_code = app.totp.at(time.time() + 30)
    r = api.post(COMPLETE, {"totp_token": token, "code": next_code}, REMOTE_ADDR=GUESSER)
    assert_error(r, 429, "rate_limited")
    r = api.post(COMPLETE, {"totp_token": token, "code": app.code()}, REMOTE_ADDR=OWNER)
    assert r.status_code == 200


# --- With the cache down ------------------------------------------------------------------


def test_it_signs_in_with_the_cache_down(api, alice, cache_down, caplog):
    with pytest.raises(Exception):  # noqa: B017  (the premise: the cache really is down)
        cache.get("anything")
    caplog.set_level(logging.WARNING, logger="accounts.throttling")
    assert_error(sign_in(api, password=WRONG), 401, "unauthorized")
    r = sign_in(api)
    assert r.status_code == 200
    assert set(r.json()) == {"access_token", "refresh_token", "expires_in"}
    assert "The cache is unreachable" in caplog.text


def test_it_counts_failures_from_the_audit_log_with_the_cache_down(api, alice, cache_down):
    for _ in range(10):
        assert_error(sign_in(api, password=WRONG, REMOTE_ADDR=GUESSER), 401, "unauthorized")
    r = sign_in(api, password=WRONG, REMOTE_ADDR=GUESSER)
    assert_error(r, 429, "rate_limited")
    assert 1 <= int(r["Retry-After"]) <= 900
    assert AuditLogEntry.objects.filter(action="session.sign_in_failed").count() == 10
    assert sign_in(api, REMOTE_ADDR=OWNER).status_code == 200


@override_settings(CONDUIT_SIGNIN_MAX_FAILURES_PER_IP=3)
def test_it_counts_unknown_addresses_per_address_with_the_cache_down(api, bob, cache_down):
    for email in ["x@example.com", "y@example.com", "z@example.com"]:
        assert_error(sign_in(api, email=email, password=WRONG), 401, "unauthorized")
    assert_error(sign_in(api, email="bob@example.org"), 429, "rate_limited")
    assert sign_in(api, email="bob@example.org", REMOTE_ADDR=OWNER).status_code == 200


def test_it_completes_2fa_with_the_cache_down(api, alice, alice_api, cache_down):
    app, _ = turn_on(alice_api)
    token = challenge(api)
    r = api.post(COMPLETE, {"totp_token": token, "code": app.wrong_code()})
    assert_error(r, 401, "invalid_totp_code")
    assert api.post(COMPLETE, {"totp_token": token, "code": app.code()}).status_code == 200


def test_it_signs_up_and_takes_reset_requests_with_the_cache_down(api, cache_down, caplog):
    caplog.set_level(logging.WARNING, logger="accounts.throttling")
    r = api.post(
        "/api/v1/accounts", {"email": "dora@example.com", "password": "a-long-passphrase-9"}
    )
    assert r.status_code == 201, r.content
    r = api.post("/api/v1/accounts/me/password-reset", {"email": "dora@example.com"})
    assert r.status_code == 202
    assert "not rate-limited" in caplog.text


def test_it_keeps_a_known_account_locked_by_its_failures_alone(api, alice):
    # Regression guard for the lockout rule: 10 failures of one address on one
    # account lock that address even if it never tried another account.
    client = client_for(alice)
    assert client.get("/api/v1/accounts/me").status_code == 200
    for _ in range(10):
        sign_in(api, password=WRONG)
    assert_error(sign_in(api), 429, "rate_limited")
