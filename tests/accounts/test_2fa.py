from __future__ import annotations

import base64
import time
from datetime import timedelta

import pyotp
import pytest
from django.utils import timezone
from drf_spectacular.generators import SchemaGenerator

from accounts.models import AuditLogEntry, AuthSession, BackupCode, TotpChallenge
from tests.accounts.test_sessions import bearer, sign_in
from tests.conftest import client_for

pytestmark = pytest.mark.django_db

SETUP = "/api/v1/accounts/me/2fa/setup"
ENABLE = "/api/v1/accounts/me/2fa/enable"
DISABLE = "/api/v1/accounts/me/2fa"
BACKUP_CODES = "/api/v1/accounts/me/2fa/backup-codes"
COMPLETE = "/api/v1/sessions/2fa"


@pytest.fixture(autouse=True)
def _away_from_a_step_boundary() -> None:
    """Codes are made for consecutive 30 s steps; a step ending mid-test would shift them."""
    into_step = time.time() % 30
    if into_step > 27:
        time.sleep(30 - into_step + 0.05)


class Authenticator:
    """The user's app. django-otp accepts each time step once and tolerates one step of
    clock skew (following the skew it sees), so each call gives the next step's code."""

    def __init__(self, secret: str) -> None:
        self.totp = pyotp.TOTP(secret)
        self.steps_ahead = -1
        self.last = ""

    def code(self) -> str:
        self.steps_ahead += 1
        self.last = self.totp.at(time.time() + 30 * self.steps_ahead)
        return self.last

    def wrong_code(self) -> str:
        # Far outside the accepted window (one step either side).
        return self.totp.at(time.time() + 30 * 1000)


def assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.content
    body = response.json()
    assert body["code"] == code, body
    assert body["error"]
    return body


def set_up(client) -> Authenticator:
    r = client.post(SETUP)
    assert r.status_code == 200, r.content
    return Authenticator(r.json()["secret"])


def turn_on(client) -> tuple[Authenticator, list[str]]:
    app = set_up(client)
    r = client.post(ENABLE, {"code": app.code()})
    assert r.status_code == 200, r.content
    return app, r.json()["backup_codes"]


def challenge(api, email="alice@example.com") -> str:
    r = sign_in(api, email=email)
    assert r.status_code == 200, r.content
    assert r.json()["totp_required"] is True
    return r.json()["totp_token"]


@pytest.fixture
def alice_2fa(alice_api) -> tuple[Authenticator, list[str]]:
    return turn_on(alice_api)


# --- Setup and enable ------------------------------------------------------------------


def test_it_sets_up_totp_with_an_otpauth_url_and_its_qr_code(alice_api):
    r = alice_api.post(SETUP)
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"secret", "otpauth_url", "qr_code_png"}
    secret = body["secret"]
    assert len(base64.b32decode(secret)) == 20
    assert body["otpauth_url"] == (
        f"otpauth://totp/Conduit:alice%40example.com?secret={secret}&issuer=Conduit"
    )
    assert base64.b64decode(body["qr_code_png"]).startswith(b"\x89PNG\r\n\x1a\n")
    # Any pyotp-compatible app with this secret makes codes that enable 2FA.
    r = alice_api.post(ENABLE, {"code": pyotp.TOTP(secret).now()})
    assert r.status_code == 200, r.content


def test_it_enables_2fa_and_returns_ten_backup_codes_once(alice, alice_api):
    app = set_up(alice_api)
    r = alice_api.post(ENABLE, {"code": app.code()})
    assert r.status_code == 200
    codes = r.json()["backup_codes"]
    assert len(codes) == len(set(codes)) == 10
    assert all(len(code) == 11 and code[5] == "-" for code in codes)
    # Only hashes are kept.
    stored = set(BackupCode.objects.filter(account=alice).values_list("code_hash", flat=True))
    assert len(stored) == 10
    assert not stored & {*codes, *(code.replace("-", "") for code in codes)}
    assert AuditLogEntry.objects.filter(account=alice, action="totp.enabled").exists()


def test_it_refuses_to_enable_with_a_wrong_code(alice, alice_api, api):
    app = set_up(alice_api)
    r = alice_api.post(ENABLE, {"code": app.wrong_code()})
    assert_error(r, 401, "invalid_totp_code")
    assert AuditLogEntry.objects.filter(
        account=alice, action="totp.code_failed", metadata__purpose="enable"
    ).exists()
    # Still off: the password alone signs in.
    assert "access_token" in sign_in(api).json()


