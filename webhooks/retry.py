"""Retry schedule arithmetic for webhook deliveries.

Pure functions so the policy is easy to test and reason about; the delivery task
decides what to do with the answers.  A delivery is attempted at most
``MAX_ATTEMPTS`` times; the gaps between attempts follow ``SCHEDULE`` (about three
days in total), jittered so that a recovering receiver is not hit by a thundering
herd of retries at the same instant.
"""

from __future__ import annotations

import enum
import random
import re
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Literal

SCHEDULE: tuple[timedelta, ...] = (
    timedelta(seconds=5),
    timedelta(minutes=5),
    timedelta(minutes=30),
    timedelta(hours=2),
    timedelta(hours=5),
    timedelta(hours=10),
    timedelta(hours=14),
    timedelta(hours=20),
    timedelta(hours=24),
)
"""Delay after attempt 1, 2, ... 9.  There is no delay after the last attempt."""

MAX_ATTEMPTS = len(SCHEDULE) + 1
"""After this many attempts without success the delivery has failed."""

JITTER = 0.2
"""Each delay is multiplied by a random factor in [1 - JITTER, 1 + JITTER]."""

SLOW_DOWN_FLOOR = timedelta(seconds=60)
"""Minimum delay after the receiver was overwhelmed (timeout or 429)."""

RETRY_AFTER_CAP = timedelta(hours=24)
"""We honour a receiver's Retry-After up to this long, never longer."""

Outcome = Literal["delivered", "retry", "final", "gone"]


class ErrorKind(enum.StrEnum):
    """Why an attempt got no usable answer; the values are what logs and code compare."""

    CONNECT = "connect"  # DNS, refused, reset, TLS: retried
    TIMEOUT = "timeout"  # retried, at least 60 s later
    SSRF = "ssrf"  # the target is not a public address: final
    OTHER = "other"  # a malformed URL or header, anything unexpected: retried
    TEMPLATE = "template"  # the payload template could not be rendered: final, never sent


# Kinds that the same attempt would meet again: retrying cannot help.
FINAL_KINDS = frozenset({ErrorKind.SSRF, ErrorKind.TEMPLATE})

_DELTA_SECONDS = re.compile(r"\d+(?:\.\d+)?")
_default_rng = random.Random()


def classify(*, http_status: int | None, error_kind: ErrorKind | None) -> Outcome:
    """Decide what an attempt's outcome means for the delivery.

    - ``delivered``: a 2xx answer.
    - ``retry``: transient problems: no answer (connect error, timeout, other network
      failure), 3xx (we never follow redirects, the receiver may fix its URL),
      408, 429 and 5xx.
    - ``gone``: 410; the delivery is final and the webhook should be deactivated.
    - ``final``: any other 4xx (the receiver rejects this message; retrying the same
      bytes will not help), and attempts that would meet the same error again
      (``FINAL_KINDS``: a target the SSRF guard refuses, a template that cannot
      be rendered).

    A status code, when there is one, wins over ``error_kind``: a receiver that sent
    its status line and then stalled the body has still answered.  Anything
    unexpected (1xx, codes >= 600, no status and no error) is treated as transient.
    """
    if error_kind in FINAL_KINDS:
        return "final"
    if http_status is None:
        return "retry"
    if 200 <= http_status < 300:
        return "delivered"
    if http_status == 410:
        return "gone"
    if http_status in (408, 429):
        return "retry"
    if 400 <= http_status < 500:
        return "final"
    return "retry"


def next_delay(
    *,
    attempts_made: int,
    retry_after: float | None = None,
    slow_down: bool = False,
    rng: random.Random | None = None,
) -> timedelta | None:
    """Return how long to wait before the next attempt, or None when out of attempts.

    ``attempts_made`` counts attempts including the one that just failed (so 1 after
    the first try).  The scheduled delay gets +/-20 % jitter; ``slow_down`` (after a
    timeout or 429) enforces at least 60 s; a receiver's ``retry_after`` (seconds) is
    honoured as a lower bound, but never beyond 24 h.
    """
    if attempts_made < 1:
        raise ValueError("attempts_made must be at least 1")
    if attempts_made >= MAX_ATTEMPTS:
        return None
    factor = (rng or _default_rng).uniform(1 - JITTER, 1 + JITTER)
    delay = SCHEDULE[attempts_made - 1] * factor
    if slow_down:
        delay = max(delay, SLOW_DOWN_FLOOR)
    if retry_after is not None and retry_after > 0:
        capped = min(retry_after, RETRY_AFTER_CAP.total_seconds())  # also tames inf
        delay = max(delay, timedelta(seconds=capped))
    return delay


def parse_retry_after(value: str | None, *, now: datetime) -> float | None:
    """Parse a Retry-After header into seconds from ``now``.

    Accepts delta-seconds ("120", leniently also "1.5") and HTTP-dates
    ("Wed, 21 Oct 2015 07:28:00 GMT"); a date in the past gives 0.0.  Returns None for
    a missing or unparseable value, so callers simply fall back to the schedule.
    A naive ``now`` or date is taken to be UTC.
    """
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    if _DELTA_SECONDS.fullmatch(value):
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())
