"""Counting failed credential checks, per account and per client address.

Counters live in the shared cache (Redis in production), so every web process
sees the same numbers. A window starts at the first failure and lasts
CONDUIT_SIGNIN_FAILURE_WINDOW seconds; while a counter is at its limit the
caller gets 429 with the seconds left in Retry-After.
"""

from __future__ import annotations

import hashlib
import time

from django.conf import settings
from django.core.cache import cache

from conduit.errors import RateLimited


def _key(kind: str, value: str) -> str:
    digest = hashlib.sha256(value.encode()).hexdigest()[:32]
    return f"failures:{kind}:{digest}"


def _subjects(*, scope: str, account_key: str | None, ip: str | None) -> list[tuple[str, int]]:
    subjects = []
    if account_key:
        subjects.append(
            (
                _key(f"{scope}:account", account_key),
                settings.CONDUIT_SIGNIN_MAX_FAILURES_PER_ACCOUNT,
            )
        )
    if ip:
        subjects.append((_key(f"{scope}:ip", ip), settings.CONDUIT_SIGNIN_MAX_FAILURES_PER_IP))
    return subjects


def ensure_not_locked(*, scope: str, account_key: str | None, ip: str | None) -> None:
    """Raise 429 when the account or the address has used up its failures."""
    now = time.time()
    for key, limit in _subjects(scope=scope, account_key=account_key, ip=ip):
        state = cache.get_many([key, key + ":start"])
        count = state.get(key) or 0
        if count >= limit:
            started = state.get(key + ":start") or now
            wait = started + settings.CONDUIT_SIGNIN_FAILURE_WINDOW - now
            raise RateLimited(
                f"Too many failed attempts; try again in {max(1, int(wait))} seconds.",
                retry_after=max(1.0, wait),
            )


def record_failure(*, scope: str, account_key: str | None, ip: str | None) -> None:
    window = settings.CONDUIT_SIGNIN_FAILURE_WINDOW
    for key, _limit in _subjects(scope=scope, account_key=account_key, ip=ip):
        if cache.add(key, 0, timeout=window):
            cache.set(key + ":start", time.time(), timeout=window)
        try:
            cache.incr(key)
        except ValueError:  # expired between add and incr
            cache.set(key, 1, timeout=window)
            cache.set(key + ":start", time.time(), timeout=window)


def clear_failures(*, scope: str, account_key: str) -> None:
    key = _key(f"{scope}:account", account_key)
    cache.delete_many([key, key + ":start"])
