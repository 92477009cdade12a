"""The state machine's rule: an attempt's outcome → the delivery's next state."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from webhooks import retry
from webhooks.delivery import COUNTDOWN_LIMIT, next_state
from webhooks.models import Delivery
from webhooks.outbound import AttemptResult, ErrorKind

NOW = datetime(2026, 4, 2, 12, 0, tzinfo=UTC)
PENDING, DELIVERED, FAILED = (
    Delivery.Status.PENDING,
    Delivery.Status.DELIVERED,
    Delivery.Status.FAILED,
)
LAST = retry.MAX_ATTEMPTS


def attempt(status=None, kind=None, error="", retry_after=None) -> AttemptResult:
    return AttemptResult(
        http_status=status,
        duration_ms=5,
        error=error,
        error_kind=kind,
        response_body="",
        retry_after=retry_after,
    )


# (the attempt, attempts made with it) → (status, last_error, queued with a
# countdown, webhook deactivated)
TABLE = [
    (attempt(200), 1, DELIVERED, "", False, False),
    (attempt(204, error="ignored"), 3, DELIVERED, "", False, False),
    (attempt(500), 1, PENDING, "HTTP 500", True, False),
    (attempt(503), 2, PENDING, "HTTP 503", False, False),  # 5 minutes: left to the sweep
    (attempt(500), LAST, FAILED, "HTTP 500", False, False),
    (attempt(302), 1, PENDING, "HTTP 302", True, False),
    (attempt(408), 1, PENDING, "HTTP 408", True, False),
    (attempt(429), 1, PENDING, "HTTP 429", True, False),  # slowed down to 60 s
    (attempt(400), 1, FAILED, "HTTP 400", False, False),
    (attempt(404, error="Not here"), 1, FAILED, "Not here", False, False),
    (attempt(410), 1, FAILED, "HTTP 410", False, True),
    (attempt(None, ErrorKind.CONNECT, "refused"), 1, PENDING, "refused", True, False),
    (attempt(None, ErrorKind.TIMEOUT, "timed out"), 1, PENDING, "timed out", True, False),
    (attempt(None, ErrorKind.SSRF, "private"), 1, FAILED, "private", False, False),
    (attempt(None, ErrorKind.TEMPLATE, "bad template"), 1, FAILED, "bad template", False, False),
    (attempt(None, ErrorKind.OTHER, "crashed"), 1, PENDING, "crashed", True, False),
    (attempt(None, ErrorKind.CONNECT, "refused"), LAST, FAILED, "refused", False, False),
]


@pytest.mark.parametrize(("result", "made", "status", "error", "queued", "gone"), TABLE)
def test_it_moves_the_delivery_to_its_next_state(result, made, status, error, queued, gone):
    state = next_state(attempt=result, attempts_made=made, now=NOW, rng=random.Random(1))

    assert state.update["status"] == status
    assert state.update["last_error"] == error
    assert state.update["attempts"] == made
    assert state.update["leased_until"] is None
    assert state.update["updated_at"] == NOW
    assert (state.countdown is not None) == queued
    assert bool(state.deactivate) == gone
    if status == PENDING:
        due = state.update["next_attempt_at"]
        assert due > NOW
        assert state.update["enqueued_at"] == (due if queued else None)
        if queued:
            assert timedelta(seconds=state.countdown) == due - NOW <= COUNTDOWN_LIMIT
    else:
        assert state.update["next_attempt_at"] is None
    if status == DELIVERED:
        assert state.update["delivered_at"] == NOW


def test_it_honours_retry_after_within_its_cap():
    state = next_state(attempt=attempt(503, retry_after="120"), attempts_made=1, now=NOW)
    assert state.update["next_attempt_at"] == NOW + timedelta(seconds=120)
    assert state.countdown is None  # over a minute: the sweep queues it


def test_a_410_says_when_the_target_was_gone():
    state = next_state(attempt=attempt(410), attempts_made=1, now=NOW)
    assert state.deactivate == "The target answered 410 Gone at 2026-04-02 12:00:00 UTC"
