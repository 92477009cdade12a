"""The Celery broker transport: kombu's Redis transport, one client per channel.

kombu's Redis channel builds a new ``redis.Redis`` object for every message it
publishes (and every ack pipeline). The object is only a handle on the
channel's connection pool, but constructing it fills a table of ~170 response
callbacks: a quarter of the CPU of a task publish. redis-py clients are
thread-safe, so one per channel serves every publish; a new one is made
whenever kombu replaces the channel's pool (after a connection error).

Selected with CELERY_BROKER_TRANSPORT when REDIS_URL is set.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from kombu.transport import redis


class Channel(redis.Channel):
    _shared: tuple[Any, Any] | None = None  # (pool, client)

    @contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        if client:
            yield client
            return
        pool = self.pool
        shared = self._shared
        if shared is None or shared[0] is not pool:
            shared = self._shared = (pool, self._create_client())
        yield shared[1]


class Transport(redis.Transport):
    Channel = Channel
