"""What the SMTP ingress decides, as plain synchronous functions.

The async handler in ingress.server calls these in worker threads, so that
database work and DNS lookups never block the event loop. Each returns either
an SMTP reply line to send as-is or the data the next step needs.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from django import db
from django.contrib.auth.hashers import check_password
from django.db import transaction

from conduit import dbconn
from domains.services import dns_resolver
from ingress import throttling
from policies import checks, mailauth
from policies.models import SmtpCredential, SmtpSecurityPolicy
from webhooks import accept as webhook_accept
from webhooks.accept import Webhook

logger = logging.getLogger("conduit.ingress")

T = TypeVar("T")

DB_UNAVAILABLE = "451 4.3.0 Temporary failure storing the message; please try again later"


@dataclass(frozen=True)
class Identity:
    """Who a session authenticated as, and which policies accept that login."""

    username: str
    policy_ids: frozenset[uuid.UUID]


@dataclass(frozen=True)
class Route:
    webhook_id: uuid.UUID
    # The webhook's account, which sees the message (its AccountMessage row):
    # known here, the statement that stores the message needs no join for it.
    account_id: uuid.UUID
    policy_id: uuid.UUID | None
    # The policy asked for SPF, DKIM or DMARC when the recipient was accepted.
    needs_mail_auth: bool = False


@dataclass(frozen=True)
class RecipientFacts:
    """What RCPT needs to know about the webhook a recipient resolves to."""

    webhook_id: uuid.UUID
    account_id: uuid.UUID
    policy_id: uuid.UUID | None = None
    allowed_networks: Sequence[checks.IPNetwork] = ()
    require_smtp_auth: bool = False
    needs_mail_auth: bool = False


@dataclass
class MessageInput:
    raw: bytes
    mail_from: str
    helo: str
    client_ip: str
    routes: dict[str, Route] = field(default_factory=dict)  # rcpt -> webhook
    identity: Identity | None = None
    # No webhook or policy changed since the routes were looked up (the route
    # cache heard of none): they need not be read again before storing.
    routes_current: bool = False


# RFC 5321 4.5.3.1.3 limits a path to 256 octets; the database keeps 320. A
# longer one is refused up front: once accepted, it would fail every insert.
MAX_ADDRESS_LENGTH = 320


def envelope_address_refusal(address: str, *, smtputf8: bool, sender: bool) -> str | None:
    """The permanent reply refusing a MAIL FROM (``sender``) or RCPT TO address, or None.

    Refused here, at the command, are the addresses that could never be
    stored or that the sender had no right to send: a NUL (no text column
    holds one), bytes that are not UTF-8 (RFC 6531 3.3: an address is ASCII
    or, with SMTPUTF8, UTF-8), and UTF-8 without the SMTPUTF8 parameter on
    MAIL FROM (RFC 6531 3.5: 553 5.6.7). A syntax fault is 501 with the
    enhanced code of a bad sender (5.1.7) or recipient (5.1.3) address
    (RFC 3463). Accepted, they would get 250 here and 451 at DATA, and the
    sender would retry for days what can never be stored.

    The common case costs two scans of a short ASCII string.
    """
    which, status = ("Sender", "5.1.7") if sender else ("Recipient", "5.1.3")
    if not address.isascii():
        if not _is_utf8(address):
            return f"501 {status} {which} address is not valid UTF-8"
        if not smtputf8:
            return (
                f"553 5.6.7 {which} address is not ASCII; send MAIL FROM with the SMTPUTF8 "
                "parameter to use a UTF-8 address"
            )
    if "\x00" in address:
        return f"501 {status} {which} address contains a NUL character"
    if len(address) > MAX_ADDRESS_LENGTH:
        return f"553 {status} {which} address longer than {MAX_ADDRESS_LENGTH} characters"
    return None


def helo_refusal(name: str) -> str | None:
    """The reply refusing a HELO/EHLO name that could never be stored, or None.

    The name is only informative, and kept with each message: one with a NUL
    or with bytes that are not UTF-8 would make every message of the session
    fail to store, so the session must greet again with a usable name.
    """
    if "\x00" in name or not (name.isascii() or _is_utf8(name)):
        return "501 5.5.4 HELO/EHLO name must be ASCII or UTF-8 text without NUL characters"
    return None


def _is_utf8(text: str) -> bool:
    # aiosmtpd decodes a command's argument as UTF-8 with surrogateescape:
    # bytes that were not UTF-8 became lone surrogates, which do not encode.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _read(func: Callable[[], T]) -> T:
    """A read-only lookup on a usable connection (conduit.dbconn)."""
    return dbconn.read_reconnecting(func, checked=dbconn.refresh_if_idle())


def authenticate(*, username: str, password: str, client_ip: str) -> Identity | None:
    """The policies whose credentials match, or None (then the client gets 535).

    Raises throttling.TooManyFailures, without checking, once this client or
    this username has failed too often (ingress.throttling).
    """
    throttling.ensure_allowed(username=username, ip=client_ip)
    identity = _check_credentials(username=username, password=password)
    if identity is None:
        throttling.record_failure(username=username, ip=client_ip)
    else:
        throttling.record_success(username=username, ip=client_ip)
    return identity


def _check_credentials(*, username: str, password: str) -> Identity | None:
    candidates = _read(
        lambda: list(
            SmtpCredential.objects.filter(username__iexact=username).values_list(
                "policy_id", "username", "password_hash"
            )
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


def recipient_facts(address: str) -> RecipientFacts | None:
    """Look a recipient up in the database: None when no active webhook serves it."""
    webhook = _read(lambda: webhook_accept.webhook_for_recipient(address))
    if webhook is None:
        return None
    policy = webhook.smtp_security_policy
    if policy is None:
        return RecipientFacts(webhook_id=webhook.id, account_id=webhook.account_id)
    return RecipientFacts(
        webhook_id=webhook.id,
        account_id=webhook.account_id,
        policy_id=policy.id,
        allowed_networks=tuple(checks.parse_ip_networks(policy.allowed_source_ips or "")),
        require_smtp_auth=policy.require_smtp_auth,
        needs_mail_auth=_asks_mail_auth(policy),
    )


def judge_recipient(
    *, address: str, facts: RecipientFacts | None, client_ip: str, identity: Identity | None
) -> tuple[str | None, Route | None]:
    """(reply, None) to refuse the recipient, or (None, route) to accept it. No I/O."""
    if facts is None:
        return f"550 5.1.1 <{address}>: no such mailbox here", None
    if facts.allowed_networks and not checks.ip_allowed(client_ip, facts.allowed_networks):
        return (
            f"550 5.7.1 <{address}>: client address {client_ip} is not allowed "
            "to send to this address",
            None,
        )
    if facts.require_smtp_auth and (identity is None or facts.policy_id not in identity.policy_ids):
        return (
            f"530 5.7.0 <{address}>: authentication required; log in with SMTP AUTH "
            "using this address's credentials",
            None,
        )
    route = Route(
        webhook_id=facts.webhook_id,
        account_id=facts.account_id,
        policy_id=facts.policy_id,
        needs_mail_auth=facts.needs_mail_auth,
    )
    return None, route


@dataclass(frozen=True)
class MailAuth:
    """What the ingress established about the sender, stored with the message."""

    spf_result: str = ""
    dkim_domains: list[str] = field(default_factory=list)
    dmarc: dict | None = None  # mailauth.DmarcResult.as_payload()
    arc_result: str = ""


NOT_CHECKED = MailAuth()
DNS_TEMPORARY = "451 4.7.0 Temporary DNS failure checking {}; try again later"


def _check_mail_auth(
    message: MessageInput, policies: list[SmtpSecurityPolicy]
) -> tuple[str | None, MailAuth]:
    """(reply or None, what was found) for the policies that ask for SPF, DKIM or DMARC.

    DMARC is a verdict over SPF and DKIM, so it (and ARC, which tells a forwarder's
    mail apart) is evaluated when both of those run: when a policy asks for DMARC, or
    for SPF and DKIM. Mail whose policies ask for none of them costs no DNS query.
    """
    wants_spf = [p for p in policies if p.require_spf]
    wants_dkim = [p for p in policies if p.require_dkim]
    wants_dmarc = [p for p in policies if p.require_dmarc]
    complete = bool(wants_dmarc) or bool(wants_spf and wants_dkim)
    if not wants_spf and not wants_dkim and not complete:
        return None, NOT_CHECKED
    resolver = dns_resolver()
    spf: mailauth.SpfResult | None = None
    spf_result = ""
    if wants_spf or complete:
        spf = mailauth.check_spf(
            client_ip=message.client_ip,
            mail_from=message.mail_from,
            helo=message.helo,
            resolver=resolver,
        )
        spf_result = spf.result
        if spf.result == "temperror" and wants_spf:
            return DNS_TEMPORARY.format("SPF"), NOT_CHECKED
        for policy in wants_spf:
            allowed = checks.parse_domain_list(policy.allowed_spf_domains or "")
            if spf.result != "pass":
                return (
                    f"550 5.7.1 SPF check failed ({spf.result}) for {spf.domain or 'sender'}"
                    f" from {message.client_ip}: {spf.explanation}".rstrip(": "),
                    MailAuth(spf_result=spf_result),
                )
            if not checks.domain_allowed(spf.domain, allowed):
                return (
                    f"550 5.7.1 SPF passed for {spf.domain}, which this address does not "
                    "accept mail from",
                    MailAuth(spf_result=spf_result),
                )
    dkim_domains: list[str] = []
    dkim_temperror = False
    if wants_dkim or complete:
        dkim = mailauth.check_dkim(raw=message.raw, resolver=resolver)
        dkim_domains = list(dkim.valid_domains)
        dkim_temperror = dkim.temperror
        for policy in wants_dkim:
            allowed = checks.parse_domain_list(policy.allowed_dkim_domains or "")
            good = [d for d in dkim_domains if checks.domain_allowed(d, allowed)]
            if good:
                continue
            if dkim.temperror:
                return DNS_TEMPORARY.format("DKIM"), NOT_CHECKED
            reason = "; ".join(dkim.failures) or "no DKIM signature"
            if dkim_domains:
                reason = f"signed by {', '.join(dkim_domains)}, which this address does not accept"
            return (
                f"550 5.7.1 DKIM check failed: {reason}",
                MailAuth(spf_result=spf_result, dkim_domains=dkim_domains),
            )
    if not complete or spf is None:
        return None, MailAuth(spf_result=spf_result, dkim_domains=dkim_domains)
    dmarc = mailauth.check_dmarc(
        raw=message.raw, spf=spf, dkim_domains=dkim_domains, resolver=resolver
    )
    found = MailAuth(
        spf_result=spf_result,
        dkim_domains=dkim_domains,
        dmarc=dmarc.as_payload(),
        arc_result=mailauth.check_arc(raw=message.raw, resolver=resolver),
    )
    if wants_dmarc and dmarc.result != "pass":
        # A lookup that failed for now may have been what would have passed.
        if dmarc.result == "temperror" or spf_result == "temperror" or dkim_temperror:
            return DNS_TEMPORARY.format("DMARC"), NOT_CHECKED
        reason = dmarc.explanation or dmarc.result
        return f"550 5.7.1 DMARC check failed ({dmarc.result}): {reason}", found
    return None, found


def _recipients(
    message: MessageInput, webhooks: dict[uuid.UUID, Webhook]
) -> dict[Webhook, list[str]]:
    """The message's recipients by webhook, for the webhooks still active."""
    recipients: dict[Webhook, list[str]] = {}
    for rcpt, route in message.routes.items():
        webhook = webhooks.get(route.webhook_id)
        if webhook is not None:
            recipients.setdefault(webhook, []).append(rcpt)
    return recipients


