"""Every write of the accounts app: sign-up, sessions, passwords, API tokens, audit."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.contrib.auth.hashers import check_password, make_password
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.template.loader import render_to_string
from django.utils import timezone

from accounts import throttling
from accounts.models import (
    Account,
    ApiToken,
    AuditLogEntry,
    AuthSession,
    PasswordResetToken,
    normalise_email,
)
from accounts.tokens import (
    ACCESS_PREFIX,
    API_TOKEN_PREFIX,
    REFRESH_PREFIX,
    RESET_PREFIX,
    hash_token,
    new_token,
)
from conduit import ipnets
from conduit.errors import Conflict, Unauthorized, Unprocessable

logger = logging.getLogger(__name__)

INVALID_CREDENTIALS = "Invalid email or password."
# Checked against when the email is unknown, so both answers take as long.
_DUMMY_PASSWORD_HASH = make_password("conduit-timing-equaliser")


# --- Audit ------------------------------------------------------------------


def audit_record(
    *, account: Account | None, action: str, ip: str | None, **metadata: object
) -> AuditLogEntry:
    return AuditLogEntry.objects.create(account=account, action=action, ip=ip, metadata=metadata)


def audit_purge(*, older_than_days: int) -> int:
    cutoff = timezone.now() - timedelta(days=older_than_days)
    deleted, _ = AuditLogEntry.objects.filter(created_at__lt=cutoff).delete()
    return deleted


# --- Accounts -----------------------------------------------------------------


def _check_password_strength(password: str, *, email: str, field: str) -> None:
    try:
        validate_password(password, user=Account(email=email))
    except DjangoValidationError as exc:
        raise Unprocessable(
            "The password is too weak: " + " ".join(exc.messages),
            details={field: list(exc.messages)},
        ) from None


def account_create(*, email: str, password: str, ip: str | None) -> Account:
    email = normalise_email(email)
    _check_password_strength(password, email=email, field="password")
    if Account.objects.filter(email__iexact=email).exists():
        raise Conflict("An account with this email address already exists; sign in instead.")
    try:
        # Audit and write together: an account never exists without its
        # "created" entry, nor the entry without the account.
        with transaction.atomic():
            account = Account.objects.create_user(email=email, password=password)
            audit_record(account=account, action="account.created", ip=ip)
    except IntegrityError:
        # Two sign-ups raced; the unique index decided.
        raise Conflict(
            "An account with this email address already exists; sign in instead."
        ) from None
    return account


def account_update_timezone(*, account: Account, timezone_name: str, ip: str | None) -> None:
    previous = account.timezone
    account.timezone = timezone_name
    with transaction.atomic():
        account.save(update_fields=["timezone", "updated_at"])
        audit_record(
            account=account,
            action="account.timezone_changed",
            ip=ip,
            old=previous,
            new=timezone_name,
        )


def account_delete(*, account: Account, password: str, ip: str | None) -> None:
    if not account.check_password(password):
        audit_record(account=account, action="account.delete_failed", ip=ip)
        raise Unauthorized("The password is wrong; the account was not deleted.")
    logger.info("Deleting account %s at the owner's request from %s", account.id, ip)
    # Cascades take domains, policies, webhooks, messages, tokens and the audit log.
    account.delete()


# --- Sessions -------------------------------------------------------------------


@dataclass(frozen=True)
class IssuedSession:
    session: AuthSession
    access_token: str
    refresh_token: str

    @property
    def expires_in(self) -> int:
        return settings.CONDUIT_ACCESS_TOKEN_TTL


def session_issue(
    *, account: Account, ip: str | None, user_agent: str, chain_id: object | None = None
) -> IssuedSession:
    access, access_hash = new_token(ACCESS_PREFIX)
    refresh, refresh_hash = new_token(REFRESH_PREFIX)
    now = timezone.now()
    extra = {"chain_id": chain_id} if chain_id is not None else {}
    session = AuthSession.objects.create(
        account=account,
        access_token_hash=access_hash,
        refresh_token_hash=refresh_hash,
        access_expires_at=now + timedelta(seconds=settings.CONDUIT_ACCESS_TOKEN_TTL),
        refresh_expires_at=now + timedelta(seconds=settings.CONDUIT_REFRESH_TOKEN_TTL),
        ip=ip,
        user_agent=user_agent[:256],
        **extra,
    )
    return IssuedSession(session=session, access_token=access, refresh_token=refresh)


def account_authenticate(*, email: str, password: str, ip: str | None) -> Account:
    """Check a password sign-in, with throttling; the account on success, else 401/429."""
    email = normalise_email(email)
    throttling.ensure_not_locked(scope=throttling.SIGNIN, account_key=email, ip=ip)
    account = Account.objects.filter(email__iexact=email).first()
    if account is None:
        check_password(password, _DUMMY_PASSWORD_HASH)
        ok = False
    else:
        ok = account.check_password(password) and account.is_active
    if not ok:
        throttling.record_failure(scope=throttling.SIGNIN, account_key=email, ip=ip)
        audit_record(
            account=account,
            action="session.sign_in_failed",
            ip=ip,
            **({} if account else {"email": email}),
        )
        raise Unauthorized(INVALID_CREDENTIALS, code="unauthorized")
    throttling.clear_failures(scope=throttling.SIGNIN, account_key=email, ip=ip)
    return account


def session_refresh(*, refresh_token: str, ip: str | None, user_agent: str) -> IssuedSession:
    now = timezone.now()
    # The row lock makes two concurrent refreshes of one token see each other:
    # the second finds it rotated and is treated as reuse.
    with transaction.atomic():
        session = (
            AuthSession.objects.select_for_update()
            .select_related("account")
            .filter(refresh_token_hash=hash_token(refresh_token))
            .first()
        )
        if session is None or session.revoked_at is not None:
            raise Unauthorized("The refresh token is invalid or revoked; sign in again.")
        reused = session.rotated_at is not None
        if reused:
            # Committed before the 401 below: the revocation must outlive the error.
            revoked = AuthSession.objects.filter(
                chain_id=session.chain_id, revoked_at__isnull=True
            ).update(revoked_at=now)
            audit_record(
                account=session.account,
                action="session.refresh_token_reused",
                ip=ip,
                chain_id=str(session.chain_id),
                sessions_revoked=revoked,
            )
        elif session.refresh_expires_at > now and session.account.is_active:
            session.rotated_at = now
            session.save(update_fields=["rotated_at"])
            return session_issue(
                account=session.account, ip=ip, user_agent=user_agent, chain_id=session.chain_id
            )
    if reused:
        raise Unauthorized(
            "This refresh token was already used; every session descended from it has "
            "been signed out. Sign in again."
        )
    raise Unauthorized("The refresh token has expired; sign in again.")


def session_sign_out(
    *, account: Account, current: AuthSession | None, refresh_token: str | None, ip: str | None
) -> None:
    now = timezone.now()
    ids = []
    if current is not None:
        ids.append(current.id)
    if refresh_token:
        other = AuthSession.objects.filter(
            account=account, refresh_token_hash=hash_token(refresh_token)
        ).first()
        if other is not None:
            ids.append(other.id)
    with transaction.atomic():
        AuthSession.objects.filter(id__in=ids, revoked_at__isnull=True).update(revoked_at=now)
        audit_record(account=account, action="session.signed_out", ip=ip)


def sessions_revoke_all(*, account: Account, keep: AuthSession | None = None) -> int:
    sessions = AuthSession.objects.filter(account=account, revoked_at__isnull=True)
    if keep is not None:
        sessions = sessions.exclude(id=keep.id)
    return sessions.update(revoked_at=timezone.now())


# --- Passwords --------------------------------------------------------------------


def password_change(
    *,
    account: Account,
    current_password: str,
    new_password: str,
    revoke_api_tokens: bool,
    current_session: AuthSession | None,
    ip: str | None,
) -> None:
    if not account.check_password(current_password):
        audit_record(account=account, action="password.change_failed", ip=ip)
        raise Unauthorized("The current password is wrong.")
    _check_password_strength(new_password, email=account.email, field="new_password")
    with transaction.atomic():
        account.set_password(new_password)
        account.save(update_fields=["password", "updated_at"])
        revoked = sessions_revoke_all(account=account, keep=current_session)
        tokens_revoked = 0
        if revoke_api_tokens:
            tokens_revoked, _ = ApiToken.objects.filter(account=account).delete()
        audit_record(
            account=account,
            action="password.changed",
            ip=ip,
            sessions_revoked=revoked,
            api_tokens_revoked=tokens_revoked,
        )


def password_reset_request(*, email: str, ip: str | None) -> None:
    """Email a reset link when an active account has this address; nothing otherwise.

    Runs in a task (``accounts.tasks.send_password_reset``), never in the
    request: the request must do the same work whether or not the account
    exists, or its answer time would tell.
    """
    account = Account.objects.filter(email__iexact=normalise_email(email), is_active=True).first()
    if account is None:
        return
    token, token_hash = new_token(RESET_PREFIX)
    ttl = settings.CONDUIT_PASSWORD_RESET_TTL
    # The token and its audit entry together; the mail goes after the commit
    # (below), so a token is never mailed that was not stored.
    with transaction.atomic():
        PasswordResetToken.objects.create(
            account=account,
            token_hash=token_hash,
            expires_at=timezone.now() + timedelta(seconds=ttl),
        )
        audit_record(account=account, action="password.reset_requested", ip=ip)
    context = {
        "account": account,
        "token": token,
        "reset_url": settings.CONDUIT_PASSWORD_RESET_URL.replace("{token}", token),
        "valid_minutes": ttl // 60,
        "ip": ip,
    }
    subject = render_to_string("accounts/password_reset_subject.txt", context).strip()
    body = render_to_string("accounts/password_reset_email.txt", context)
    try:
        send_mail(subject, body, None, [account.email])
    except OSError:
        logger.exception("Could not send the password reset email to account %s", account.id)


def password_reset_confirm(*, token: str, new_password: str, ip: str | None) -> None:
    now = timezone.now()
    with transaction.atomic():
        reset = (
            PasswordResetToken.objects.select_for_update()
            .select_related("account")
            .filter(token_hash=hash_token(token))
            .first()
        )
        if reset is None or reset.used_at is not None or reset.expires_at <= now:
            raise Unauthorized(
                "The reset token is invalid, expired or already used; request a new one."
            )
        account = reset.account
        _check_password_strength(new_password, email=account.email, field="new_password")
        account.set_password(new_password)
        account.save(update_fields=["password", "updated_at"])
        reset.used_at = now
        reset.save(update_fields=["used_at"])
        # Whoever knew the old password is signed out everywhere.
        revoked = sessions_revoke_all(account=account)
        audit_record(account=account, action="password.reset", ip=ip, sessions_revoked=revoked)


# --- API tokens ----------------------------------------------------------------------


@dataclass(frozen=True)
class IssuedApiToken:
    api_token: ApiToken
    token: str


def normalise_ip_entries(entries: list[str]) -> list[str]:
    """IPs and CIDRs in canonical form (``conduit.ipnets``); ValueError names the first
    bad entry."""
    try:
        return ipnets.normalise_networks(entries)
    except ipnets.BadNetworks as exc:
        raise ValueError(f"'{exc.entries[0]}' is not an IP address or CIDR network") from None


def api_token_create(
    *,
    account: Account,
    name: str,
    expires_in: int | None,
    allowed_ips: list[str],
    ip: str | None,
) -> IssuedApiToken:
    token, token_hash = new_token(API_TOKEN_PREFIX)
    expires_at = timezone.now() + timedelta(seconds=expires_in) if expires_in else None
    with transaction.atomic():
        api_token = ApiToken.objects.create(
            account=account,
            name=name,
            token_hash=token_hash,
            token_start=token[: len(API_TOKEN_PREFIX) + 4],
            allowed_ips=allowed_ips,
            expires_at=expires_at,
        )
        audit_record(
            account=account,
            action="api_token.created",
            ip=ip,
            token_id=str(api_token.id),
            name=name,
        )
    return IssuedApiToken(api_token=api_token, token=token)


def api_token_delete(*, api_token: ApiToken, ip: str | None) -> None:
    # Without the transaction a failed delete would leave a "revoked" entry
    # for a token that still works.
    with transaction.atomic():
        audit_record(
            account=api_token.account,
            action="api_token.revoked",
            ip=ip,
            token_id=str(api_token.id),
            name=api_token.name,
        )
        api_token.delete()
