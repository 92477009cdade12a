"""The SMTP listener: a thin asyncio layer over ingress.decisions.

aiosmtpd speaks the protocol; every decision (recipient lookup, policy checks,
AUTH, storing the message) runs in worker threads through sync_to_async, so a
slow database or DNS answer holds up one session, never the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import ssl
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from asgiref.sync import sync_to_async
from django import db
from django.conf import settings

from ingress import decisions

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
# RFC 5321 4.5.3.1.3 limits a path to 256 octets; the database keeps 320. A
# longer one is refused up front: once accepted, it would fail every insert.
MAX_ADDRESS_LENGTH = 320
# A HELO name is only informative; the database keeps this much of it.
MAX_HELO_LENGTH = 255


def _off_loop(func: Any) -> Any:
    # Not thread-sensitive: sessions run their database work in parallel threads
    # (the loop's default executor, which serve() sizes).
    return sync_to_async(func, thread_sensitive=False)


@dataclass
class SessionLog:
    accepted: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _PendingLogin:
    login: LoginPassword


class ConduitSMTP(SMTP):
    """aiosmtpd's SMTP with the checks of AUTH moved off the event loop and
    enhanced status codes on the size errors."""

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
            identity = await _off_loop(decisions.authenticate)(username=username, password=password)
        except db.Error:  # OperationalError, InterfaceError: no usable connection
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


class Handler:
    """aiosmtpd hooks; each one hands the real work to ingress.decisions."""

    def __init__(self, *, max_recipients: int) -> None:
        self.max_recipients = max_recipients

    async def handle_exception(self, error: Exception) -> str:
        # aiosmtpd would answer "500 Error: (TypeError) ...": permanent, and revealing.
        logger.error("Unexpected error in an SMTP session", exc_info=error)
        return LOCAL_ERROR

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        if len(address) > MAX_ADDRESS_LENGTH:
            return f"553 5.1.7 Sender address longer than {MAX_ADDRESS_LENGTH} characters"
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
        if len(address) > MAX_ADDRESS_LENGTH:
            return f"553 5.1.3 Recipient address longer than {MAX_ADDRESS_LENGTH} characters"
        identity = session.auth_data if session.authenticated else None
        try:
            reply, route = await _off_loop(decisions.check_recipient)(
                address=address, client_ip=_client_ip(session), identity=identity
            )
        except db.Error:  # OperationalError, InterfaceError: no usable connection
            logger.exception("Database unavailable while checking a recipient")
            return decisions.DB_UNAVAILABLE
        except Exception:
            logger.exception("Unexpected error while checking a recipient")
            return LOCAL_ERROR
        if reply is not None:
            log.refused.append(reply[:3])
            return reply
        routes = envelope.__dict__.setdefault("conduit_routes", {})
        routes[address] = route
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
        )
        try:
            reply = await _off_loop(decisions.accept_message)(message)
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


def protocol_factory(*, hostname: str | None = None) -> Any:
    handler = Handler(max_recipients=settings.CONDUIT_MAX_RECIPIENTS)
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
            timeout=300,
        )

    factory.live = live  # type: ignore[attr-defined]
    return factory


async def serve(
    *,
    host: str,
    port: int,
    stop: asyncio.Event | None = None,
    on_ready: Any = None,
    grace: float = 30.0,
) -> None:
    """Listen until SIGTERM/SIGINT (or ``stop``), then stop accepting connections,
    let transactions in progress finish (for up to ``grace`` seconds) and close
    idle sessions with 421, so senders retry elsewhere or later."""
    loop = asyncio.get_running_loop()
    loop.set_default_executor(
        ThreadPoolExecutor(max_workers=DECISION_THREADS, thread_name_prefix="ingress")
    )
    factory = protocol_factory()
    server = await loop.create_server(factory, host=host, port=port)
    if stop is None:
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
    addresses = ", ".join(
        f"{sock.getsockname()[0]}:{sock.getsockname()[1]}" for sock in server.sockets
    )
    logger.info("SMTP ingress listening on %s", addresses)
    print(f"SMTP ingress listening on {addresses}", flush=True)
    if on_ready is not None:
        on_ready(server.sockets[0].getsockname()[1])
    await stop.wait()
    logger.info("Stopping: no new connections; finishing %d session(s)", len(factory.live))
    server.close()
    deadline = loop.time() + grace
    while factory.live and loop.time() < deadline:
        for protocol in list(factory.live):
            protocol.close_if_idle()
        await asyncio.sleep(0.05)
    for protocol in list(factory.live):
        if protocol.transport is not None:
            protocol.transport.close()
    await server.wait_closed()
    logger.info("SMTP ingress stopped")