# A message's recipients by webhook id, and each of those webhooks' account.
Addressed = tuple[dict[uuid.UUID, list[str]], dict[uuid.UUID, uuid.UUID]]


def _by_id(recipients: dict[Webhook, list[str]]) -> Addressed:
    return (
        {webhook.id: rcpts for webhook, rcpts in recipients.items()},
        {webhook.id: webhook.account_id for webhook in recipients},
    )


def _current_recipients(message: MessageInput) -> Addressed:
    """The recipients by webhook id, from routes known to be current (no query)."""
    recipients: dict[uuid.UUID, list[str]] = {}
    accounts: dict[uuid.UUID, uuid.UUID] = {}
    for rcpt, route in message.routes.items():
        recipients.setdefault(route.webhook_id, []).append(rcpt)
        accounts[route.webhook_id] = route.account_id
    return recipients, accounts


def _asks_mail_auth(policy: SmtpSecurityPolicy | None) -> bool:
    return policy is not None and (
        policy.require_spf or policy.require_dkim or policy.require_dmarc
    )


NO_RECIPIENTS_LEFT = "554 5.1.1 None of the recipients can receive mail any more"


def _accepted(message_id: uuid.UUID) -> str:
    return f"250 2.0.0 Ok: queued as {message_id.hex}"


