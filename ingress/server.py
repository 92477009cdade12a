"""The SMTP listener: a thin asyncio layer over ingress.decisions.

aiosmtpd speaks the protocol; every decision that needs the database or DNS
(recipient lookup, AUTH, SPF/DKIM, storing the message) runs in worker
threads, so a slow answer holds up one session, never the event loop. Two
things keep the common path cheap: recipient lookups are answered from
memory while PostgreSQL reports no change (ingress.routes), and messages of
concurrent sessions are stored in shared transactions (ingress.store).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import socket
import ssl
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from django import db
from django.conf import settings

from ingress import decisions, routes, throttling
from ingress.protocol import HooksOnlyDir, LeanSMTP
from ingress.store import GroupCommitter
from webhooks.services import BINARY_RAW_BYTES

logger = logging.getLogger("conduit.ingress")

TOO_BIG = "552 5.3.4 Message too big for this system"
# What a sender gets when something unforeseen breaks: a temporary failure, so
# it retries later and the message is never lost, and no internals in the reply.
LOCAL_ERROR = "451 4.3.0 Local error in processing; please try again later"
SHUTTING_DOWN = b"421 4.3.2 Service shutting down; please try again later\r\n"
# Threads for the decisions (database, DNS). SPF and DKIM lookups can each take
# seconds, so this is well above the default pool's cpu_count + 4; each thread
# keeps at most one database connection.
DECISION_THREADS = 32
# Seconds a session may sit idle between commands (RFC 5321 4.5.3.2 asks
# for at least five minutes).
SESSION_TIMEOUT = 300
# A HELO name is only informative; the database keeps this much of it.
MAX_HELO_LENGTH = 255


async def _off_loop(func: Any, /, *, timeout: float, **kwargs: Any) -> Any:
    # Sessions run their database and DNS work in parallel threads (the loop's
    # default executor, which serve() sizes). A database that stops answering
    # holds a thread until the connection fails (minutes, for a black hole),
    # but never the session beyond ``timeout``: TimeoutError, then 451.
    call = asyncio.get_running_loop().run_in_executor(None, functools.partial(func, **kwargs))
    async with asyncio.timeout(timeout):
        return await call


@dataclass
class SessionLog:
    accepted: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _PendingLogin:
    login: LoginPassword


class ConduitSMTP(LeanSMTP):
    """The lean protocol (ingress.protocol) with the checks of AUTH moved off
    the event loop, and enhanced status codes on the size errors."""

    def _authenticate(self, mechanism: str, auth_data: Any) -> Any:
        # Called synchronously by the built-in PLAIN/LOGIN parsers; the actual
        # password check happens in _finish_auth, in a thread.
        return _PendingLogin(auth_data)

    async def _finish_auth(self, result: Any) -> Any:
        if not isinstance(result, _PendingLogin):
            return result
        login = result.login
        username = login.login.decode("utf-8", "replace")
        password = login.password.decode("utf-8", "replace")
        try:
            identity = await _off_loop(
                decisions.authenticate,
                timeout=self.event_handler.store_timeout,
                username=username,
                password=password,
                client_ip=_client_ip(self.session),
            )
        except throttling.TooManyFailures as refused:
            # 421 and the end of the session (RFC 5321 3.8): a guesser must
            # reconnect for every further try.
            await self.push(refused.reply)
            self.transport.close()
            return AuthResult(success=False, handled=True)
        except (db.Error, TimeoutError):  # no usable connection, or no answer in time
            return AuthResult(success=False, handled=False, message=decisions.DB_UNAVAILABLE)
        if identity is None:
            return AuthResult(success=False, handled=False)
        return AuthResult(success=True, auth_data=identity)

    async def auth_PLAIN(self, _: Any, args: list[str]) -> AuthResult:
        return await self._finish_auth(await super().auth_PLAIN(_, args))

    async def auth_LOGIN(self, _: Any, args: list[str]) -> AuthResult:
        return await self._finish_auth(await super().auth_LOGIN(_, args))

    async def push(self, status: str | bytes) -> None:
        # AUTH challenges arrive as bytes; only aiosmtpd's own size errors are rewritten.
        if isinstance(status, str) and status.startswith("552 Error"):
            status = f"{TOO_BIG} (at most {self.data_size_limit} bytes)"
        await super().push(status)


class Handler(HooksOnlyDir):
    """aiosmtpd hooks; each one hands the real work to ingress.decisions."""

    def __init__(
        self,
        *,
        max_recipients: int,
        route_cache: routes.RouteCache | None = None,
        committer: GroupCommitter | None = None,
        store_timeout: float = 20.0,
    ) -> None:
        self.max_recipients = max_recipients
        self.store_timeout = store_timeout
        # Never live unless serve() connects a listener: every lookup a miss.
        self.routes = route_cache if route_cache is not None else routes.RouteCache()
        self.committer = committer

    async def handle_exception(self, error: Exception) -> str:
        # aiosmtpd would answer "500 Error: (TypeError) ...": permanent, and revealing.
        logger.error("Unexpected error in an SMTP session", exc_info=error)
        return LOCAL_ERROR

    async def handle_HELO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str
    ) -> str:
        refusal = decisions.helo_refusal(hostname)
        if refusal is not None:
            return refusal
        session.host_name = hostname
        return f"250 {server.hostname}"

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        refusal = decisions.helo_refusal(hostname)
        if refusal is not None:
            return [refusal]
        session.host_name = hostname
        # aiosmtpd answers pipelined commands in order (RFC 2920), so say so:
        # a sender may then send MAIL, RCPT and DATA without waiting.
        return [*responses[:-1], "250-PIPELINING", responses[-1]]

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        refusal = decisions.envelope_address_refusal(
            address, smtputf8=envelope.smtp_utf8, sender=True
        )
        if refusal is not None:
            return refusal
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        log = _session_log(session)
        if len(envelope.rcpt_tos) >= self.max_recipients:
            return f"452 4.5.3 Too many recipients (at most {self.max_recipients} per message)"
        refusal = decisions.envelope_address_refusal(
            address, smtputf8=envelope.smtp_utf8, sender=False
        )
        if refusal is not None:
            log.refused.append(refusal[:3])
            return refusal
        identity = session.auth_data if session.authenticated else None
        try:
            generation = self.routes.generation
            hit, facts = self.routes.get(address)
            if not hit:
                facts = await _off_loop(
                    decisions.recipient_facts, timeout=self.store_timeout, address=address
                )
                self.routes.put(address, facts, generation=generation)
            reply, route = decisions.judge_recipient(
                address=address, facts=facts, client_ip=_client_ip(session), identity=identity
            )
        except db.Error:  # OperationalError, InterfaceError: no usable connection
            logger.exception("Database unavailable while checking a recipient")
            return decisions.DB_UNAVAILABLE
        except TimeoutError:
            logger.error("No answer from the database in %s s to a lookup", self.store_timeout)
            return decisions.DB_UNAVAILABLE
        except Exception:
            logger.exception("Unexpected error while checking a recipient")
            return LOCAL_ERROR
        if reply is not None:
            log.refused.append(reply[:3])
            return reply
        routes = envelope.__dict__.setdefault("conduit_routes", {})
        routes[address] = route
        # The oldest generation any route was looked up in: if the cache is
        # still at it at DATA, nothing changed since.
        envelope.__dict__.setdefault("conduit_generation", generation)
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        log = _session_log(session)
        identity = session.auth_data if session.authenticated else None
        mail_from = envelope.mail_from or ""
        message = decisions.MessageInput(
            raw=envelope.original_content or b"",
            # aiosmtpd keeps a null reverse-path (bounces) as "<>"; it is stored empty.
            mail_from="" if mail_from == "<>" else mail_from,
            helo=(session.host_name or "")[:MAX_HELO_LENGTH],
            client_ip=_client_ip(session),
            routes=envelope.__dict__.get("conduit_routes", {}),
            identity=identity,
            routes_current=self.routes.live
            and envelope.__dict__.get("conduit_generation") == self.routes.generation,
        )
        try:
            async with asyncio.timeout(self.store_timeout):
                reply = await self._accept(message)
        except TimeoutError:
            # The message may still be stored once the database answers; the
            # sender, told 451, sends it again: a duplicate, never a loss.
            logger.error("No answer from the database in %s s to storing", self.store_timeout)
            reply = decisions.DB_UNAVAILABLE
        except Exception:
            # Answered here, not in handle_exception, so the envelope is reset as
            # after any other DATA reply and the sender can try the next message.
            logger.exception("Unexpected error while accepting a message")
            reply = LOCAL_ERROR
        if reply.startswith("250"):
            log.accepted.append(reply.rsplit(" ", 1)[-1])
        else:
            log.refused.append(reply[:3])
        return reply

    async def _accept(self, message: decisions.MessageInput) -> str:
        reply = None
        alone = (
            self.committer is None
            or len(message.raw) > BINARY_RAW_BYTES
            or any(route.needs_mail_auth for route in message.routes.values())
        )
        if not alone:
            reply = await self.committer.store(message)
        if reply is None:  # SPF/DKIM to check, or too big to share a transaction
            reply = await _off_loop(
                decisions.accept_message, timeout=self.store_timeout, message=message
            )
        return reply


def _client_ip(session: Session) -> str:
    peer = session.peer
    return peer[0] if isinstance(peer, tuple) else str(peer)


def _session_log(session: Session) -> SessionLog:
    log = session.__dict__.get("conduit_log")
    if log is None:
        log = session.__dict__["conduit_log"] = SessionLog()
    return log


class _TrackedSMTP(ConduitSMTP):
    """Knows the live sessions, so that shutdown can wait for them."""

    live: set[_TrackedSMTP]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.live.add(self)
        super().connection_made(transport)

    def close_if_idle(self) -> None:
        """On shutdown: between transactions, say 421 and close. A transaction in
        progress (MAIL FROM given, DATA not yet answered) is left to finish."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if self.envelope is not None and self.envelope.mail_from:
            return
        transport.write(SHUTTING_DOWN)
        transport.close()

    def connection_lost(self, error: Exception | None) -> None:
        session = self.session
        if session is not None:
            log = _session_log(session)
            logger.info(
                "session client=%s helo=%s accepted=%s refused=%s",
                _client_ip(session),
                session.host_name or "-",
                ",".join(log.accepted) or "-",
                ",".join(log.refused) or "-",
            )
        self.live.discard(self)
        super().connection_lost(error)


