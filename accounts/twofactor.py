"""Two-factor authentication: TOTP devices, backup codes and the sign-in challenge.

2FA is on exactly while the account has a *confirmed* TOTP device. Setup
creates an unconfirmed one (replacing any earlier unconfirmed one); enabling
confirms it once a code proves the user's app holds the secret.

Every 2FA transaction starts by locking the account row (``_lock``). That
serialises the 2FA changes of one account: two requests cannot both spend the
same TOTP code, backup code or challenge, and always taking that lock first
keeps them from deadlocking. Every code check goes through ``_match_code``;
wrong codes are throttled like wrong passwords (scope ``totp``, per account and
per address) and audited as ``totp.code_failed``.
"""

from __future__ import annotations

import base64
import hashlib
import io
import re
import secrets
from dataclasses import dataclass
from datetime import timedelta

import pyotp
import qrcode
from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from qrcode.image.pure import PyPNGImage

from accounts import throttling
from accounts.models import Account, AccountTOTPDevice, BackupCode, TotpChallenge, TotpSeed
from accounts.services import IssuedSession, account_authenticate, audit_record, session_issue
from accounts.tokens import TOTP_CHALLENGE_PREFIX, hash_token, new_token
from conduit.errors import Conflict, Unauthorized, Unprocessable

ISSUER = "Conduit"
BACKUP_CODE_COUNT = 10
# Ten characters without look-alikes (0/o, 1/l/i): about 50 bits, shown as "abcde-fghjk".
_BACKUP_CODE_ALPHABET = "23456789abcdefghjkmnpqrstuvwxyz"
_BACKUP_CODE_LENGTH = 10
_TOTP_CODE = re.compile(r"[0-9]{6}")

INVALID_CODE = (
    "The code is wrong, expired or already used; enter the current code from your "
    "authenticator app, or an unused backup code."
)
INVALID_CHALLENGE = (
    "The sign-in challenge is invalid, expired or already used; sign in with your password again."
)


@dataclass(frozen=True)
class TotpSetup:
    secret: str
    otpauth_url: str
    qr_code_png: str  # base64


@dataclass(frozen=True)
class IssuedTotpChallenge:
    totp_token: str


# --- Reads --------------------------------------------------------------------------


def totp_is_enabled(*, account: Account) -> bool:
    return AccountTOTPDevice.objects.filter(user=account, confirmed=True).exists()


# --- Setup, enable, disable, backup codes ---------------------------------------------


def totp_setup(*, account: Account) -> TotpSetup:
    """A new secret for the account's authenticator app; any earlier unconfirmed one dies.

    Refused while 2FA is on: replacing the secret would take away the second
    factor without proof of holding it. The user disables 2FA (with a code) first.
    """
    # Under the account lock two setups cannot leave two unconfirmed devices.
    with transaction.atomic():
        _lock(account.pk)
        if AccountTOTPDevice.objects.filter(user=account, confirmed=True).exists():
            raise Unauthorized(
                "Two-factor authentication is already on. To use a new authenticator app, "
                "disable it first (DELETE /api/v1/accounts/me/2fa with a current code), then "
                "set it up again.",
                code="totp_already_enabled",
            )
        AccountTOTPDevice.objects.filter(user=account, confirmed=False).delete()
        device = AccountTOTPDevice(user=account, name="Authenticator app", confirmed=False)
        # django-otp's default key (20 random bytes, hex) moves to the
        # encrypted seed; its own column keeps nothing.
        seed, device.key = device.key, ""
        device.save()
        TotpSeed.objects.create(device=device, key=seed)
    # django-otp keeps the key as hex; apps (and pyotp) take it as base32.
    secret = base64.b32encode(device.bin_key).decode("ascii")
    otpauth_url = pyotp.TOTP(secret).provisioning_uri(name=account.email, issuer_name=ISSUER)
    return TotpSetup(secret=secret, otpauth_url=otpauth_url, qr_code_png=_qr_code_png(otpauth_url))


def totp_enable(*, account: Account, code: str, ip: str | None) -> list[str]:
    """Confirm the device set up last with a current code; the new backup codes, once."""
    with transaction.atomic():
        _lock(account.pk)
        devices = list(AccountTOTPDevice.objects.select_for_update().filter(user=account))
        if any(device.confirmed for device in devices):
            raise Conflict("Two-factor authentication is already on.")
        if not devices:
            raise Unprocessable(
                "Two-factor authentication is not set up yet: call "
                "POST /api/v1/accounts/me/2fa/setup, add the secret to your authenticator "
                "app, then enable with a code from it."
            )
        device = devices[0]  # setup keeps at most one unconfirmed device
        # Only a TOTP code proves the app has the secret; backup codes come after.
        if _match_code(account=account, device=device, code=code, ip=ip, allow_backup=False):
            device.confirmed = True
            device.save(update_fields=["confirmed"])
            codes = _replace_backup_codes(account=account)
            audit_record(account=account, action="totp.enabled", ip=ip)
            _code_accepted(account=account, ip=ip)
            return codes
    raise _code_rejected(account=account, ip=ip, purpose="enable")


