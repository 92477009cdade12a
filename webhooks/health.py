"""When a webhook is failing, has recovered or should be switched off (plain; no Django).

The rule, once: a webhook is **failing** once ``failing_after`` attempts in a
row have failed (CONDUIT_NOTIFY_FAILING_AFTER, default 3). Every failed
attempt counts (a retry, a final failure, a 410); a delivered attempt resets
the count. Counting attempts in a row rather than "the first failure after a
success" keeps one unlucky timeout from alerting anybody, and three attempts
are over within about six minutes of the retry schedule (5 s, 5 min).

The count and the time of the streak's first failure live on the webhook row
and are written by the statement that records each attempt
(``storage.record_attempt``), which also returns the count before it: each
transition is seen exactly once, by the worker whose attempt made it, and the
usual delivered attempt pays no query to find out that nothing happened.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum


class Event(StrEnum):
    """What the account is told about (notifications); the values are the API's."""

    WEBHOOK_FAILING = "webhook_failing"
    DELIVERY_GAVE_UP = "delivery_gave_up"
    WEBHOOK_DEACTIVATED = "webhook_deactivated"
    WEBHOOK_RECOVERED = "webhook_recovered"
    MAIL_SILENT = "mail_silent"
    DOMAIN_DNS_CHANGED = "domain_dns_changed"


@dataclass(frozen=True)
class Streak:
    """A webhook's failed attempts in a row, just before and just after one attempt."""

    failures_before: int
    failures: int
    # The streak's first failed attempt: of the streak going on, or after a
    # success, of the one it ended; None when there was none.
    failing_since: datetime | None


def attempt_events(
    *, streak: Streak, delivered: bool, gave_up: bool, failing_after: int
) -> list[Event]:
    """The events one recorded attempt raises, from its streak alone.

    ``gave_up``: the attempt was the delivery's last (failed for good).
    """
    events: list[Event] = []
    if delivered:
        if streak.failures_before >= failing_after:
            events.append(Event.WEBHOOK_RECOVERED)
        return events
    # Exactly at the threshold: the streak's later failures are the same news.
    if streak.failures_before < failing_after <= streak.failures:
        events.append(Event.WEBHOOK_FAILING)
    if gave_up:
        events.append(Event.DELIVERY_GAVE_UP)
    return events


def failing_too_long(*, streak: Streak, now: datetime, limit: timedelta | None) -> bool:
    """Whether a webhook has failed every attempt for longer than ``limit``
    (CONDUIT_DEACTIVATE_FAILING_AFTER_HOURS; None: never switched off for it)."""
    if limit is None or streak.failing_since is None or streak.failures == 0:
        return False
    return now - streak.failing_since >= limit
