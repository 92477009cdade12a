"""Counting failed SMTP AUTH attempts, per client address and per username.

Guessing passwords over SMTP must cost the guesser, never the account's
owner. Two limits, each over a window of CONDUIT_SMTP_AUTH_FAILURE_WINDOW
seconds that starts at the first failure:

- a client address with CONDUIT_SMTP_AUTH_MAX_FAILURES_PER_IP failures gets
  421 for every further AUTH, whatever the username;
- a username with CONDUIT_SMTP_AUTH_MAX_FAILURES_PER_USERNAME failures
  (from anywhere) gets 421 from every address that has already failed for
  it. An address that has not is still heard, so the owner's right password
  from their own server works while a guesser elsewhere is held off; a
  guesser with many addresses gets one try per address and window.

After a 421 the session is closed (the sender must reconnect to try again).
The counters live in the shared cache (Redis in production), so every
ingress process counts together. If the cache is unreachable, AUTH goes on
unthrottled and a warning is logged: refusing every login while Redis
restarts would lock out every sender, for a limit that only slows guessing.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from typing import TypeVar

from django.conf import settings
from django.core.cache import cache

logger = logging.getLogger("conduit.ingress")

T = TypeVar("T")


class TooManyFailures(Exception):
    """AUTH refused without a check; ``reply`` is the 421 to send before closing."""

    def __init__(self, reply: str) -> None:
        super().__init__(reply)
        self.reply = reply


def _key(kind: str, *values: str) -> str:
    digest = hashlib.sha256("\0".join(values).encode("utf-8", "replace")).hexdigest()[:32]
    return f"smtp-auth-failures:{kind}:{digest}"


def _keys(username: str, ip: str) -> tuple[str, str, str]:
    # Usernames match case-insensitively (decisions.authenticate), so count them so.
    name = username.casefold()
    return _key("ip", ip), _key("user", name), _key("pair", name, ip)


def _quietly(action: Callable[[], T], default: T) -> T:
    try:
        return action()
    except Exception:
        logger.warning("SMTP AUTH throttling skipped: the cache is unavailable", exc_info=True)
        return default


def ensure_allowed(*, username: str, ip: str) -> None:
    """Raise TooManyFailures when this address, or this username from this
    address, has used up its failures."""
    ip_key, user_key, pair_key = _keys(username, ip)
    counts = _quietly(lambda: cache.get_many([ip_key, user_key, pair_key]), {})
    if counts.get(ip_key, 0) >= settings.CONDUIT_SMTP_AUTH_MAX_FAILURES_PER_IP:
        raise TooManyFailures(f"421 4.7.0 Too many failed AUTH attempts from {ip}; try again later")
    if (
        counts.get(user_key, 0) >= settings.CONDUIT_SMTP_AUTH_MAX_FAILURES_PER_USERNAME
        and counts.get(pair_key, 0) > 0
    ):
        raise TooManyFailures(
            "421 4.7.0 Too many failed AUTH attempts for this username; try again later"
        )


def record_failure(*, username: str, ip: str) -> None:
    window = settings.CONDUIT_SMTP_AUTH_FAILURE_WINDOW

    def count() -> None:
        for key in _keys(username, ip):
            # add() starts the window; incr() keeps the key's expiry.
            cache.add(key, 0, timeout=window)
            try:
                cache.incr(key)
            except ValueError:  # expired between add and incr
                cache.set(key, 1, timeout=window)

    _quietly(count, None)


def record_success(*, username: str, ip: str) -> None:
    """A login that worked forgets this address's failures for the username
    (not the address's own count: one valid login must not reset a guesser)."""
    pair_key = _keys(username, ip)[2]
    _quietly(lambda: cache.delete(pair_key), None)
