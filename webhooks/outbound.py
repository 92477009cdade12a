"""The one outbound HTTP helper: POST a webhook body and report what happened.

Built on ``requests`` + ``requests-hardened``:

* SSRF guard: requests-hardened's ``IPFilterAdapter`` resolves the host once, checks
  the first address, pins the connection to it and keeps the original ``Host`` header
  and TLS SNI/certificate name, so DNS rebinding between check and connect is not
  possible.  Its filter covers ``is_private`` (loopback, RFC 1918, link-local incl.
  169.254.169.254, unspecified, 240/4, documentation ranges, ULA, ...), multicast,
  100.64/10, NAT64, 6to4 and unwraps IPv4-mapped IPv6.  We add, on the already-pinned
  address, what it lets through (``webhooks.targets.is_forbidden_ip``, the rule the
  API also applies on write): IPv6 reserved space (e.g. IPv4-compatible
  ``::127.0.0.1``), deprecated site-local ``fec0::/10`` and anything else Python
  does not consider globally routable.  IP-literal URLs are checked before any socket is
  opened, so e.g. ``http://10.0.0.1/`` is refused without a connection attempt.
  Refusals and other errors never contain the address a name resolved to (that
  would tell any user what an internal name points at).
* Redirects are never followed (a 3xx is returned as-is; following it would let a
  public URL bounce us to an internal one).
* ``total_timeout`` bounds the whole attempt: socket timeouts cover a silent peer, and
  a per-attempt watchdog shuts the socket down at the deadline, which also stops a
  peer that trickles headers or body one byte at a time.  Name resolution
  (``getaddrinfo``) cannot be interrupted and is bounded only by the system resolver.
* Connections are reused through one module-level session per ``allow_private``
  flag; sessions are rebuilt in forked children (Celery prefork) so processes never
  share sockets.  The sessions ignore proxy/netrc environment variables and never
  store cookies, so nothing leaks from one receiver to another.
"""

from __future__ import annotations

import contextlib
import heapq
import http.cookiejar
import ipaddress
import itertools
import logging
import os
import re
import socket
import ssl
import threading
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from requests_hardened import Config, HTTPSession
from requests_hardened.ip_filter import InvalidIPAddress
from requests_hardened.ip_filter_adapter import IPFilterAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ReadTimeoutError
from urllib3.util import Timeout

from webhooks.retry import ErrorKind
from webhooks.targets import is_forbidden_ip, private_target_hint

logger = logging.getLogger(__name__)

USER_AGENT = "Conduit-Webhooks/1.0"
_POOL_CONNECTIONS = 64  # distinct (pinned IP, port, TLS name) pools kept alive per process
# Idle connections kept per pool: one per worker thread that may post to the same
# target at once (CONDUIT_WORKER_CONCURRENCY), so none is closed after one use.
_POOL_MAXSIZE = 32
_CHUNK = 8192

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class AttemptResult:
    """What one delivery attempt produced; feed ``http_status``/``error_kind`` to
    ``webhooks.retry.classify``.

    ``error`` is a sentence for the user.  It can be set together with
    ``http_status`` when the receiver answered but its body could not be read in time
    (``error_kind == "timeout"``); the status is still the receiver's answer.
    """

    http_status: int | None
    duration_ms: int
    error: str | None
    error_kind: ErrorKind | None
    response_body: str  # at most max_body_bytes of the body, UTF-8 with replacement
    retry_after: str | None  # raw Retry-After header, see retry.parse_retry_after


# --- SSRF guard -------------------------------------------------------------------
# The address rule itself lives in webhooks.targets (shared with write-time checks).


def _literal_ip(host: str | None) -> IPAddress | None:
    if not host:
        return None
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


# --- deadline watchdog ------------------------------------------------------------

_active = threading.local()


class _Deadline:
    """Shuts the attempt's socket down when the total timeout passes.

    Socket timeouts only bound each individual ``recv``; a peer sending one byte per
    second would never trip them.  Shutting the socket down from the watchdog thread wakes
    the blocked read with EOF, wherever in the exchange it is.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._done = False
        self.fired = False

    def track(self, sock: socket.socket | None) -> None:
        with self._lock:
            if self._done or sock is None:
                return
            self._sock = sock
            if self.fired:
                _cut(sock)

    def fire(self) -> None:
        with self._lock:
            if self._done:
                return
            self.fired = True
            if self._sock is not None:
                _cut(self._sock)

    def finish(self) -> None:
        """Stop watching: the socket may go back to the pool for the next attempt."""
        with self._lock:
            self._done = True
            self._sock = None


class _Watchdog:
    """One thread that fires every attempt's deadline when it passes.

    A ``threading.Timer`` per attempt started and stopped a thread for every
    delivery. A finished attempt's deadline stays queued until its time and is
    then a no-op (``_Deadline.fire`` after ``finish``).
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._queue: list[tuple[float, int, _Deadline]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None

    def schedule(self, deadline: _Deadline, seconds: float) -> None:
        entry = (time.monotonic() + seconds, next(self._order), deadline)
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="delivery-deadlines", daemon=True
                )
                self._thread.start()
            heapq.heappush(self._queue, entry)
            if self._queue[0] is entry:
                self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue:
                    self._cond.wait()
                due, _, deadline = self._queue[0]
                wait = due - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                heapq.heappop(self._queue)
            deadline.fire()


