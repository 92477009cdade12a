import random
from datetime import UTC, datetime, timedelta

import pytest

from webhooks.retry import (
    MAX_ATTEMPTS,
    SCHEDULE,
    ErrorKind,
    classify,
    next_delay,
    parse_retry_after,
)

NOW = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)


def test_schedule_shape():
    assert [d.total_seconds() for d in SCHEDULE] == [
        5,
        5 * 60,
        30 * 60,
        2 * 3600,
        5 * 3600,
        10 * 3600,
        14 * 3600,
        20 * 3600,
        24 * 3600,
    ]
    assert isinstance(SCHEDULE, tuple)
    assert all(isinstance(d, timedelta) for d in SCHEDULE)
    assert MAX_ATTEMPTS == 10


@pytest.mark.parametrize("attempts_made", range(1, MAX_ATTEMPTS))
def test_next_delay_is_schedule_with_jitter(attempts_made):
    rng = random.Random(1234)
    base = SCHEDULE[attempts_made - 1]
    for _ in range(200):
        delay = next_delay(attempts_made=attempts_made, rng=rng)
        assert delay is not None
        assert base * 0.8 <= delay <= base * 1.2


def test_jitter_actually_varies_and_is_seeded():
    a = [next_delay(attempts_made=3, rng=random.Random(7)) for _ in range(3)]
    assert len(set(a)) == 1  # same seed, same answer
    rng = random.Random(7)
    many = {next_delay(attempts_made=3, rng=rng) for _ in range(50)}
    assert len(many) > 40
    assert min(many) < SCHEDULE[2] < max(many)


def test_jitter_bounds_at_extremes():
    class Fixed(random.Random):
        def __init__(self, value):
            super().__init__(0)
            self.value = value

        def uniform(self, a, b):
            return a if self.value == "low" else b

    assert next_delay(attempts_made=1, rng=Fixed("low")) == timedelta(seconds=4)
    assert next_delay(attempts_made=1, rng=Fixed("high")) == timedelta(seconds=6)


@pytest.mark.parametrize("attempts_made", [MAX_ATTEMPTS, MAX_ATTEMPTS + 1, 100])
def test_no_delay_after_last_attempt(attempts_made):
    assert next_delay(attempts_made=attempts_made, rng=random.Random(1)) is None


def test_last_retry_is_after_ninth_attempt():
    assert next_delay(attempts_made=MAX_ATTEMPTS - 1, rng=random.Random(1)) is not None


def test_attempts_made_must_be_positive():
    with pytest.raises(ValueError):
        next_delay(attempts_made=0)


def test_slow_down_floor():
    rng = random.Random(99)
    for attempts_made in (1, 2):
        delay = next_delay(attempts_made=attempts_made, slow_down=True, rng=rng)
        assert delay >= timedelta(seconds=60)
    assert next_delay(attempts_made=1, slow_down=True, rng=rng) == timedelta(seconds=60)
    # Floor does not shrink longer delays.
    assert next_delay(attempts_made=4, slow_down=True, rng=rng) >= timedelta(hours=2) * 0.8


def test_retry_after_is_a_lower_bound():
    rng = random.Random(3)
    assert next_delay(attempts_made=1, retry_after=600, rng=rng) == timedelta(seconds=600)
    # A shorter Retry-After does not shorten the schedule.
    delay = next_delay(attempts_made=4, retry_after=1, rng=rng)
    assert delay >= timedelta(hours=2) * 0.8


def test_retry_after_is_capped_at_24h():
    rng = random.Random(3)
    assert next_delay(attempts_made=1, retry_after=10**9, rng=rng) == timedelta(hours=24)
    assert next_delay(attempts_made=1, retry_after=float("inf"), rng=rng) == timedelta(hours=24)
    # The cap limits Retry-After, not the schedule's own jittered 24 h step.
    delay = next_delay(attempts_made=9, retry_after=10**9, rng=random.Random(5))
    assert timedelta(hours=24) <= delay <= timedelta(hours=24) * 1.2


def test_retry_after_zero_or_negative_is_ignored():
    rng = random.Random(3)
    assert next_delay(attempts_made=1, retry_after=0, rng=rng) <= timedelta(seconds=6)
    assert next_delay(attempts_made=1, retry_after=-50, rng=rng) <= timedelta(seconds=6)


def test_retry_after_and_slow_down_combined():
    delay = next_delay(attempts_made=1, retry_after=30, slow_down=True, rng=random.Random(1))
    assert delay == timedelta(seconds=60)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", 120.0),
        ("  0 ", 0.0),
        ("1.5", 1.5),
        ("Wed, 01 Jan 2025 12:02:00 GMT", 120.0),
        ("Wednesday, 01-Jan-25 12:00:30 GMT", 30.0),  # RFC 850
        ("Wed Jan  1 12:00:10 2025", 10.0),  # asctime, naive = UTC
        ("Tue, 31 Dec 2024 12:00:00 GMT", 0.0),  # in the past
    ],
)
def test_parse_retry_after_valid(value, expected):
    assert parse_retry_after(value, now=NOW) == pytest.approx(expected)


@pytest.mark.parametrize(
    "value",
    [None, "", "   ", "soon", "-5", "1e3", "12 s", "Wed, 99 Oct 2015 07:28:00 GMT", "0x10"],
)
def test_parse_retry_after_garbage(value):
    assert parse_retry_after(value, now=NOW) is None


def test_parse_retry_after_naive_now_is_utc():
    naive = NOW.replace(tzinfo=None)
    assert parse_retry_after("Wed, 01 Jan 2025 12:01:00 GMT", now=naive) == 60.0


@pytest.mark.parametrize(
    ("http_status", "error_kind", "expected"),
    [
        (200, None, "delivered"),
        (201, None, "delivered"),
        (204, None, "delivered"),
        (299, None, "delivered"),
        (200, ErrorKind.TIMEOUT, "delivered"),  # answered 200, then stalled the body
        (None, ErrorKind.CONNECT, "retry"),
        (None, ErrorKind.TIMEOUT, "retry"),
        (None, ErrorKind.OTHER, "retry"),
        (None, None, "retry"),
        (301, None, "retry"),
        (302, None, "retry"),
        (307, None, "retry"),
        (308, None, "retry"),
        (408, None, "retry"),
        (429, None, "retry"),
        (500, None, "retry"),
        (502, None, "retry"),
        (503, None, "retry"),
        (599, None, "retry"),
        (410, None, "gone"),
        (400, None, "final"),
        (401, None, "final"),
        (403, None, "final"),
        (404, None, "final"),
        (413, None, "final"),
        (422, None, "final"),
        (499, None, "final"),
        (None, ErrorKind.SSRF, "final"),
        (None, ErrorKind.TEMPLATE, "final"),
    ],
)
def test_classify(http_status, error_kind, expected):
    assert classify(http_status=http_status, error_kind=error_kind) == expected