def accept_message(message: MessageInput) -> str:
    """Check what must be checked after DATA, then store the message durably.

    The reply is 250 only once the message and its deliveries are committed.
    When several recipients' policies disagree, one failure refuses the whole
    message: SMTP has one answer per DATA, and a silent partial drop would lose mail.
    """
    try:
        dbconn.refresh_if_idle()
        webhooks = webhook_accept.active_webhooks(
            ids={route.webhook_id for route in message.routes.values()}
        )
        recipients = _recipients(message, webhooks)
        if not recipients:
            return NO_RECIPIENTS_LEFT
        policies = list(
            {w.smtp_security_policy_id: w.smtp_security_policy for w in recipients}.values()
        )
        reply, found = _check_mail_auth(message, [p for p in policies if p])
        if reply is not None:
            return reply
        new = _new_message(message, _by_id(recipients), auth=found)
        [accepted] = webhook_accept.messages_accept([new])
    except db.Error:  # OperationalError, InterfaceError: no usable connection
        logger.exception("Database unavailable while accepting a message")
        return DB_UNAVAILABLE
    except webhook_accept.RawStoreUnavailable:  # logged where it failed
        return DB_UNAVAILABLE
    return _accepted(accepted.message_id)


def _new_message(
    message: MessageInput, addressed: Addressed, *, auth: MailAuth = NOT_CHECKED
) -> webhook_accept.NewMessage:
    message_id, subject = webhook_accept.message_id_and_subject(message.raw)
    recipients, accounts = addressed
    return webhook_accept.NewMessage(
        raw=message.raw,
        mail_from=message.mail_from,
        recipients=recipients,
        accounts=accounts,
        client_ip=message.client_ip,
        helo=message.helo,
        message_id_header=message_id,
        subject=subject,
        spf_result=auth.spf_result,
        dkim_domains=list(auth.dkim_domains),
        dmarc=auth.dmarc,
        arc_result=auth.arc_result,
        smtp_auth_user=message.identity.username if message.identity else "",
    )