def totp_disable(*, account: Account, code: str, ip: str | None) -> None:
    """Turn 2FA off with a current TOTP code or an unused backup code."""
    with transaction.atomic():
        _lock(account.pk)
        device = _confirmed_device_for_update(account=account)
        method = _match_code(account=account, device=device, code=code, ip=ip, allow_backup=True)
        if method is not None:
            _delete_second_factor(account=account)
            audit_record(account=account, action="totp.disabled", ip=ip, second_factor=method)
            _code_accepted(account=account, ip=ip)
            return
    raise _code_rejected(account=account, ip=ip, purpose="disable")


def backup_codes_regenerate(*, account: Account, code: str, ip: str | None) -> list[str]:
    """New backup codes (the old ones stop working), with a current TOTP or backup code."""
    with transaction.atomic():
        _lock(account.pk)
        device = _confirmed_device_for_update(account=account)
        method = _match_code(account=account, device=device, code=code, ip=ip, allow_backup=True)
        if method is not None:
            codes = _replace_backup_codes(account=account)
            audit_record(
                account=account,
                action="totp.backup_codes_regenerated",
                ip=ip,
                second_factor=method,
            )
            _code_accepted(account=account, ip=ip)
            return codes
    raise _code_rejected(account=account, ip=ip, purpose="regenerate_backup_codes")


def totp_reset_by_operator(*, account: Account, operator: Account, ip: str | None) -> bool:
    """Remove the account's 2FA (a user who lost app and codes); False if it was off."""
    with transaction.atomic():
        _lock(account.pk)
        was_enabled = AccountTOTPDevice.objects.filter(user=account, confirmed=True).exists()
        _delete_second_factor(account=account)
        if was_enabled:
            audit_record(
                account=account,
                action="totp.reset_by_operator",
                ip=ip,
                operator=operator.email,
            )
    return was_enabled


# --- Signing in -------------------------------------------------------------------------


def session_sign_in(
    *, email: str, password: str, ip: str | None, user_agent: str
) -> IssuedSession | IssuedTotpChallenge:
    """Password sign-in: a session, or with 2FA on a challenge that a code completes."""
    account = account_authenticate(email=email, password=password, ip=ip)
    if totp_is_enabled(account=account):
        return totp_challenge_create(account=account, ip=ip)
    with transaction.atomic():
        issued = session_issue(account=account, ip=ip, user_agent=user_agent)
        audit_record(account=account, action="session.signed_in", ip=ip, method="password")
    return issued


def totp_challenge_create(*, account: Account, ip: str | None) -> IssuedTotpChallenge:
    """What a right password earns on a 2FA account: a short-lived challenge, no tokens."""
    now = timezone.now()
    # Spent challenges are only kept until the account's next sign-in.
    token, token_hash = new_token(TOTP_CHALLENGE_PREFIX)
    expires_at = now + timedelta(seconds=settings.CONDUIT_TOTP_CHALLENGE_TTL)
    with transaction.atomic():
        TotpChallenge.objects.filter(account=account).filter(
            Q(expires_at__lte=now) | Q(used_at__isnull=False)
        ).delete()
        TotpChallenge.objects.create(
            account=account, token_hash=token_hash, expires_at=expires_at, ip=ip
        )
        audit_record(account=account, action="session.totp_challenge_issued", ip=ip)
    return IssuedTotpChallenge(totp_token=token)


def totp_session_complete(
    *, totp_token: str, code: str, ip: str | None, user_agent: str
) -> IssuedSession:
    """Exchange a sign-in challenge and a code for a session.

    A wrong code leaves the challenge usable (until it expires), so the user
    can correct a typo; the right one uses it up.
    """
    now = timezone.now()
    token_hash = hash_token(totp_token)
    with transaction.atomic():
        account_id = (
            TotpChallenge.objects.filter(token_hash=token_hash)
            .values_list("account_id", flat=True)
            .first()
        )
        if account_id is None:
            raise Unauthorized(INVALID_CHALLENGE)
        account = _lock(account_id)
        # Read again under the lock: a concurrent completion may have used it.
        challenge = TotpChallenge.objects.filter(token_hash=token_hash).first()
        if (
            challenge is None
            or challenge.used_at is not None
            or challenge.expires_at <= now
            or not account.is_active
        ):
            raise Unauthorized(INVALID_CHALLENGE)
        device = (
            AccountTOTPDevice.objects.select_for_update()
            .filter(user=account, confirmed=True)
            .first()
        )
        if device is None:  # 2FA was turned off after the password step
            raise Unauthorized(INVALID_CHALLENGE)
        method = _match_code(account=account, device=device, code=code, ip=ip, allow_backup=True)
        if method is not None:
            challenge.used_at = now
            challenge.save(update_fields=["used_at"])
            issued = session_issue(account=account, ip=ip, user_agent=user_agent)
            audit_record(
                account=account,
                action="session.signed_in",
                ip=ip,
                method="totp",
                second_factor=method,
            )
            _code_accepted(account=account, ip=ip)
            return issued
    raise _code_rejected(account=account, ip=ip, purpose="sign_in")