def test_it_refuses_to_enable_twice(alice_api, alice_2fa):
    app, _ = alice_2fa
    assert_error(alice_api.post(ENABLE, {"code": app.code()}), 409, "conflict")


def test_it_refuses_to_enable_before_setup(alice_api):
    r = alice_api.post(ENABLE, {"code": "123456"})
    body = assert_error(r, 422, "validation_error")
    assert "setup" in body["error"]


def test_it_refuses_to_enable_without_a_code(alice_api):
    set_up(alice_api)
    body = assert_error(alice_api.post(ENABLE, {}), 422, "validation_error")
    assert set(body["details"]) == {"code"}


def test_it_replaces_the_secret_when_setup_is_repeated(alice_api):
    first = set_up(alice_api)
    second = set_up(alice_api)
    assert first.totp.secret != second.totp.secret
    assert_error(alice_api.post(ENABLE, {"code": first.code()}), 401, "invalid_totp_code")
    assert alice_api.post(ENABLE, {"code": second.code()}).status_code == 200


def test_it_refuses_setup_while_2fa_is_on_and_keeps_the_secret(alice_api, alice_2fa, api):
    app, _ = alice_2fa
    body = assert_error(alice_api.post(SETUP), 401, "totp_already_enabled")
    assert "disable" in body["error"]
    # The app set up first still signs in.
    r = api.post(COMPLETE, {"totp_token": challenge(api), "code": app.code()})
    assert r.status_code == 200


def test_it_needs_a_bearer_token_for_2fa_settings(api):
    assert_error(api.post(SETUP), 401, "unauthorized")
    assert_error(api.post(ENABLE, {"code": "123456"}), 401, "unauthorized")
    assert_error(api.delete(DISABLE, {"code": "123456"}), 401, "unauthorized")
    assert_error(api.post(BACKUP_CODES, {"code": "123456"}), 401, "unauthorized")


# --- Signing in --------------------------------------------------------------------------


def test_it_answers_sign_in_with_a_challenge_and_no_tokens(alice, alice_2fa, api):
    sessions_before = AuthSession.objects.filter(account=alice).count()
    r = sign_in(api)
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"totp_required", "totp_token"}
    assert body["totp_required"] is True
    assert body["totp_token"].startswith("cdc_")
    assert AuthSession.objects.filter(account=alice).count() == sessions_before
    stored = TotpChallenge.objects.get(account=alice)
    assert stored.token_hash != body["totp_token"]


def test_it_completes_sign_in_with_a_totp_code(alice, alice_2fa, api):
    app, _ = alice_2fa
    r = api.post(COMPLETE, {"totp_token": challenge(api), "code": app.code()})
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"access_token", "refresh_token", "expires_in"}
    assert bearer(body["access_token"]).get("/api/v1/accounts/me").status_code == 200
    entry = AuditLogEntry.objects.get(account=alice, action="session.signed_in")
    assert entry.metadata == {"method": "totp", "second_factor": "totp"}


def test_it_refuses_a_totp_code_that_was_already_accepted(alice_2fa, api):
    app, _ = alice_2fa
    # The code that enabled 2FA cannot sign in.
    r = api.post(COMPLETE, {"totp_token": challenge(api), "code": app.last})
    assert_error(r, 401, "invalid_totp_code")
    assert api.post(COMPLETE, {"totp_token": challenge(api), "code": app.code()}).status_code == 200
    # Nor can the one that signed in, a second time.
    r = api.post(COMPLETE, {"totp_token": challenge(api), "code": app.last})
    assert_error(r, 401, "invalid_totp_code")


def test_it_refuses_a_wrong_code_and_keeps_the_challenge(alice, alice_2fa, api):
    app, _ = alice_2fa
    token = challenge(api)
    assert_error(
        api.post(COMPLETE, {"totp_token": token, "code": app.wrong_code()}),
        401,
        "invalid_totp_code",
    )
    assert AuditLogEntry.objects.filter(
        account=alice, action="totp.code_failed", metadata__purpose="sign_in"
    ).exists()
    assert api.post(COMPLETE, {"totp_token": token, "code": app.code()}).status_code == 200


def test_it_refuses_a_challenge_used_before(alice_2fa, api):
    app, _ = alice_2fa
    token = challenge(api)
    assert api.post(COMPLETE, {"totp_token": token, "code": app.code()}).status_code == 200
    r = api.post(COMPLETE, {"totp_token": token, "code": app.code()})
    assert_error(r, 401, "unauthorized")