def tls_context() -> ssl.SSLContext | None:
    if not (settings.CONDUIT_TLS_CERT and settings.CONDUIT_TLS_KEY):
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(settings.CONDUIT_TLS_CERT, settings.CONDUIT_TLS_KEY)
    return context


def protocol_factory(
    *,
    hostname: str | None = None,
    route_cache: routes.RouteCache | None = None,
    committer: GroupCommitter | None = None,
) -> Any:
    handler = Handler(
        max_recipients=settings.CONDUIT_MAX_RECIPIENTS,
        route_cache=route_cache,
        committer=committer,
        store_timeout=settings.CONDUIT_INGRESS_STORE_TIMEOUT,
    )
    context = tls_context()
    # Once, not per connection as aiosmtpd would: getfqdn() may wait on DNS.
    hostname = hostname or socket.getfqdn()
    live: set[_TrackedSMTP] = set()

    class Protocol(_TrackedSMTP):
        pass

    Protocol.live = live

    def factory() -> Protocol:
        return Protocol(
            handler,
            data_size_limit=settings.CONDUIT_MAX_MESSAGE_BYTES,
            enable_SMTPUTF8=True,
            hostname=hostname,
            tls_context=context,
            auth_require_tls=not settings.CONDUIT_ALLOW_INSECURE_AUTH,
            timeout=SESSION_TIMEOUT,
        )

    factory.live = live  # type: ignore[attr-defined]
    return factory


