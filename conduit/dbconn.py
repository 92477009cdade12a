"""Database connections of long-lived threads: ingress threads, Celery workers.

Django checks a kept connection before each request (``close_old_connections``
with CONN_HEALTH_CHECKS), and that check is a round trip. On a busy thread it
cost as much as the work it guarded, so here it runs only when a connection
may have gone bad unnoticed: after an error, a second idle, or past
CONN_MAX_AGE. A connection the database dropped while the thread was busy is
then found dead by the next query; ``read_reconnecting`` replaces it and runs
a read again, which is safe because nothing was written.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

from django.db import InterfaceError, OperationalError, close_old_connections, connection

T = TypeVar("T")

# A connection idle this long is checked (one round trip) before it is used again.
IDLE_CHECK_SECONDS = 1.0
_state = threading.local()


def refresh_if_idle() -> bool:
    """Drop this thread's connection if it broke or aged out; True if it was checked."""
    now = time.monotonic()
    idle = now - getattr(_state, "last_used", float("-inf"))
    _state.last_used = now
    aged = connection.close_at is not None and now >= connection.close_at
    if idle > IDLE_CHECK_SECONDS or aged or connection.errors_occurred:
        close_old_connections()
        return True
    return False


def read_reconnecting(read: Callable[[], T], *, checked: bool = False) -> T:
    """Run a read-only query; if the connection turns out dead (and was not just
    checked, and no transaction is open), reconnect and run it once more."""
    try:
        return read()
    except (OperationalError, InterfaceError):
        if checked or connection.in_atomic_block:
            raise
    connection.close()
    return read()