def totp_verify_for_admin(*, account: Account, code: str, ip: str | None) -> AccountTOTPDevice:
    """The second step of an admin login: the device to record as having verified the user."""
    with transaction.atomic():
        _lock(account.pk)
        device = _confirmed_device_for_update(account=account)
        if _match_code(account=account, device=device, code=code, ip=ip, allow_backup=True):
            _code_accepted(account=account, ip=ip)
            return device
    raise _code_rejected(account=account, ip=ip, purpose="admin_login")


# --- Helpers ------------------------------------------------------------------------------


def _lock(account_id: object) -> Account:
    return Account.objects.select_for_update().get(pk=account_id)


def _confirmed_device_for_update(*, account: Account) -> AccountTOTPDevice:
    """The device of an account with 2FA on, locked; 422 when 2FA is off."""
    device = (
        AccountTOTPDevice.objects.select_for_update().filter(user=account, confirmed=True).first()
    )
    if device is None:
        raise Unprocessable("Two-factor authentication is not on for this account.")
    return device


def _normalise(code: str) -> str:
    return re.sub(r"[\s-]", "", code).lower()


def _match_code(
    *,
    account: Account,
    device: AccountTOTPDevice,
    code: str,
    ip: str | None,
    allow_backup: bool,
) -> str | None:
    """``"totp"`` or ``"backup_code"`` when the code is good, and then it is spent; else None.

    429 first when too many wrong codes were sent. Must run in a transaction
    holding the account lock: django-otp refuses any TOTP time step at or
    before the last accepted one (``last_t``), and the lock makes that hold for
    concurrent requests too.
    """
    throttling.ensure_not_locked(scope=throttling.TOTP, account_key=str(account.id), ip=ip)
    code = _normalise(code)
    if _TOTP_CODE.fullmatch(code):
        return "totp" if device.verify_token(code) else None
    if allow_backup and len(code) == _BACKUP_CODE_LENGTH:
        spent = BackupCode.objects.filter(
            account=account,
            code_hash=_backup_code_hash(account=account, code=code),
            used_at__isnull=True,
        ).update(used_at=timezone.now())
        return "backup_code" if spent else None
    return None


def _code_accepted(*, account: Account, ip: str | None) -> None:
    throttling.clear_failures(scope=throttling.TOTP, account_key=str(account.id), ip=ip)


def _code_rejected(*, account: Account, ip: str | None, purpose: str) -> Unauthorized:
    """Count and audit a wrong code; the error to raise.

    Called after the transaction that checked the code has committed, so the
    audit entry is kept although the request fails.
    """
    throttling.record_failure(scope=throttling.TOTP, account_key=str(account.id), ip=ip)
    audit_record(account=account, action="totp.code_failed", ip=ip, purpose=purpose)
    return Unauthorized(INVALID_CODE, code="invalid_totp_code")


def _backup_code_hash(*, account: Account, code: str) -> str:
    # A plain salted SHA-256, not a password hash: checking a code compares it
    # with up to ten hashes, and the TOTP key next to them in the database has
    # to be stored readable anyway. Hashing keeps the codes out of sight of
    # operators, backups and logs.
    return hashlib.sha256(f"{account.pk}:{_normalise(code)}".encode()).hexdigest()


def _replace_backup_codes(*, account: Account) -> list[str]:
    BackupCode.objects.filter(account=account).delete()
    codes = []
    for _ in range(BACKUP_CODE_COUNT):
        raw = "".join(secrets.choice(_BACKUP_CODE_ALPHABET) for _ in range(_BACKUP_CODE_LENGTH))
        codes.append(f"{raw[:5]}-{raw[5:]}")
    BackupCode.objects.bulk_create(
        BackupCode(account=account, code_hash=_backup_code_hash(account=account, code=code))
        for code in codes
    )
    return codes


def _delete_second_factor(*, account: Account) -> None:
    AccountTOTPDevice.objects.filter(user=account).delete()
    BackupCode.objects.filter(account=account).delete()
    # A challenge issued while 2FA was on must not outlive it.
    TotpChallenge.objects.filter(account=account).delete()


def _qr_code_png(data: str) -> str:
    # PyPNGImage writes PNG in pure Python, so Pillow is not needed.
    image = qrcode.make(data, image_factory=PyPNGImage)
    buffer = io.BytesIO()
    image.save(buffer)
    return base64.b64encode(buffer.getvalue()).decode("ascii")