async def serve(
    *,
    host: str = "",
    port: int = 0,
    sockets: list[socket.socket] | None = None,
    stop: asyncio.Event | None = None,
    on_ready: Any = None,
    grace: float = 30.0,
    announce: bool = True,
    route_cache: routes.RouteCache | None = None,
) -> None:
    """Listen until SIGTERM/SIGINT (or ``stop``), then stop accepting connections,
    let transactions in progress finish (for up to ``grace`` seconds) and close
    idle sessions with 421, so senders retry elsewhere or later.

    Binds ``host``:``port``, or serves ``sockets`` already bound and listening
    (the processes of run() share them). ``route_cache`` is for tests to look into."""
    loop = asyncio.get_running_loop()
    loop.set_default_executor(
        ThreadPoolExecutor(max_workers=DECISION_THREADS, thread_name_prefix="ingress")
    )
    cache = route_cache if route_cache is not None else routes.RouteCache()
    listener = None
    params = await _off_loop(
        routes.listener_connection_params, timeout=settings.CONDUIT_INGRESS_STORE_TIMEOUT
    )
    if params is not None:
        listener = asyncio.create_task(routes.listen(cache, params), name="route-listener")
    committer = GroupCommitter(loop)
    factory = protocol_factory(route_cache=cache, committer=committer)
    if sockets is None:
        sockets = listening_sockets(host, port)
    # asyncio listens again on a given socket, with its own backlog of 100.
    servers = [
        await loop.create_server(factory, sock=sock, backlog=LISTEN_BACKLOG) for sock in sockets
    ]
    if stop is None:
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
    bound = [sock.getsockname() for server in servers for sock in server.sockets]
    if announce:
        _announce(bound)
    if on_ready is not None:
        on_ready(bound[0][1])
    await stop.wait()
    logger.info("Stopping: no new connections; finishing %d session(s)", len(factory.live))
    for server in servers:
        server.close()
    deadline = loop.time() + grace
    while factory.live and loop.time() < deadline:
        for protocol in list(factory.live):
            protocol.close_if_idle()
        await asyncio.sleep(0.05)
    for protocol in list(factory.live):
        if protocol.transport is not None:
            protocol.transport.close()
    for server in servers:
        await server.wait_closed()
    await loop.run_in_executor(None, committer.close)
    if listener is not None:
        listener.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listener
    logger.info("SMTP ingress stopped")


