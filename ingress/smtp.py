"""Conduit's SMTP protocol: the lean aiosmtpd protocol (ingress.protocol) with
AUTH checked off the event loop, size errors with enhanced status codes, and
the live sessions known, so that shutdown can wait for them."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import uuid
from dataclasses import dataclass
from typing import Any

from aiosmtpd.smtp import AuthResult, LoginPassword
from django import db
from django.conf import settings

from conduit import metrics
from conduit.logs import log_ids
from ingress import decisions, routes, throttling
from ingress.handler import Handler, client_ip, off_loop, session_log
from ingress.protocol import LeanSMTP
from ingress.store import GroupCommitter

logger = logging.getLogger("conduit.ingress")

TOO_BIG = "552 5.3.4 Message too big for this system"
SHUTTING_DOWN = b"421 4.3.2 Service shutting down; please try again later\r\n"
# Seconds a session may sit idle between commands (RFC 5321 4.5.3.2 asks
# for at least five minutes).
SESSION_TIMEOUT = 300


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
            identity = await off_loop(
                decisions.authenticate,
                timeout=self.event_handler.store_timeout,
                username=username,
                password=password,
                client_ip=client_ip(self.session),
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


class TrackedSMTP(ConduitSMTP):
    """Knows the live sessions, so that shutdown can wait for them."""

    live: set[TrackedSMTP]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        metrics.smtp_session_started()
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
            log = session_log(session)
            logger.info(
                "session client=%s helo=%s accepted=%s refused=%s",
                client_ip(session),
                session.host_name or "-",
                ",".join(log.accepted) or "-",
                ",".join(log.refused) or "-",
                extra=log_ids(message_id=_message_ids(log.accepted)),
            )
        self.live.discard(self)
        super().connection_lost(error)


def _message_ids(accepted: list[str]) -> str | None:
    """The ids of a session's accepted messages (its 250s say "queued as <hex>"),
    comma-separated, written as the API and the worker's lines write them."""
    ids = []
    for queued in accepted:
        try:
            ids.append(str(uuid.UUID(hex=queued)))
        except ValueError:
            ids.append(queued)
    return ",".join(ids) or None


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
    live: set[TrackedSMTP] = set()

    class Protocol(TrackedSMTP):
        pass

    Protocol.live = live

    def factory() -> Protocol:
        # Called by the loop for each connection. Without ``loop`` aiosmtpd's
        # constructor finds it itself, under catch_warnings, on every connection.
        return Protocol(
            handler,
            loop=asyncio.get_running_loop(),
            data_size_limit=settings.CONDUIT_MAX_MESSAGE_BYTES,
            enable_SMTPUTF8=True,
            hostname=hostname,
            tls_context=context,
            auth_require_tls=not settings.CONDUIT_ALLOW_INSECURE_AUTH,
            timeout=SESSION_TIMEOUT,
        )

    factory.live = live  # type: ignore[attr-defined]
    return factory
