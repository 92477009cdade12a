"""The Celery broker transports: kombu's Redis transport with one client per
channel, and kombu's file-system transport writing each message atomically.

kombu's Redis channel builds a new ``redis.Redis`` object for every message it
publishes (and every ack pipeline). The object is only a handle on the
channel's connection pool, but constructing it fills a table of ~170 response
callbacks: a quarter of the CPU of a task publish. redis-py clients are
thread-safe, so one per channel serves every publish; a new one is made
whenever kombu replaces the channel's pool (after a connection error).

Selected with CELERY_BROKER_TRANSPORT when REDIS_URL is set.

kombu's file-system channel (the embedded default) creates a message's file
under its final name and then writes into it. A worker listing the folder in
between moves the file away, reads nothing and its consumer dies on the
JSONDecodeError: bench/embedded.py lost 576 of 600 messages that way at 5/s
with a 50 ms polling interval. Here the bytes go to a hidden name the reader
skips (it takes only ``<stamp>_<uuid>.<queue>.msg``) and are renamed into place,
so a file is whole the moment it can be seen. ``_put`` is kombu's own hook for
a virtual transport; pyproject.toml holds kombu to the tested minor release and
tests/test_broker.py checks the override against the installed kombu.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from time import monotonic
from typing import Any

from kombu.transport import filesystem, redis
from kombu.utils.json import dumps


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


class FileSystemChannel(filesystem.Channel):
    def _put(self, queue: str, payload: Any, **kwargs: Any) -> None:
        # The name kombu gives (its reader sorts by the millisecond stamp).
        name = f"{round(monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        folder = self.data_folder_out
        hidden = os.path.join(folder, f".{name}.part")
        try:
            with open(hidden, "wb") as f:
                f.write(dumps(payload).encode())
            os.replace(hidden, os.path.join(folder, name))
        except OSError as exc:
            raise filesystem.ChannelError(f"Cannot add file {name!r} to {folder}") from exc


class FileSystemTransport(filesystem.Transport):
    Channel = FileSystemChannel
