"""What the SMTP ingress decides, as plain synchronous functions.

The async handler in ingress.server calls these through sync_to_async, so that
database work and DNS lookups never block the event loop. Each returns either
an SMTP reply line to send as-is or the data the next step needs.
"""

from __future__ import annotations

import email.parser
import email.policy
import logging
import uuid
from dataclasses import dataclass, field

from django import db
from django.contrib.auth.hashers import check_password
from django.db import close_old_connections

from domains.services import dns_resolver
from policies import checks, mailauth
from policies.models import SmtpCredential, SmtpSecurityPolicy
from webhooks import selectors as webhook_selectors
from webhooks import services as webhook_services
from webhooks.models import Webhook

logger = logging.getLogger("conduit.ingress")

DB_UNAVAILABLE = "451 4.3.0 Temporary failure storing the message; please try again later"


@dataclass(frozen=True)
class Identity:
    """Who a session authenticated as, and which policies accept that login."""

    username: str
    policy_ids: frozenset[uuid.UUID]


@dataclass(frozen=True)
class Route:
    webhook_id: uuid.UUID
    policy_id: uuid.UUID | None


@dataclass
class MessageInput:
    raw: bytes
    mail_from: str
    helo: str
    client_ip: str
    routes: dict[str, Route] = field(default_factory=dict)  # rcpt -> webhook
    identity: Identity | None = None


def _fresh_connection() -> None:
    # Handler threads are long-lived: drop connections that broke or aged out.
    close_old_connections()


def authenticate(*, username: str, password: str) -> Identity | None:
    """The policies whose credentials match, or None (then the client gets 535)."""
    _fresh_connection()
    candidates = list(
        SmtpCredential.objects.filter(username__iexact=username).values_list(
            "policy_id", "username", "password_hash"
        )
    )
    matched = set()
    for policy_id, stored_name, password_hash in candidates:
        if checks.credentials_valid(
            username=stored_name,
            password=password,
            stored={stored_name: password_hash},
            verify=check_password,
        ):
            matched.add(policy_id)
    if not candidates:
        # Same work for an unknown user as for a known one.
        checks.credentials_valid(
            username=username, password=password, stored={}, verify=check_password
        )
    if not matched:
        return None
    return Identity(username=username, policy_ids=frozenset(matched))


def check_recipient(
    *, address: str, client_ip: str, identity: Identity | None
) -> tuple[str | None, Route | None]:
    """(reply, None) to refuse the recipient, or (None, route) to accept it."""
    _fresh_connection()
    webhook = webhook_selectors.webhook_for_recipient(address)
    if webhook is None:
        return f"550 5.1.1 <{address}>: no such mailbox here", None
    policy = webhook.smtp_security_policy
    if policy is not None:
        networks = checks.parse_ip_networks(policy.allowed_source_ips or "")
        if networks and not checks.ip_allowed(client_ip, networks):
            return (
                f"550 5.7.1 <{address}>: client address {client_ip} is not allowed "
                "to send to this address",
                None,
            )
        if policy.require_smtp_auth and (identity is None or policy.id not in identity.policy_ids):
            return (
                f"530 5.7.0 <{address}>: authentication required; log in with SMTP AUTH "
                "using this address's credentials",
                None,
            )
    return None, Route(webhook_id=webhook.id, policy_id=policy.id if policy else None)


def _header_block(raw: bytes) -> bytes:
    """The message up to the blank line that ends its headers (all of it if none)."""
    end = raw.find(b"\r\n\r\n")
    bare_lf = raw.find(b"\n\n", 0, end if end >= 0 else len(raw))
    if bare_lf >= 0:
        return raw[: bare_lf + 2]
    return raw[: end + 4] if end >= 0 else raw


def _message_id(raw: bytes) -> str:
    try:
        # Only the header block: given the whole message, the parser copies the
        # body several times over (a 25 MB message cost ~180 MB at peak).
        headers = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(
            _header_block(raw)
        )
        return str(headers.get("Message-ID", "") or "").strip()
    except Exception:  # a header we cannot parse never blocks acceptance
        return ""


