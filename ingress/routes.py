"""Recipient lookups kept in memory while PostgreSQL says nothing changed.

RCPT TO is answered from the cache when it can be: no thread, no query. The
cache is only trusted while a LISTEN connection is up: triggers (webhooks
migration 0002) NOTIFY ``conduit_routes`` on every change that can alter a
lookup, and each notification empties the cache. When the listener is down
(database unreachable, or not PostgreSQL) every lookup goes to the database,
as if there were no cache.

A lookup that was running when a change arrived is not kept: it may have read
the old rows (the generation check). Entries also expire after ``max_age``,
in case a notification is ever missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from typing import Any

from ingress.decisions import RecipientFacts
from webhooks.accept import on_postgresql

logger = logging.getLogger("conduit.ingress")

CHANNEL = "conduit_routes"
# How long the listener waits for a notification before it checks that its
# connection still answers.
KEEPALIVE_SECONDS = 5.0


def _key(address: str) -> str:
    return address.strip().lower()


class RouteCache:
    def __init__(self, *, max_entries: int = 10_000, max_age: float = 60.0) -> None:
        self.max_entries = max_entries
        self.max_age = max_age
        self.live = False
        self.generation = 0
        self._entries: OrderedDict[str, tuple[float, RecipientFacts | None]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, address: str) -> tuple[bool, RecipientFacts | None]:
        """(True, facts) on a hit (facts None: no active webhook), (False, None) on a miss."""
        if not self.live:
            return False, None
        key = _key(address)
        entry = self._entries.get(key)
        if entry is None:
            return False, None
        stored_at, facts = entry
        if time.monotonic() - stored_at > self.max_age:
            del self._entries[key]
            return False, None
        self._entries.move_to_end(key)
        return True, facts

    def put(self, address: str, facts: RecipientFacts | None, *, generation: int) -> None:
        """Keep a lookup that started at ``generation``, unless something changed since."""
        if not self.live or generation != self.generation:
            return
        key = _key(address)
        self._entries[key] = (time.monotonic(), facts)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self.generation += 1
        self._entries.clear()

    def set_live(self, live: bool) -> None:
        # Whatever was kept before a (re)connection may have missed a change.
        self.clear()
        self.live = live


def listener_connection_params() -> dict[str, Any] | None:
    """psycopg connection arguments for the listener; None when the database is not PostgreSQL."""
    from django.db import connections

    connection = connections["default"]
    if not on_postgresql(connection):
        return None
    params = dict(connection.get_connection_params())
    for synchronous_only in ("cursor_factory", "context"):
        params.pop(synchronous_only, None)
    return params


async def listen(cache: RouteCache, params: dict[str, Any]) -> None:
    """Keep a LISTEN connection up, emptying the cache on every notification.

    Runs until cancelled. While it has no connection, the cache is off.
    """
    import psycopg

    delay = 0.5
    while True:
        try:
            connection = await psycopg.AsyncConnection.connect(
                autocommit=True, connect_timeout=5, **params
            )
        except Exception as exc:
            logger.warning("Route change listener cannot connect (%s); cache off", exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)
            continue
        try:
            await connection.execute(f"LISTEN {CHANNEL}")
            cache.set_live(True)
            delay = 0.5
            while True:
                async for _notify in connection.notifies(timeout=KEEPALIVE_SECONDS):
                    cache.clear()
                # Notifications that arrive meanwhile wait for the next notifies().
                await asyncio.wait_for(connection.execute("SELECT 1"), KEEPALIVE_SECONDS)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.warning("Route change listener lost its connection (%s); cache off", exc)
        finally:
            cache.set_live(False)
            with contextlib.suppress(Exception):  # already broken
                await connection.close()
        await asyncio.sleep(delay)