_watchdog = _Watchdog()


def _new_watchdog_after_fork() -> None:
    # A forked child (Celery's prefork pool) has no watchdog thread, and the
    # parent's lock may have been held at the fork.
    global _watchdog
    _watchdog = _Watchdog()


os.register_at_fork(after_in_child=_new_watchdog_after_fork)


def _cut(sock: socket.socket) -> None:
    # Plain socket.shutdown on the fd, also for an SSLSocket (no TLS state change
    # while another thread is inside SSL_read).
    with contextlib.suppress(OSError, TypeError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


def _track(sock: socket.socket | None) -> None:
    deadline: _Deadline | None = getattr(_active, "deadline", None)
    if deadline is not None:
        deadline.track(sock)


class _DeadlineConnectionMixin:
    """Registers the socket in use with the current attempt's deadline."""

    sock: socket.socket | None

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        _track(self.sock)

    def request(self, *args: Any, **kwargs: Any) -> None:
        _track(self.sock)  # a reused, already-connected socket
        super().request(*args, **kwargs)  # type: ignore[misc]


class _HTTPConnection(_DeadlineConnectionMixin, HTTPConnection):
    pass


class _HTTPSConnection(_DeadlineConnectionMixin, HTTPSConnection):
    pass


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


class _DeadlinePoolsMixin:
    """Adapter mixin: use the deadline-aware connections and keep more pools."""

    def init_poolmanager(
        self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any
    ) -> None:
        super().init_poolmanager(  # type: ignore[misc]
            max(connections, _POOL_CONNECTIONS), max(maxsize, _POOL_MAXSIZE), block, **pool_kwargs
        )
        self.poolmanager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}  # type: ignore[attr-defined]


class _GuardedAdapter(_DeadlinePoolsMixin, IPFilterAdapter):
    """requests-hardened's resolve-check-pin adapter plus our stricter address rule."""

    def build_connection_pool_key_attributes(self, request, verify, cert=None):  # type: ignore[no-untyped-def]
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(
            request, verify, cert
        )
        pinned = ipaddress.ip_address(host_params["host"].strip("[]"))
        if is_forbidden_ip(pinned):
            raise InvalidIPAddress(pinned)
        return host_params, pool_kwargs


class _OpenAdapter(_DeadlinePoolsMixin, HTTPAdapter):
    """No address filtering (allow_private=True: development and tests)."""


# --- sessions ---------------------------------------------------------------------

_sessions: dict[bool, HTTPSession] = {}
_sessions_lock = threading.Lock()


def _build_session(allow_private: bool) -> HTTPSession:
    config = Config(
        ip_filter_enable=not allow_private,
        ip_filter_allow_loopback_ips=False,
        never_redirect=True,
        default_timeout=(5.0, 15.0),
        user_agent_override=USER_AGENT,
    )
    session = HTTPSession(config)
    for scheme, is_https in (("http://", False), ("https://", True)):
        adapter: HTTPAdapter = (
            _OpenAdapter() if allow_private else _GuardedAdapter(is_https_proto=is_https)
        )
        session.mount(scheme, adapter)
    session.trust_env = False  # no *_PROXY, netrc credentials or CA bundle overrides
    session.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
    session.headers["Accept-Encoding"] = "identity"  # body is only shown to users
    return session


def _session(allow_private: bool) -> HTTPSession:
    with _sessions_lock:
        session = _sessions.get(allow_private)
        if session is None:
            session = _sessions[allow_private] = _build_session(allow_private)
        return session


def _reset_after_fork() -> None:
    """Children must not share pooled sockets (or a held lock) with their parent."""
    global _sessions_lock
    _sessions.clear()
    _sessions_lock = threading.Lock()


os.register_at_fork(after_in_child=_reset_after_fork)