def _check_mail_auth(
    message: MessageInput, policies: list[SmtpSecurityPolicy]
) -> tuple[str | None, str, list[str]]:
    """(reply or None, spf result, dkim domains) for the policies that ask for them."""
    spf_result = ""
    dkim_domains: list[str] = []
    wants_spf = [p for p in policies if p.require_spf]
    wants_dkim = [p for p in policies if p.require_dkim]
    if not wants_spf and not wants_dkim:
        return None, spf_result, dkim_domains
    resolver = dns_resolver()
    if wants_spf:
        spf = mailauth.check_spf(
            client_ip=message.client_ip,
            mail_from=message.mail_from,
            helo=message.helo,
            resolver=resolver,
        )
        spf_result = spf.result
        if spf.result == "temperror":
            return "451 4.7.0 Temporary DNS failure checking SPF; try again later", "", []
        for policy in wants_spf:
            allowed = checks.parse_domain_list(policy.allowed_spf_domains or "")
            if spf.result != "pass":
                return (
                    f"550 5.7.1 SPF check failed ({spf.result}) for {spf.domain or 'sender'}"
                    f" from {message.client_ip}: {spf.explanation}".rstrip(": "),
                    spf_result,
                    [],
                )
            if not checks.domain_allowed(spf.domain, allowed):
                return (
                    f"550 5.7.1 SPF passed for {spf.domain}, which this address does not "
                    "accept mail from",
                    spf_result,
                    [],
                )
    if wants_dkim:
        dkim = mailauth.check_dkim(raw=message.raw, resolver=resolver)
        dkim_domains = list(dkim.valid_domains)
        for policy in wants_dkim:
            allowed = checks.parse_domain_list(policy.allowed_dkim_domains or "")
            good = [d for d in dkim_domains if checks.domain_allowed(d, allowed)]
            if good:
                continue
            if dkim.temperror:
                return "451 4.7.0 Temporary DNS failure checking DKIM; try again later", "", []
            reason = "; ".join(dkim.failures) or "no DKIM signature"
            if dkim_domains:
                reason = f"signed by {', '.join(dkim_domains)}, which this address does not accept"
            return f"550 5.7.1 DKIM check failed: {reason}", spf_result, dkim_domains
    return None, spf_result, dkim_domains


def accept_message(message: MessageInput) -> str:
    """Check what must be checked after DATA, then store the message durably.

    The reply is 250 only once the message and its deliveries are committed.
    When several recipients' policies disagree, one failure refuses the whole
    message: SMTP has one answer per DATA, and a silent partial drop would lose mail.
    """
    try:
        _fresh_connection()
        webhook_ids = {route.webhook_id for route in message.routes.values()}
        webhooks = {
            w.id: w
            for w in Webhook.objects.filter(id__in=webhook_ids, active=True).select_related(
                "smtp_security_policy"
            )
        }
        recipients: dict[Webhook, list[str]] = {}
        for rcpt, route in message.routes.items():
            webhook = webhooks.get(route.webhook_id)
            if webhook is not None:
                recipients.setdefault(webhook, []).append(rcpt)
        if not recipients:
            return "554 5.1.1 None of the recipients can receive mail any more"
        policies = list(
            {w.smtp_security_policy_id: w.smtp_security_policy for w in recipients}.values()
        )
        reply, spf_result, dkim_domains = _check_mail_auth(message, [p for p in policies if p])
        if reply is not None:
            return reply
        accepted = webhook_services.message_accept(
            raw=message.raw,
            mail_from=message.mail_from,
            recipients=recipients,
            client_ip=message.client_ip,
            helo=message.helo,
            message_id_header=_message_id(message.raw),
            spf_result=spf_result,
            dkim_domains=dkim_domains,
            smtp_auth_user=message.identity.username if message.identity else "",
        )
    except db.Error:  # OperationalError, InterfaceError: no usable connection
        logger.exception("Database unavailable while accepting a message")
        return DB_UNAVAILABLE
    return f"250 2.0.0 Ok: queued as {accepted.message.id.hex}"
