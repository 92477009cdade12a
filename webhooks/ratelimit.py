"""Per-webhook delivery rate limits (deliveries per minute), shared by all workers.

With Redis, a sliding one-minute window per webhook is kept in a sorted set and
checked-and-taken by one Lua script, so two workers can never both take the
last slot. With the embedded default (no Redis) the database is the shared
state: recent attempts and in-flight deliveries of the webhook are counted
inside the transaction that claims the delivery (webhooks.delivery._claim),
which holds the webhook's row locked (SQLite: the database) until the slot is
taken.
"""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta
from functools import lru_cache

import redis
from django.conf import settings
from django.utils import timezone

logger = logging.getLogger(__name__)

WINDOW_SECONDS = 60

# Returns 0 when a slot was taken, else the milliseconds until one frees up.
_SLIDING_WINDOW = """
local key = KEYS[1]
local window = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
if redis.call('ZCARD', key) < limit then
  redis.call('ZADD', key, now, ARGV[3])
  redis.call('PEXPIRE', key, window)
  return 0
end
local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
return math.max(1, tonumber(oldest[2]) + window - now)
"""


@lru_cache(maxsize=1)
def _script() -> redis.commands.core.Script:
    client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
    return client.register_script(_SLIDING_WINDOW)


def acquire(*, webhook_id: uuid.UUID, limit: int) -> float:
    """Take one delivery slot: 0.0 when granted, else the seconds to wait."""
    if limit <= 0:
        return 0.0
    if settings.REDIS_URL:
        try:
            wait_ms = _script()(
                keys=[f"ratelimit:webhook:{webhook_id}"],
                args=[WINDOW_SECONDS * 1000, limit, uuid.uuid4().hex],
            )
            return int(wait_ms) / 1000.0
        except redis.RedisError:
            logger.warning("Rate limit store unreachable; counting in the database instead")
    return _acquire_from_database(webhook_id=webhook_id, limit=limit)


def _acquire_from_database(*, webhook_id: uuid.UUID, limit: int) -> float:
    from webhooks.models import Delivery, DeliveryLog

    now = timezone.now()
    since = now - timedelta(seconds=WINDOW_SECONDS)
    recent = list(
        DeliveryLog.objects.filter(webhook_id=webhook_id, simulated=False, attempted_at__gt=since)
        .order_by("attempted_at")
        .values_list("attempted_at", flat=True)[:limit]
    )
    in_flight = Delivery.objects.filter(
        webhook_id=webhook_id, status=Delivery.Status.DELIVERING
    ).count()
    if len(recent) + in_flight < limit:
        return 0.0
    if recent:
        return max(1.0, (recent[0] + timedelta(seconds=WINDOW_SECONDS) - now).total_seconds())
    return 1.0