def test_it_refuses_an_expired_challenge(alice_2fa, api):
    app, _ = alice_2fa
    token = challenge(api)
    TotpChallenge.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    body = assert_error(
        api.post(COMPLETE, {"totp_token": token, "code": app.code()}), 401, "unauthorized"
    )
    assert "sign in" in body["error"]


def test_it_takes_the_challenge_lifetime_from_settings(alice, alice_2fa, api, settings):
    settings.CONDUIT_TOTP_CHALLENGE_TTL = 60
    challenge(api)
    left = TotpChallenge.objects.get(account=alice).expires_at - timezone.now()
    assert timedelta(seconds=55) < left <= timedelta(seconds=60)


def test_it_refuses_an_unknown_challenge(alice_2fa, api):
    app, _ = alice_2fa
    r = api.post(COMPLETE, {"totp_token": "cdc_made-up", "code": app.code()})
    assert_error(r, 401, "unauthorized")


def test_it_answers_401_to_missing_fields_when_completing(api):
    assert_error(api.post(COMPLETE, {}), 401, "unauthorized")
    assert_error(api.post(COMPLETE, {"totp_token": "cdc_x"}), 401, "unauthorized")
    assert_error(api.post(COMPLETE, {"code": "123456"}), 401, "unauthorized")


def test_it_refuses_a_code_of_another_account(alice_2fa, bob, api):
    bob_app, bob_codes = turn_on(client_for(bob))
    token = challenge(api)  # alice's
    r = api.post(COMPLETE, {"totp_token": token, "code": bob_app.code()})
    assert_error(r, 401, "invalid_totp_code")
    r = api.post(COMPLETE, {"totp_token": token, "code": bob_codes[0]})
    assert_error(r, 401, "invalid_totp_code")


def test_it_completes_sign_in_with_a_backup_code_once(alice, alice_2fa, api):
    _, codes = alice_2fa
    r = api.post(COMPLETE, {"totp_token": challenge(api), "code": codes[0]})
    assert r.status_code == 200
    assert "access_token" in r.json()
    entry = AuditLogEntry.objects.get(account=alice, action="session.signed_in")
    assert entry.metadata["second_factor"] == "backup_code"
    r = api.post(COMPLETE, {"totp_token": challenge(api), "code": codes[0]})
    assert_error(r, 401, "invalid_totp_code")
    # Case, spaces and the dash do not matter.
    typed = codes[1].replace("-", " ").upper()
    assert api.post(COMPLETE, {"totp_token": challenge(api), "code": typed}).status_code == 200


def test_it_throttles_the_11th_wrong_code(alice, alice_2fa, api):
    app, _ = alice_2fa
    token = challenge(api)
    for _ in range(10):
        r = api.post(COMPLETE, {"totp_token": token, "code": app.wrong_code()})
        assert_error(r, 401, "invalid_totp_code")
    r = api.post(COMPLETE, {"totp_token": token, "code": app.wrong_code()})
    assert_error(r, 429, "rate_limited")
    assert 1 <= int(r["Retry-After"]) <= 900
    # Even the right code waits until the window ends.
    assert_error(api.post(COMPLETE, {"totp_token": token, "code": app.code()}), 429, "rate_limited")
    assert AuditLogEntry.objects.filter(account=alice, action="totp.code_failed").count() == 10


def test_it_counts_wrong_codes_per_account(alice_2fa, bob, api):
    app, _ = alice_2fa
    bob_app, _ = turn_on(client_for(bob))
    token = challenge(api)
    for _ in range(10):
        api.post(COMPLETE, {"totp_token": token, "code": app.wrong_code()})
    r = api.post(
        COMPLETE, {"totp_token": challenge(api, "bob@example.org"), "code": bob_app.code()}
    )
    assert r.status_code == 200


# --- Disable and backup codes ------------------------------------------------------------


def test_it_disables_2fa_and_signs_in_with_the_password_alone(alice, alice_api, alice_2fa, api):
    app, _ = alice_2fa
    assert alice_api.delete(DISABLE, {"code": app.code()}).status_code == 204
    entry = AuditLogEntry.objects.get(account=alice, action="totp.disabled")
    assert entry.metadata == {"second_factor": "totp"}
    r = sign_in(api)
    assert r.status_code == 200
    assert set(r.json()) == {"access_token", "refresh_token", "expires_in"}
    assert not BackupCode.objects.filter(account=alice).exists()


