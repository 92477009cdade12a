"""The operator's picture of the last 24 hours: deliveries per hour by outcome, and
the webhooks whose deliveries are failing. Laid out here as plain numbers and SVG
coordinates, so the admin's template only draws and the tests read the figures."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from webhooks.selectors import delivery_outcomes_since

HOURS = 24
# Bottom to top in each bar, with the colour and the legend's label.
OUTCOMES: dict[str, tuple[str, str]] = {
    "delivered": ("Delivered", "#3b8a3e"),
    "pending": ("Waiting", "#8c8c8c"),
    "delivering": ("Sending", "#417690"),
    "retrying": ("Retrying", "#e0a100"),
    "failed": ("Failed", "#ba2121"),
}
# The chart's drawing area in SVG units (it scales to the page's width).
BAR_WIDTH = 30
BAR_GAP = 6
CHART_HEIGHT = 120


@dataclass(frozen=True)
class Segment:
    outcome: str
    label: str
    colour: str
    count: int
    y: float
    height: float


@dataclass
class HourBar:
    start: datetime
    x: int
    counts: dict[str, int] = field(default_factory=dict)
    segments: list[Segment] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass
class FailingWebhook:
    id: uuid.UUID
    address: str
    failed: int = 0
    retrying: int = 0
    last_failure_at: datetime | None = None


@dataclass
class DeliveryDashboard:
    since: datetime
    bars: list[HourBar]
    totals: dict[str, int]
    failing: list[FailingWebhook]
    width: int = HOURS * (BAR_WIDTH + BAR_GAP)
    bar_width: int = BAR_WIDTH
    height: int = CHART_HEIGHT

    @property
    def legend(self) -> list[tuple[str, str, int]]:
        return [(label, colour, self.totals[name]) for name, (label, colour) in OUTCOMES.items()]


def delivery_dashboard(*, now: datetime) -> DeliveryDashboard:
    """The last 24 hours, in hourly bars ending with the current (partial) hour."""
    current_hour = now.replace(minute=0, second=0, microsecond=0)
    since = current_hour - timedelta(hours=HOURS - 1)
    bars = {
        since + timedelta(hours=n): HourBar(
            start=since + timedelta(hours=n), x=n * (BAR_WIDTH + BAR_GAP)
        )
        for n in range(HOURS)
    }
    totals = dict.fromkeys(OUTCOMES, 0)
    failing: dict[uuid.UUID, FailingWebhook] = {}
    for row in delivery_outcomes_since(since=since):
        bar = bars.get(row["hour"])
        if bar is None:  # created in the future by a skewed clock: not part of the picture
            continue
        outcome = row["outcome"]
        bar.counts[outcome] = bar.counts.get(outcome, 0) + row["count"]
        totals[outcome] += row["count"]
        if row["troubled_webhook_id"] is not None:
            webhook = failing.setdefault(
                row["troubled_webhook_id"],
                FailingWebhook(id=row["troubled_webhook_id"], address=row["address"]),
            )
            setattr(webhook, outcome, getattr(webhook, outcome) + row["count"])
            if webhook.last_failure_at is None or row["last_at"] > webhook.last_failure_at:
                webhook.last_failure_at = row["last_at"]
    tallest = max((bar.total for bar in bars.values()), default=0)
    for bar in bars.values():
        bar.segments = _stack(bar.counts, tallest)
    return DeliveryDashboard(
        since=since,
        bars=list(bars.values()),
        totals=totals,
        failing=sorted(failing.values(), key=lambda w: w.last_failure_at, reverse=True),
    )


def _stack(counts: dict[str, int], tallest: int) -> list[Segment]:
    segments = []
    top = float(CHART_HEIGHT)
    for name, (label, colour) in OUTCOMES.items():
        count = counts.get(name, 0)
        if not count:
            continue
        height = CHART_HEIGHT * count / tallest
        top -= height
        segments.append(Segment(name, label, colour, count, round(top, 2), round(height, 2)))
    return segments