# --- error descriptions -----------------------------------------------------------


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """Walk an exception and everything it wraps (requests -> urllib3 -> OSError)."""
    seen: set[int] = set()
    stack: list[BaseException] = [exc]
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        for nxt in (
            getattr(current, "reason", None),
            current.__cause__,
            current.__context__,
            *current.args,
        ):
            if isinstance(nxt, BaseException):
                stack.append(nxt)


def _find(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    return next((e for e in _causes(exc) if isinstance(e, kind)), None)


def _target(url: str) -> tuple[str, str]:
    """(host, "host:port") of the URL for messages; best effort on odd URLs."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return "?", url
    shown = f"[{host}]" if ":" in host else host
    return host, f"{shown}:{port}"


def _blocked(host: str, *, literal: bool, name_setting: bool) -> str:
    """The SSRF refusal. It names the host as written, never the address a name
    resolved to: the message must not tell a user what an internal name points at."""
    shown = f"[{host}]" if ":" in host else host
    what = "is not" if literal else "does not resolve to"
    return f"Blocked: {shown} {what} a public internet address; " + private_target_hint(
        name_setting=name_setting
    )


# IPv4 dotted quads and anything that looks like an IPv6 address (urllib3's
# messages name the pinned address of the connection pool).
_ADDRESS = re.compile(
    r"(?<![\w.:])(?:\d{1,3}(?:\.\d{1,3}){3}|[0-9a-fA-F]{0,4}(?::[0-9a-fA-F]{0,4}){2,7}"
    r"(?:\d{1,3}(?:\.\d{1,3}){3})?)(?![\w.:])"
)


def _without_addresses(text: str, host: str) -> str:
    """``text`` with every IP address replaced by the URL's host: exception messages
    from the pinned connection name the resolved address, which users must not see."""
    return _ADDRESS.sub(lambda m: m.group(0) if m.group(0) == host else host, text)


def _tls_reason(exc: BaseException) -> str:
    verify = _find(exc, ssl.SSLCertVerificationError)
    if isinstance(verify, ssl.SSLCertVerificationError) and verify.verify_message:
        return f"certificate verify failed: {verify.verify_message}"
    error = _find(exc, ssl.SSLError)
    if isinstance(error, ssl.SSLError):
        return str(error.reason or error).replace("_", " ").lower()
    return str(exc)


def _describe_send_error(
    exc: BaseException,
    *,
    url: str,
    connect_timeout: float,
    total_timeout: float,
    name_setting: bool,
) -> tuple[str, ErrorKind]:
    """Turn a failure before any response into (message, error_kind)."""
    host, where = _target(url)
    if isinstance(exc, InvalidIPAddress):
        literal = _literal_ip(host) is not None
        return _blocked(host, literal=literal, name_setting=name_setting), ErrorKind.SSRF
    if isinstance(exc, requests.ConnectTimeout):
        return f"Timed out after {connect_timeout} s connecting to {where}", ErrorKind.TIMEOUT
    if isinstance(exc, requests.Timeout) or _find(exc, ReadTimeoutError):
        return f"Timed out after {total_timeout} s waiting for the target", ErrorKind.TIMEOUT
    if isinstance(exc, requests.exceptions.SSLError):
        reason = _without_addresses(_tls_reason(exc), host)
        return f"TLS handshake with {where} failed: {reason}", ErrorKind.CONNECT
    if isinstance(exc, requests.ConnectionError):
        if _find(exc, socket.gaierror):
            return f"Could not resolve host {host}", ErrorKind.CONNECT
        if _find(exc, ConnectionRefusedError):
            return f"Connection refused by {where}", ErrorKind.CONNECT
        if _find(exc, ConnectionResetError):
            return f"Connection reset by {where}", ErrorKind.CONNECT
        if _find(exc, socket.timeout):
            return f"Timed out after {total_timeout} s waiting for the target", ErrorKind.TIMEOUT
        strerror = next(
            (e.strerror for e in _causes(exc) if isinstance(e, OSError) and e.strerror), None
        )
        if strerror:
            return f"Could not connect to {where}: {strerror}", ErrorKind.CONNECT
        return f"{where} closed the connection without a valid HTTP response", ErrorKind.CONNECT
    if isinstance(exc, requests.exceptions.InvalidSchema):
        return f"Unsupported URL {url!r}: only http:// and https:// are allowed", ErrorKind.OTHER
    if isinstance(exc, requests.exceptions.InvalidURL | requests.exceptions.MissingSchema):
        return f"Invalid URL {url!r}: {_without_addresses(str(exc), host)}", ErrorKind.OTHER
    if isinstance(exc, requests.exceptions.InvalidHeader):
        return f"Invalid request header: {_without_addresses(str(exc), host)}", ErrorKind.OTHER
    described = f"{type(exc).__name__}: {_without_addresses(str(exc), host)}"
    # The traceback's frames without the exception's own text (which may name the
    # pinned address): enough to find the bug, nothing a log reader should not see.
    frames = "".join(traceback.format_tb(exc.__traceback__))
    logger.warning("Unexpected error posting webhook to %s: %s\n%s", where, described, frames)
    return f"Unexpected error: {described}", ErrorKind.OTHER


# --- the helper -------------------------------------------------------------------


def _read_body(response: requests.Response, limit: int, into: list[bytes]) -> None:
    """Append up to ``limit`` + 1 bytes of the body to ``into``, as they arrive.

    ``read1`` returns whatever is available instead of waiting for a full chunk, so
    a body cut short by the deadline still shows what was received.  Reading to the
    end of a short body hands the connection back to the pool for reuse.
    """
    size = 0
    while size <= limit:
        chunk = response.raw.read1(min(_CHUNK, limit + 1 - size), decode_content=True)
        if not chunk:
            return
        into.append(chunk)
        size += len(chunk)


def post(
    *,
    url: str,
    body: bytes,
    headers: dict[str, str],
    connect_timeout: float = 5.0,
    total_timeout: float = 15.0,
    allow_private: bool = False,
    max_body_bytes: int = 20480,
    name_private_setting: bool = False,
) -> AttemptResult:
    """POST ``body`` to ``url`` once and describe the outcome; never raises for network
    problems.

    Redirects are not followed, the attempt never outlives ``total_timeout`` (except
    for a slow DNS resolver), and with ``allow_private=False`` non-public targets are
    refused before connecting; ``name_private_setting`` makes that refusal name the
    setting that allows private targets (development servers).
    """
    started = time.monotonic()

    def result(
        *,
        status: int | None = None,
        error: str | None = None,
        kind: ErrorKind | None = None,
        content: bytes = b"",
        retry_after: str | None = None,
    ) -> AttemptResult:
        return AttemptResult(
            http_status=status,
            duration_ms=int((time.monotonic() - started) * 1000),
            error=error,
            error_kind=kind,
            response_body=content.decode("utf-8", errors="replace"),
            retry_after=retry_after,
        )

    if not allow_private:
        host, _ = _target(url)
        literal = _literal_ip(host)
        if literal is not None and is_forbidden_ip(literal):
            message = _blocked(host, literal=True, name_setting=name_private_setting)
            return result(error=message, kind=ErrorKind.SSRF)

    deadline = _Deadline()
    timeout = Timeout(
        connect=min(connect_timeout, total_timeout), read=total_timeout, total=total_timeout
    )
    _active.deadline = deadline
    _watchdog.schedule(deadline, total_timeout)
    try:
        try:
            response = _session(allow_private).post(
                url,
                data=body,
                headers=headers,
                timeout=timeout,
                allow_redirects=False,
                stream=True,
            )
        except Exception as exc:  # the contract is "never raises"
            if deadline.fired and not isinstance(exc, InvalidIPAddress):
                message = f"Timed out after {total_timeout} s waiting for the target"
                return result(error=message, kind=ErrorKind.TIMEOUT)
            message, failure_kind = _describe_send_error(
                exc,
                url=url,
                connect_timeout=connect_timeout,
                total_timeout=total_timeout,
                name_setting=name_private_setting,
            )
            return result(error=message, kind=failure_kind)

        with response:
            if deadline.fired:
                # The watchdog may have ended the header block early (EOF reads as
                # "end of headers"), so what we parsed is not a trustworthy answer.
                message = f"Timed out after {total_timeout} s waiting for the target"
                return result(error=message, kind=ErrorKind.TIMEOUT)
            status = response.status_code
            retry_after = response.headers.get("Retry-After")
            chunks: list[bytes] = []
            error: str | None = None
            kind: ErrorKind | None = None
            timed_out = False
            try:
                _read_body(response, max_body_bytes, chunks)
            except Exception as exc:  # a broken body must not lose the status
                timed_out = _find(exc, ReadTimeoutError) is not None
                host, _ = _target(url)
                error = f"Could not read the response body: {_without_addresses(str(exc), host)}"
                kind = ErrorKind.OTHER
            if timed_out or deadline.fired:
                error = (
                    f"Timed out after {total_timeout} s reading the response body "
                    f"(the target answered {status})"
                )
                kind = ErrorKind.TIMEOUT
            return result(
                status=status,
                error=error,
                kind=kind,
                content=b"".join(chunks)[:max_body_bytes],
                retry_after=retry_after,
            )
    finally:
        deadline.finish()
        _active.deadline = None