def _announce(bound: list[Any]) -> None:
    addresses = ", ".join(f"{address[0]}:{address[1]}" for address in bound)
    logger.info("SMTP ingress listening on %s", addresses)
    print(f"SMTP ingress listening on {addresses}", flush=True)


def process_count(requested: int | None = None) -> int:
    """How many ingress processes to run: as asked, else the setting, 0 = one per core."""
    from django.db import connection

    count = settings.CONDUIT_INGRESS_PROCESSES if requested is None else requested
    if connection.vendor != "postgresql":
        return 1
    return count or os.cpu_count() or 1


# Connections the kernel completes before a process accepts them. When this
# queue is full, Linux drops the handshake's last ACK: the sender believes it
# is connected and waits for a greeting that never comes. Bursts of MX
# traffic need room here (capped by net.core.somaxconn).
LISTEN_BACKLOG = 1024


def listening_sockets(host: str, port: int) -> list[socket.socket]:
    """Bound, listening sockets for ``host`` (every address it resolves to) and ``port``."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    seen: set[tuple[int, Any]] = set()
    for family, kind, proto, _, address in infos:
        if (family, address) in seen:
            continue
        seen.add((family, address))
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if sockets and port == 0:  # the port the first address got, for all
                address = (address[0], sockets[0].getsockname()[1], *address[2:])
            sock.bind(address)
            sock.listen(LISTEN_BACKLOG)
            sock.setblocking(False)
        except OSError:
            sock.close()
            for other in sockets:
                other.close()
            raise
        sockets.append(sock)
    return sockets


def run(*, host: str, port: int, processes: int, grace: float = 30.0) -> int:
    """Run the ingress in ``processes`` processes sharing one listening socket.

    The parent binds, forks the processes and waits; SIGTERM or SIGINT is passed
    on to each, which finishes its sessions (serve()) and exits. A process that
    dies otherwise is replaced. Each process has its own event loop, database
    connections and route cache, so the ingress uses every core; one process is
    one event loop and, through the GIL, at most one core.
    """
    if processes <= 1:
        asyncio.run(serve(host=host, port=port, grace=grace))
        return 0
    tls_context()  # a bad certificate stops the command here, not each process in a loop
    sockets = listening_sockets(host, port)
    _announce([sock.getsockname() for sock in sockets])
    stopping = False
    children: set[int] = set()

    def spawn() -> None:
        pid = os.fork()
        if pid == 0:  # the child: its own loop, threads and connections
            code = 1
            try:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                asyncio.run(serve(sockets=sockets, grace=grace, announce=False))
                code = 0
            except BaseException:
                logger.exception("Ingress process failed")
            finally:
                logging.shutdown()
                os._exit(code)
        children.add(pid)

    def stop(signum: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        # The port closes once every process has let go of it.
        for sock in sockets:
            sock.close()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for _ in range(processes):
        spawn()
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        children.discard(pid)
        if not stopping:
            logger.error("Ingress process %d exited (status %d); starting another", pid, status)
            time.sleep(1)
            spawn()
    for sock in sockets:
        sock.close()
    logger.info("SMTP ingress stopped (%d processes)", processes)
    return 0
