"""A real, authoritative-looking DNS server on 127.0.0.1 for tests.

Why: the DNS, SPF and DKIM code must be exercised through real UDP queries
(dnspython, pyspf and dkimpy all talk to a nameserver), not through mocks that
would hide wire-format problems such as TXT records split into several
character-strings. Nothing here ever sends traffic beyond loopback.

Behaviour, per query name (case-insensitive, trailing dot optional):

- a name set with ``set_timeout`` gets no reply at all, so the client times out;
- a name with records of the asked type gets them (NOERROR);
- a name that exists with other types only, or that is an empty non-terminal
  (``_domainkey.example.com`` when ``sel._domainkey.example.com`` exists), gets
  NOERROR with an empty answer;
- any other name gets NXDOMAIN.
"""

from __future__ import annotations

import socketserver
import threading
from dataclasses import dataclass

from dnslib import AAAA, MX, QTYPE, RCODE, RR, TXT, A, DNSError, DNSRecord
from dnslib.server import DNSHandler, DNSLogger, DNSServer

__all__ = ["LocalDNSServer", "Query"]

_TTL = 60
_MAX_CHARACTER_STRING = 255


@dataclass(frozen=True)
class Query:
    """One question the server received, kept so tests can assert on traffic."""

    name: str
    qtype: str


def _key(name: str) -> str:
    """Records are keyed by lower-case name without the trailing dot."""
    return name.rstrip(".").lower()


def _split_character_strings(value: str | bytes) -> list[bytes]:
    """Split one logical TXT string into <=255-byte character-strings (RFC 1035 3.3)."""
    data = value.encode("utf-8") if isinstance(value, str) else bytes(value)
    if not data:
        return [b""]
    return [data[i : i + _MAX_CHARACTER_STRING] for i in range(0, len(data), _MAX_CHARACTER_STRING)]


class _ZoneResolver:
    """dnslib resolver over an in-memory record table; one instance shared by all threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: dict[str, list[RR]] = {}
        self._timeouts: set[str] = set()
        self._queries: list[Query] = []

    # --- updates (called from the test thread) -------------------------------------------

    def add(self, name: str, rr: RR) -> None:
        with self._lock:
            self._records.setdefault(_key(name), []).append(rr)

    def set_timeout(self, name: str) -> None:
        with self._lock:
            self._timeouts.add(_key(name))

    def clear(self) -> None:
        with self._lock:
            self._records.clear()
            self._timeouts.clear()
            self._queries.clear()

    def queries(self) -> list[Query]:
        with self._lock:
            return list(self._queries)

    # --- serving (called from server threads) --------------------------------------------

    def should_drop(self, request: DNSRecord) -> bool:
        """True when the question's name is marked as timing out: send nothing back."""
        name = _key(str(request.q.qname))
        with self._lock:
            self._queries.append(Query(name=name, qtype=QTYPE.get(request.q.qtype, "?")))
            return name in self._timeouts

    def resolve(self, request: DNSRecord, handler: DNSHandler) -> DNSRecord:
        reply = request.reply()
        name = _key(str(request.q.qname))
        qtype = request.q.qtype
        with self._lock:
            records = list(self._records.get(name, ()))
            exists = bool(records) or any(other.endswith("." + name) for other in self._records)
        if not exists:
            reply.header.rcode = RCODE.NXDOMAIN
            return reply
        for rr in records:
            if qtype in (rr.rtype, QTYPE.ANY):
                reply.add_answer(rr)
        return reply


class _Handler(DNSHandler):
    """Drops questions for names marked with set_timeout instead of answering them."""

    def handle(self) -> None:
        data, _sock = self.request
        try:
            request = DNSRecord.parse(data)
        except DNSError:
            return
        if self.server.resolver.should_drop(request):
            return
        super().handle()


class _UDPServer(socketserver.ThreadingMixIn, socketserver.UDPServer):
    daemon_threads = True
    allow_reuse_address = False


class LocalDNSServer:
    """UDP DNS server on 127.0.0.1 with a free port; records can change while it runs.

    Use as ``with LocalDNSServer() as server: ...`` or call start()/stop().
    """

    def __init__(self) -> None:
        self._resolver = _ZoneResolver()
        self._server: DNSServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle -----------------------------------------------------------------------

    def start(self) -> LocalDNSServer:
        """Bind 127.0.0.1 on a kernel-chosen port (no race) and serve in a daemon thread."""
        if self._server is not None:
            return self
        quiet = DNSLogger(log="-request,-reply,-truncated,-error", prefix=False)
        server = DNSServer(
            self._resolver,
            address="127.0.0.1",
            port=0,
            logger=quiet,
            handler=_Handler,
            server=_UDPServer,
        )
        thread = threading.Thread(
            target=server.server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="LocalDNSServer",
            daemon=True,
        )
        thread.start()
        self._server, self._thread = server, thread
        return self

    def stop(self) -> None:
        """Stop serving and release the port; safe to call twice."""
        if self._server is None:
            return
        self._server.server.shutdown()
        self._server.server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> LocalDNSServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # --- addressing ----------------------------------------------------------------------

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("LocalDNSServer is not running; call start() first")
        return int(self._server.server.server_address[1])

    @property
    def address(self) -> str:
        """'127.0.0.1:PORT', the format of the DNS servers setting."""
        return f"{self.host}:{self.port}"

    @property
    def servers(self) -> list[tuple[str, int]]:
        """[(host, port)], ready for domains.dns.make_resolver(servers=...)."""
        return [(self.host, self.port)]

    @property
    def queries(self) -> list[Query]:
        """Every question received since the last clear(), in arrival order."""
        return self._resolver.queries()

    # --- records -------------------------------------------------------------------------

    def add_txt(self, name: str, *strings: str | bytes) -> None:
        """Add ONE TXT record made of the given strings.

        Each argument longer than 255 bytes is split into several character-strings,
        as a DNS operator publishing a 2048-bit DKIM key would; call add_txt again
        to add a second TXT record at the same name.
        """
        if not strings:
            raise ValueError("add_txt needs at least one string")
        parts: list[bytes] = []
        for value in strings:
            parts.extend(_split_character_strings(value))
        self._add(name, QTYPE.TXT, TXT(parts))

    def add_mx(self, name: str, priority: int, host: str) -> None:
        self._add(name, QTYPE.MX, MX(host, priority))

    def add_a(self, name: str, ip: str) -> None:
        self._add(name, QTYPE.A, A(ip))

    def add_aaaa(self, name: str, ip: str) -> None:
        self._add(name, QTYPE.AAAA, AAAA(ip))

    def set_timeout(self, name: str) -> None:
        """Never answer questions for this name, whatever their type."""
        self._resolver.set_timeout(name)

    def clear(self) -> None:
        """Forget all records, timeouts and the query log."""
        self._resolver.clear()

    def _add(self, name: str, rtype: int, rdata: object) -> None:
        qname = _key(name) + "."
        self._resolver.add(name, RR(rname=qname, rtype=rtype, rdata=rdata, ttl=_TTL))
