"""Counting failed credential checks: per address, per account, and per account from one address.

Counters live in the shared cache (Redis in production), so every web process
sees the same numbers. A window starts at the first failure and lasts
CONDUIT_SIGNIN_FAILURE_WINDOW seconds. A request is refused with 429 (and the
seconds left in Retry-After) when, within the window:

- its client address has CONDUIT_SIGNIN_MAX_FAILURES_PER_IP failures, whatever
  the accounts; or
- its address has CONDUIT_SIGNIN_MAX_FAILURES_PER_ACCOUNT failures on this
  account; or
- the account has CONDUIT_SIGNIN_MAX_FAILURES_PER_ACCOUNT failures from all
  addresses together *and* this address has at least one of them.

The last rule is the account lockout, and it only shuts out addresses that
have guessed wrong: the owner signing in from an address with no failure still
gets in with the right password, so knowing someone's email address is not
enough to lock them out, while a guesser spread over many addresses gets one
wrong guess per address per window once the account is under attack. The same
rules count wrong 2FA codes (scope ``totp``).

When the cache is unreachable the counts come from the audit log instead,
which records every failure anyway (``session.sign_in_failed``,
``totp.code_failed``); a warning is logged. Falling back rather than letting
every guess through keeps the limits during a Redis outage, when an attacker
who could cause one would otherwise guess freely; it costs a few indexed
queries per sign-in only while the cache is down.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import redis
from django.conf import settings
from django.core.cache import cache
from django.db.models import Count, Min, Q
from django.utils import timezone
from rest_framework.request import Request
from rest_framework.throttling import ScopedRateThrottle
from rest_framework.views import APIView

from accounts.models import AuditLogEntry
from conduit.errors import RateLimited

logger = logging.getLogger(__name__)

# What a cache backend raises when its server is gone: the Redis client's
# errors, or the file-based cache's OSError.
CACHE_ERRORS = (redis.RedisError, OSError)


@dataclass(frozen=True)
class Scope:
    """What is being guessed, and the audit entry each wrong guess leaves behind."""

    name: str
    audit_action: str
    # Audit entries of the account named by the caller's account key.
    audit_account: Callable[[str], Q]


SIGNIN = Scope(
    name="signin",
    audit_action="session.sign_in_failed",
    # The key is the email: a known account's entries carry the account, an
    # unknown address's carry the email in their metadata.
    audit_account=lambda email: (
        Q(account__email=email) | Q(account__isnull=True, metadata__email=email)
    ),
)
TOTP = Scope(
    name="totp",
    audit_action="totp.code_failed",
    audit_account=lambda account_id: Q(account_id=account_id),
)


@dataclass(frozen=True)
class _Count:
    failures: int
    started: float | None  # epoch seconds of the window's first failure


def _key(kind: str, value: str) -> str:
    digest = hashlib.sha256(value.encode()).hexdigest()[:32]
    return f"failures:{kind}:{digest}"


def _keys(*, scope: Scope, account_key: str, ip: str | None) -> dict[str, str]:
    keys = {"account": _key(f"{scope.name}:account", account_key)}
    if ip:
        keys["ip"] = _key(f"{scope.name}:ip", ip)
        keys["pair"] = _key(f"{scope.name}:pair", f"{account_key}\n{ip}")
    return keys


def _counts_from_cache(keys: dict[str, str]) -> dict[str, _Count]:
    names = [*keys.values(), *(key + ":start" for key in keys.values())]
    state = cache.get_many(names)
    return {
        kind: _Count(failures=state.get(key) or 0, started=state.get(key + ":start"))
        for kind, key in keys.items()
    }


def _counts_from_audit_log(*, scope: Scope, account_key: str, ip: str | None) -> dict[str, _Count]:
    since = timezone.now() - timedelta(seconds=settings.CONDUIT_SIGNIN_FAILURE_WINDOW)
    failures = AuditLogEntry.objects.filter(action=scope.audit_action, created_at__gte=since)
    subjects = {"account": scope.audit_account(account_key)}
    if ip:
        subjects["ip"] = Q(ip=ip)
        subjects["pair"] = scope.audit_account(account_key) & Q(ip=ip)
    counts = {}
    for kind, condition in subjects.items():
        row = failures.filter(condition).aggregate(n=Count("id"), first=Min("created_at"))
        started = row["first"].timestamp() if row["first"] else None
        counts[kind] = _Count(failures=row["n"], started=started)
    return counts


def _refusing(counts: dict[str, _Count]) -> _Count | None:
    """The counter that refuses the request, if one does (the rules in the docstring)."""
    per_ip = settings.CONDUIT_SIGNIN_MAX_FAILURES_PER_IP
    per_account = settings.CONDUIT_SIGNIN_MAX_FAILURES_PER_ACCOUNT
    none = _Count(failures=0, started=None)
    ip, pair, account = counts.get("ip", none), counts.get("pair", none), counts["account"]
    if ip.failures >= per_ip:
        return ip
    if pair.failures >= per_account:
        return pair
    if account.failures >= per_account and pair.failures >= 1:
        return account
    return None


def ensure_not_locked(*, scope: Scope, account_key: str, ip: str | None) -> None:
    """Raise 429 when this address may not try this account now."""
    keys = _keys(scope=scope, account_key=account_key, ip=ip)
    try:
        counts = _counts_from_cache(keys)
    except CACHE_ERRORS as exc:
        logger.warning(
            "The cache is unreachable (%s); counting %s failures from the audit log",
            exc,
            scope.name,
        )
        counts = _counts_from_audit_log(scope=scope, account_key=account_key, ip=ip)
    refusing = _refusing(counts)
    if refusing is not None:
        now = time.time()
        wait = (refusing.started or now) + settings.CONDUIT_SIGNIN_FAILURE_WINDOW - now
        raise RateLimited(
            f"Too many failed attempts; try again in {max(1, math.ceil(wait))} seconds.",
            retry_after=max(1.0, wait),
        )


def record_failure(*, scope: Scope, account_key: str, ip: str | None) -> None:
    """Count one wrong guess. The caller audits it too, which is the count without a cache."""
    window = settings.CONDUIT_SIGNIN_FAILURE_WINDOW
    try:
        for key in _keys(scope=scope, account_key=account_key, ip=ip).values():
            if cache.add(key, 0, timeout=window):
                cache.set(key + ":start", time.time(), timeout=window)
            try:
                cache.incr(key)
            except ValueError:  # expired between add and incr
                cache.set(key, 1, timeout=window)
                cache.set(key + ":start", time.time(), timeout=window)
    except CACHE_ERRORS as exc:
        logger.warning("The cache is unreachable (%s); the audit log keeps the count", exc)


def clear_failures(*, scope: Scope, account_key: str, ip: str | None) -> None:
    """A right answer: this account's counters start again (the address's total stays)."""
    keys = _keys(scope=scope, account_key=account_key, ip=ip)
    names = [keys["account"], *([keys["pair"]] if "pair" in keys else [])]
    try:
        cache.delete_many(names + [name + ":start" for name in names])
    except CACHE_ERRORS as exc:
        logger.warning("The cache is unreachable (%s); failure counters not cleared", exc)


class ScopedRateThrottleOrOpen(ScopedRateThrottle):
    """DRF's scoped rate limit (sign-up, password-reset requests), open while the cache is down.

    These limits spare mailboxes and the database a flood; they guard no
    secret, so an outage of the cache lets requests through (with a warning)
    rather than refusing every sign-up and reset with 500.
    """

    def allow_request(self, request: Request, view: APIView) -> bool:
        try:
            return super().allow_request(request, view)
        except CACHE_ERRORS as exc:
            logger.warning("The cache is unreachable (%s); %s not rate-limited", exc, request.path)
            return True