@dataclass
class GroupReplies:
    replies: list[str | None]
    # The stored deliveries, for the caller to enqueue once it has answered.
    delivery_ids: list[uuid.UUID] = field(default_factory=list)


def accept_messages(messages: Sequence[MessageInput]) -> GroupReplies:
    """Store several sessions' messages in one transaction: a group commit.

    One reply per message, in order: 250 once the transaction that holds it
    committed, a refusal, or None for a message that must go through
    accept_message on its own because a policy now asks for SPF, DKIM or DMARC (DNS
    lookups have no place inside a shared transaction). When storing the
    group fails, for any reason, its messages are stored one by one, so one
    bad message never holds up the others; one that fails alone gets 451.
    """
    replies: list[str | None] = [None] * len(messages)
    current = all(message.routes_current for message in messages)
    try:
        dbconn.refresh_if_idle()
        # Reading the webhooks again and storing must see the same rows; with
        # nothing to read, the store is a single statement and needs no transaction.
        with transaction.atomic() if not current else contextlib.nullcontext():
            webhooks = webhook_accept.active_webhooks(
                ids={
                    route.webhook_id
                    for m in messages
                    if not m.routes_current
                    for route in m.routes.values()
                }
            )
            ready: list[tuple[int, webhook_accept.NewMessage]] = []
            for index, message in enumerate(messages):
                if message.routes_current:
                    addressed = _current_recipients(message)
                    needs_mail_auth = any(r.needs_mail_auth for r in message.routes.values())
                else:
                    found = _recipients(message, webhooks)
                    needs_mail_auth = any(
                        _asks_mail_auth(webhook.smtp_security_policy) for webhook in found
                    )
                    addressed = _by_id(found)
                if not addressed[0]:
                    replies[index] = NO_RECIPIENTS_LEFT
                elif not needs_mail_auth:  # else None: the caller runs accept_message for it
                    ready.append((index, _new_message(message, addressed)))
            accepted = webhook_accept.messages_accept([new for _, new in ready], enqueue=False)
    except webhook_accept.RawStoreUnavailable:
        # The object store failed (logged where it did), not one message:
        # one by one they would only wait on it again.
        for index, _ in ready:
            replies[index] = DB_UNAVAILABLE
        return GroupReplies(replies)
    except Exception:
        # Whatever failed (the connection, or one message's data: a value the
        # database refuses, one the driver cannot encode), the group is tried
        # again one message at a time, so that only the message at fault
        # fails. If the database is gone, each of them fails on its own, fast.
        if len(messages) == 1:
            logger.exception("Could not store a message")
            return GroupReplies([DB_UNAVAILABLE])
        logger.warning(
            "Could not store %d messages together; storing each alone", len(messages), exc_info=True
        )
        result = GroupReplies([])
        for message in messages:
            alone = accept_messages([message])
            result.replies.extend(alone.replies)
            result.delivery_ids.extend(alone.delivery_ids)
        return result
    result = GroupReplies(replies)
    for (index, _), stored in zip(ready, accepted, strict=True):
        replies[index] = _accepted(stored.message_id)
        result.delivery_ids.extend(stored.delivery_ids)
    return result
