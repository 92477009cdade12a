from __future__ import annotations

import asyncio
import threading

import pytest
from django.db import connection

from ingress.server import serve


class RunningIngress:
    """The real ingress server, on a free loopback port, in a thread of the test process."""

    def __init__(self) -> None:
        self.port = 0
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            await serve(
                host="127.0.0.1",
                port=0,
                stop=self._stop,
                on_ready=self._on_ready,
                grace=5,
            )

        asyncio.run(main())

    def _on_ready(self, port: int) -> None:
        self.port = port
        self._ready.set()

    def start(self) -> RunningIngress:
        self._thread.start()
        assert self._ready.wait(10), "the ingress did not start"
        return self

    def stop(self) -> None:
        if self._loop and self._stop:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


@pytest.fixture
def ingress(transactional_db, settings):
    settings.CONDUIT_ALLOW_INSECURE_AUTH = True
    server = RunningIngress().start()
    yield server
    server.stop()
    close_other_sessions()


def close_other_sessions() -> None:
    """The ingress's worker threads keep their own connections; the process would
    close them at exit, but the test database must be free to be dropped."""
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