def test_it_disables_2fa_with_a_backup_code(alice_api, alice_2fa, api):
    _, codes = alice_2fa
    assert alice_api.delete(DISABLE, {"code": codes[3]}).status_code == 204
    assert "access_token" in sign_in(api).json()


def test_it_refuses_to_disable_with_a_wrong_code(alice_api, alice_2fa, api):
    app, _ = alice_2fa
    assert_error(alice_api.delete(DISABLE, {"code": app.wrong_code()}), 401, "invalid_totp_code")
    assert sign_in(api).json()["totp_required"] is True


def test_it_refuses_to_disable_with_a_code_already_accepted(alice_api, alice_2fa):
    app, _ = alice_2fa
    assert_error(alice_api.delete(DISABLE, {"code": app.last}), 401, "invalid_totp_code")


def test_it_refuses_to_disable_when_2fa_is_off(alice_api):
    assert_error(alice_api.delete(DISABLE, {"code": "123456"}), 422, "validation_error")


def test_it_refuses_to_disable_after_setup_only(alice_api):
    app = set_up(alice_api)
    assert_error(alice_api.delete(DISABLE, {"code": app.code()}), 422, "validation_error")


def test_it_ends_pending_challenges_when_2fa_is_disabled(alice_api, alice_2fa, api):
    app, _ = alice_2fa
    token = challenge(api)
    assert alice_api.delete(DISABLE, {"code": app.code()}).status_code == 204
    r = api.post(COMPLETE, {"totp_token": token, "code": app.code()})
    assert_error(r, 401, "unauthorized")


def test_it_regenerates_backup_codes_and_the_old_ones_stop_working(
    alice, alice_api, alice_2fa, api
):
    app, old_codes = alice_2fa
    r = alice_api.post(BACKUP_CODES, {"code": app.code()})
    assert r.status_code == 200
    new_codes = r.json()["backup_codes"]
    assert len(new_codes) == 10
    assert not set(new_codes) & set(old_codes)
    assert AuditLogEntry.objects.filter(
        account=alice, action="totp.backup_codes_regenerated"
    ).exists()
    r = api.post(COMPLETE, {"totp_token": challenge(api), "code": old_codes[1]})
    assert_error(r, 401, "invalid_totp_code")
    assert (
        api.post(COMPLETE, {"totp_token": challenge(api), "code": new_codes[1]}).status_code == 200
    )


def test_it_regenerates_backup_codes_with_a_backup_code(alice_api, alice_2fa):
    _, codes = alice_2fa
    r = alice_api.post(BACKUP_CODES, {"code": codes[0]})
    assert r.status_code == 200
    assert len(r.json()["backup_codes"]) == 10


def test_it_refuses_to_regenerate_backup_codes_with_a_wrong_code(alice_api, alice_2fa):
    app, codes = alice_2fa
    r = alice_api.post(BACKUP_CODES, {"code": app.wrong_code()})
    assert_error(r, 401, "invalid_totp_code")
    # The old codes are untouched.
    assert alice_api.post(BACKUP_CODES, {"code": codes[0]}).status_code == 200


def test_it_refuses_to_regenerate_backup_codes_when_2fa_is_off(alice_api):
    assert_error(alice_api.post(BACKUP_CODES, {"code": "123456"}), 422, "validation_error")


def test_it_refuses_a_used_backup_code_to_regenerate(alice_api, alice_2fa):
    _, codes = alice_2fa
    assert alice_api.delete(DISABLE, {"code": codes[0]}).status_code == 204
    turn_on(alice_api)
    assert_error(alice_api.post(BACKUP_CODES, {"code": codes[1]}), 401, "invalid_totp_code")


# --- Schema ---------------------------------------------------------------------------------


def test_it_documents_both_answers_of_sign_in():
    schema = SchemaGenerator().get_schema(request=None, public=True)
    response = schema["paths"]["/api/v1/sessions"]["post"]["responses"]["200"]
    ref = response["content"]["application/json"]["schema"]["$ref"]
    one_of = schema["components"]["schemas"][ref.rsplit("/", 1)[1]]["oneOf"]
    assert one_of == [
        {"$ref": "#/components/schemas/SessionResponse"},
        {"$ref": "#/components/schemas/TOTPChallengeResponse"},
    ]
    assert {"SetupTOTPResponse", "BackupCodesResponse"} <= set(schema["components"]["schemas"])
