from __future__ import annotations

import time

import pyotp
import pytest
from django.test import Client

from accounts import twofactor
from accounts.models import Account, AccountTOTPDevice, AuditLogEntry, BackupCode
from tests.accounts.test_sessions import sign_in
from tests.factories import PASSWORD, AccountFactory

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _away_from_a_step_boundary() -> None:
    into_step = time.time() % 30
    if into_step > 27:
        time.sleep(30 - into_step + 0.05)


def turn_on_2fa(account: Account) -> tuple[pyotp.TOTP, list[str]]:
    setup = twofactor.totp_setup(account=account)
    totp = pyotp.TOTP(setup.secret)
    codes = twofactor.totp_enable(account=account, code=totp.now(), ip=None)
    return totp, codes


def next_code(totp: pyotp.TOTP) -> str:
    # The code that enabled 2FA is spent; django-otp tolerates one step ahead.
    return totp.at(time.time() + 30)


@pytest.fixture
def operator(db: None) -> Account:
    return AccountFactory(email="operator@conduit.email", is_staff=True, is_superuser=True)


def admin_login(client: Client, account: Account, otp_token: str | None = None):
    data = {"username": account.email, "password": PASSWORD, "next": "/admin/"}
    if otp_token is not None:
        data["otp_token"] = otp_token
    return client.post("/admin/login/?next=/admin/", data)


def test_it_keeps_staff_with_2fa_out_after_a_password_only_login(operator):
    turn_on_2fa(operator)
    client = Client()
    assert client.login(username=operator.email, password=PASSWORD)
    r = client.get("/admin/")
    assert r.status_code == 302
    assert r["Location"].startswith("/admin/login/")
    assert client.get("/admin/accounts/account/").status_code == 302


def test_it_lets_staff_without_2fa_in_with_the_password(operator):
    client = Client()
    r = admin_login(client, operator)
    assert r.status_code == 302
    assert r["Location"] == "/admin/"
    assert client.get("/admin/").status_code == 200


def test_it_shows_a_code_field_on_the_admin_login_page():
    r = Client().get("/admin/login/")
    assert r.status_code == 200
    assert 'name="otp_token"' in r.content.decode()


def test_it_asks_staff_with_2fa_for_a_code_at_admin_login(operator):
    turn_on_2fa(operator)
    client = Client()
    r = admin_login(client, operator)
    assert r.status_code == 200
    assert "enter the code" in r.content.decode()
    assert client.get("/admin/").status_code == 302


def test_it_refuses_a_wrong_code_at_admin_login(operator):
    totp, _ = turn_on_2fa(operator)
    client = Client()
    r = admin_login(client, operator, otp_token=totp.at(time.time() + 30 * 1000))
    assert r.status_code == 200
    assert "The code is wrong" in r.content.decode()
    assert client.get("/admin/").status_code == 302
    assert AuditLogEntry.objects.filter(
        account=operator, action="totp.code_failed", metadata__purpose="admin_login"
    ).exists()


def test_it_lets_staff_with_2fa_in_with_a_code(operator):
    totp, _ = turn_on_2fa(operator)
    client = Client()
    r = admin_login(client, operator, otp_token=next_code(totp))
    assert r.status_code == 302
    assert r["Location"] == "/admin/"
    assert client.get("/admin/").status_code == 200
    assert client.get("/admin/accounts/account/").status_code == 200


def test_it_lets_staff_with_2fa_in_with_a_backup_code(operator):
    _, codes = turn_on_2fa(operator)
    client = Client()
    assert admin_login(client, operator, otp_token=codes[0]).status_code == 302
    assert client.get("/admin/").status_code == 200


def test_it_shows_which_accounts_have_2fa(operator, alice, bob):
    turn_on_2fa(alice)
    client = Client()
    client.force_login(operator)
    r = client.get("/admin/accounts/account/", {"two_factor": "on"})
    assert r.status_code == 200
    page = r.content.decode()
    assert "alice@example.com" in page
    assert "bob@example.org" not in page
    r = client.get("/admin/accounts/account/", {"two_factor": "off"})
    assert "bob@example.org" in r.content.decode()
    assert "alice@example.com" not in r.content.decode()
    r = client.get(f"/admin/accounts/account/{alice.pk}/change/")
    assert r.status_code == 200
    assert "Two-factor authentication" in r.content.decode()


def test_it_resets_2fa_by_operator_action(operator, alice, api):
    turn_on_2fa(alice)
    client = Client()
    client.force_login(operator)
    r = client.post(
        "/admin/accounts/account/",
        {"action": "reset_two_factor", "_selected_action": [str(alice.pk)]},
    )
    assert r.status_code == 302
    assert not AccountTOTPDevice.objects.filter(user=alice).exists()
    assert not BackupCode.objects.filter(account=alice).exists()
    entry = AuditLogEntry.objects.get(account=alice, action="totp.reset_by_operator")
    assert entry.metadata == {"operator": "operator@conduit.email"}
    r = sign_in(api)
    assert r.status_code == 200
    assert "access_token" in r.json()


def test_it_does_not_offer_the_otp_device_pages(operator):
    client = Client()
    client.force_login(operator)
    # They would show every user's TOTP secret as a QR code.
    assert client.get("/admin/otp_totp/totpdevice/").status_code == 404
    assert client.get("/admin/otp_static/staticdevice/").status_code == 404


def test_it_keeps_a_password_only_browser_session_of_a_2fa_account_out_of_the_api(alice):
    turn_on_2fa(alice)
    client = Client()
    r = client.post("/api-auth/login/", {"username": alice.email, "password": PASSWORD})
    assert r.status_code == 302
    r = client.get("/api/v1/accounts/me", HTTP_ACCEPT="application/json")
    assert r.status_code == 401
    assert r.json()["code"] == "unauthorized"
