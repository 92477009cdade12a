"""The aiosmtpd handler: each hook hands the real work to ingress.decisions.

Every decision that needs the database or DNS (recipient lookup, AUTH,
SPF/DKIM/DMARC, storing the message) runs in worker threads, so a slow answer
holds up one session, never the event loop, and no session waits on the
database longer than CONDUIT_INGRESS_STORE_TIMEOUT. Two things keep the
common path cheap: recipient lookups are answered from memory while
PostgreSQL reports no change (ingress.routes), and messages of concurrent
sessions are stored in shared transactions (ingress.store).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session
from django import db

from conduit import metrics
from ingress import decisions, routes
from ingress.protocol import HooksOnlyDir, signature_once
from ingress.store import GroupCommitter
from webhooks.accept import BINARY_RAW_BYTES

logger = logging.getLogger("conduit.ingress")

# What a sender gets when something unforeseen breaks: a temporary failure, so
# it retries later and the message is never lost, and no internals in the reply.
LOCAL_ERROR = "451 4.3.0 Local error in processing; please try again later"
# A HELO name is only informative; the database keeps this much of it.
MAX_HELO_LENGTH = 255


async def off_loop(func: Any, /, *, timeout: float, **kwargs: Any) -> Any:
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

    @signature_once
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
        log = session_log(session)
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
                facts = await off_loop(
                    decisions.recipient_facts, timeout=self.store_timeout, address=address
                )
                self.routes.put(address, facts, generation=generation)
            reply, route = decisions.judge_recipient(
                address=address, facts=facts, client_ip=client_ip(session), identity=identity
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
        started = time.perf_counter()
        log = session_log(session)
        identity = session.auth_data if session.authenticated else None
        mail_from = envelope.mail_from or ""
        message = decisions.MessageInput(
            raw=envelope.original_content or b"",
            # aiosmtpd keeps a null reverse-path (bounces) as "<>"; it is stored empty.
            mail_from="" if mail_from == "<>" else mail_from,
            helo=(session.host_name or "")[:MAX_HELO_LENGTH],
            client_ip=client_ip(session),
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
        metrics.smtp_message_answered(reply, size=len(message.raw), started=started)
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
        if reply is None:  # SPF/DKIM/DMARC to check, or too big to share a transaction
            reply = await off_loop(
                decisions.accept_message, timeout=self.store_timeout, message=message
            )
        return reply


def client_ip(session: Session) -> str:
    peer = session.peer
    return peer[0] if isinstance(peer, tuple) else str(peer)


def session_log(session: Session) -> SessionLog:
    log = session.__dict__.get("conduit_log")
    if log is None:
        log = session.__dict__["conduit_log"] = SessionLog()
    return log
