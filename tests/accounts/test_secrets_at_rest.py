"""Webhook secrets and TOTP seeds are stored encrypted: a database copy alone reads neither."""

from __future__ import annotations

import base64

import pytest
from cryptography.fernet import Fernet, InvalidToken
from django.core.management import call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from accounts.models import AccountTOTPDevice
from conduit import crypto
from tests.accounts.test_2fa import (  # noqa: F401  (an autouse fixture)
    _away_from_a_step_boundary,
    set_up,
    turn_on,
)
from tests.delivery_fixtures import SECRET, make_webhook
from webhooks.models import Webhook

KEY_1 = Fernet.generate_key().decode()
KEY_2 = Fernet.generate_key().decode()


def stored(sql: str, *params: object) -> str:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchone()[0]


def stored_secret(webhook: Webhook) -> str:
    return stored("SELECT secret FROM webhooks_webhook WHERE id = %s", webhook.id)


def stored_seed(device: AccountTOTPDevice) -> str:
    return stored("SELECT key FROM accounts_totpseed WHERE device_id = %s", device.pk)


def stored_device_key(device: AccountTOTPDevice) -> str:
    return stored("SELECT key FROM otp_totp_totpdevice WHERE id = %s", device.pk)


@pytest.fixture
def hook(alice, alice_domain) -> Webhook:
    return make_webhook(alice, alice_domain, "https://hooks.example.net/in")


@pytest.mark.django_db
def test_it_stores_the_webhook_secret_encrypted(hook, settings):
    raw = stored_secret(hook)
    assert SECRET not in raw
    assert SECRET.removeprefix("whsec_") not in raw
    # With no key set, the key derived from SECRET_KEY opens it...
    assert Fernet(crypto.derived_key(settings.SECRET_KEY)).decrypt(raw.encode()).decode() == SECRET
    # ...and nothing else does: the dump alone cannot sign.
    with pytest.raises(InvalidToken):
        Fernet(crypto.derived_key("another-secret-key")).decrypt(raw.encode())
    assert Webhook.objects.get(pk=hook.pk).secret == SECRET


@pytest.mark.django_db
def test_it_stores_the_totp_seed_encrypted_and_still_checks_codes(alice, alice_api, api):
    app, _ = turn_on(alice_api)
    device = AccountTOTPDevice.objects.get(user=alice)
    seed_hex = base64.b32decode(app.totp.secret).hex()
    assert stored_device_key(device) == ""
    raw = stored_seed(device)
    assert seed_hex not in raw
    assert crypto.decrypt(raw) == seed_hex
    assert device.bin_key.hex() == seed_hex
    # Codes from the app still work (the whole 2FA suite runs on this too).
    r = api.post("/api/v1/sessions", {"email": alice.email, "password": "correct-horse-battery-9"})
    r = api.post("/api/v1/sessions/2fa", {"totp_token": r.json()["totp_token"], "code": app.code()})
    assert r.status_code == 200, r.content


@pytest.mark.django_db
def test_it_rotates_keys_with_reencrypt_secrets(alice, alice_api, hook, settings, capsys):
    settings.CONDUIT_ENCRYPTION_KEYS = [KEY_1]
    Webhook.objects.filter(pk=hook.pk).update(secret=SECRET)  # written with KEY_1
    app = set_up(alice_api)
    device = AccountTOTPDevice.objects.get(user=alice)
    Fernet(KEY_1).decrypt(stored_secret(hook).encode())
    Fernet(KEY_1).decrypt(stored_seed(device).encode())

    settings.CONDUIT_ENCRYPTION_KEYS = [KEY_2, KEY_1]  # the new key first, the old one kept
    assert Webhook.objects.get(pk=hook.pk).secret == SECRET
    call_command("reencrypt_secrets")
    assert (
        "webhooks.Webhook: 1 row(s) re-encrypted (target_auth, secret, mailgun_signing_key)"
        in capsys.readouterr().out
    )

    settings.CONDUIT_ENCRYPTION_KEYS = [KEY_2]  # the old key gone
    with pytest.raises(InvalidToken):
        Fernet(KEY_1).decrypt(stored_secret(hook).encode())
    assert Webhook.objects.get(pk=hook.pk).secret == SECRET
    assert AccountTOTPDevice.objects.get(pk=device.pk).bin_key == base64.b32decode(app.totp.secret)


@pytest.mark.django_db
def test_it_names_the_setting_when_no_key_opens_a_secret(hook, settings):
    settings.CONDUIT_ENCRYPTION_KEYS = [KEY_2]
    with pytest.raises(InvalidToken, match="CONDUIT_ENCRYPTION_KEYS"):
        Webhook.objects.get(pk=hook.pk)


@pytest.mark.django_db
def test_it_prints_the_key_derived_from_secret_key(settings, capsys):
    call_command("reencrypt_secrets", "--print-derived-key")
    assert capsys.readouterr().out.strip() == crypto.derived_key(settings.SECRET_KEY)


def test_it_refuses_a_malformed_key_at_start(tmp_path):
    import subprocess
    import sys

    from tests.ingress.processes import BASE_DIR

    env = {
        "PATH": "/usr/bin:/bin",
        "SECRET_KEY": "x",
        "CONDUIT_VAR_DIR": str(tmp_path),
        "CONDUIT_ENCRYPTION_KEYS": f"{KEY_1},not-a-key",
    }
    out = subprocess.run(
        [sys.executable, "manage.py", "check"],
        env=env,
        cwd=BASE_DIR,
        capture_output=True,
        text=True,
    )
    assert out.returncode != 0
    assert "CONDUIT_ENCRYPTION_KEYS: key 2 is not a Fernet key" in out.stderr


# --- Migrated in place ----------------------------------------------------------------------


def migrate(*targets: tuple[str, str]) -> None:
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(list(targets))


@pytest.mark.django_db(transaction=True)
def test_the_migrations_encrypt_existing_secrets_in_place(alice, alice_api, hook):
    app = set_up(alice_api)
    device = AccountTOTPDevice.objects.get(user=alice)
    seed_hex = base64.b32decode(app.totp.secret).hex()
    try:
        migrate(("webhooks", "0002_route_change_notifications"), ("accounts", "0002_two_factor"))
        # As stored before: plaintext.
        assert stored_secret(hook) == SECRET
        assert stored_device_key(device) == seed_hex
        migrate(("webhooks", "0003_encrypt_secrets"), ("accounts", "0003_totp_seed"))
    finally:
        migrate(*MigrationExecutor(connection).loader.graph.leaf_nodes())
    assert SECRET not in stored_secret(hook)
    assert stored_device_key(device) == ""
    assert seed_hex not in stored_seed(device)
    assert Webhook.objects.get(pk=hook.pk).secret == SECRET
    assert AccountTOTPDevice.objects.get(pk=device.pk).bin_key.hex() == seed_hex
