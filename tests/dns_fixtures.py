"""pytest fixture for the loopback DNS server.

Scope decision: ONE LocalDNSServer per test process, started lazily on first use
and stopped at interpreter exit, but cleared (records, timeouts, query log) before
and after every test. Why: binding a socket and a thread per test costs little,
but stopping a socketserver waits for its poll loop; sharing keeps the suite fast
while clearing keeps tests independent. The fixture itself is function-scoped and
self-contained, so a test module can import just ``dns_server`` (or conftest.py
can re-export it) without pulling in a second session fixture.
"""

from __future__ import annotations

import atexit
import threading
from collections.abc import Iterator

import pytest

from policies.mailauth import DMARC_CACHE
from tests.dnsserver import LocalDNSServer

__all__ = ["dns_server", "shared_dns_server"]

_lock = threading.Lock()
_shared: LocalDNSServer | None = None


def shared_dns_server() -> LocalDNSServer:
    """The process-wide server, started on first call."""
    global _shared
    with _lock:
        if _shared is None:
            _shared = LocalDNSServer().start()
            atexit.register(_shared.stop)
        return _shared


@pytest.fixture
def dns_server() -> Iterator[LocalDNSServer]:
    """A running LocalDNSServer with no records; anything a test adds is gone afterwards
    (and so are the DMARC records cached from it)."""
    server = shared_dns_server()
    server.clear()
    DMARC_CACHE.clear()
    yield server
    server.clear()
    DMARC_CACHE.clear()
