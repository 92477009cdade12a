"""The default JSON webhook payload of one delivery (its schema is a contract with users).

Free of Django, like the ``webhooks.mail`` readers it is built from. ``build_payload`` never
raises on malformed mail; every key is always present and every value is JSON-serialisable.
The decoding decisions are written down in docs/payload.md.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from webhooks.mail.charsets import repair_8bit, scrub_surrogates
from webhooks.mail.headers import addresses, decode_header, format_date, optional, references
from webhooks.mail.html import html_to_text
from webhooks.mail.mime import Walker, parse, safe
from webhooks.mail.reply import split_reply
from webhooks.mail.traits import auto_submitted, bounce, mailing_list, thread_id

__all__ = [
    "SCHEMA_VERSIONS",
    "AttachmentLinks",
    "AuthResults",
    "Envelope",
    "attachment_file",
    "build_payload",
    "payload_schema",
]

SCHEMA_VERSIONS = (1,)
"""The published JSON Schemas of the payload (webhooks/schemas/payload-v<N>.json), each
served at /api/v1/schemas/payload/v<N>.json. A version only grows (new keys); a change
that would break a receiver gets the next number, and the older versions stay served."""


@functools.cache
def payload_schema(version: int = SCHEMA_VERSIONS[-1]) -> dict:
    """The JSON Schema of the payload this module builds, as published."""
    if version not in SCHEMA_VERSIONS:
        raise KeyError(version)
    path = Path(__file__).parent / "schemas" / f"payload-v{version}.json"
    return json.loads(path.read_text(encoding="utf-8"))


@dataclass(frozen=True)
class Envelope:
    """The SMTP envelope of one delivery (it can differ from the message's own headers)."""

    mail_from: str  # SMTP MAIL FROM ('' for the null sender)
    rcpt_to: list[str]  # the envelope recipients this delivery is for
    client_ip: str | None
    helo: str | None


@dataclass(frozen=True)
class AuthResults:
    """Sender authentication verdicts computed at ingress, passed through to the receiver."""

    spf: str | None = None  # e.g. "pass", "fail", "softfail", "none", or None when not checked
    dkim: list[str] = field(default_factory=list)  # domains (d=) of valid DKIM signatures
    smtp_auth_user: str | None = None
    # policies.mailauth.DmarcResult.as_payload(), or None when not checked
    dmarc: dict | None = None
    arc: str | None = None  # ARC chain: "pass", "fail", "none", or None when not checked


@dataclass(frozen=True)
class AttachmentLinks:
    """Attachments larger than ``over`` bytes go as links: ``link(index)`` gives the
    URL of the attachment at that position of ``attachments`` and when it expires
    (ISO 8601). The payload then carries ``content: null`` and ``content_url``."""

    over: int
    link: Callable[[int], tuple[str, str]]


_ADDRESS_FIELDS = {"from": "from", "to": "to", "cc": "cc", "reply-to": "reply_to"}


def build_payload(
    raw: bytes,
    *,
    envelope: Envelope,
    auth: AuthResults,
    simulated: bool = False,
    links: AttachmentLinks | None = None,
) -> dict:
    """Build the default webhook payload for one delivery of ``raw``.

    Never raises on malformed mail (a webhook must still be delivered for it); docs/payload.md
    gives every decoding decision. The result is JSON-serialisable as is. With ``links``,
    attachments over its size are delivered as links instead of base64.
    """
    if isinstance(raw, str):  # tolerate callers handing us text
        raw = raw.encode("utf-8", "surrogateescape")
    message = parse(bytes(raw))

    headers: list[dict[str, str]] = []
    first: dict[str, str] = {}
    address_values: dict[str, list[str]] = {key: [] for key in _ADDRESS_FIELDS.values()}
    for name, value in message.headers:
        name = scrub_surrogates(repair_8bit(str(name)))
        lower = name.lower()
        decoded = decode_header(value)
        headers.append({"name": name, "value": decoded})
        first.setdefault(lower, decoded)
        if lower in _ADDRESS_FIELDS:
            address_values[_ADDRESS_FIELDS[lower]].append(str(value))

    from_addresses = addresses(address_values["from"][:1])

    walker = Walker(link_over=links.over if links else None)
    walker.walk(message)
    for index, attachment in enumerate(walker.attachments):
        url, expires_at = (None, None)
        if attachment["content"] is None and links is not None:
            url, expires_at = links.link(index)
        attachment["content_url"] = url
        attachment["content_url_expires_at"] = expires_at
    text = walker.text
    if text is None:
        text = html_to_text(walker.html) if walker.html else ""
    stripped_text, stripped_signature = safe(lambda: split_reply(text), (text, None))

    message_id = optional(first.get("message-id"))
    in_reply_to = optional(first.get("in-reply-to"))
    reference_ids = references(first.get("references"))
    report = safe(lambda: bounce(message), None) if message.children else None

    return {
        "envelope": {
            "mail_from": envelope.mail_from,
            "rcpt_to": list(envelope.rcpt_to),
            "client_ip": envelope.client_ip,
            "helo": envelope.helo,
        },
        "from": from_addresses[0] if from_addresses else None,
        "to": addresses(address_values["to"]),
        "cc": addresses(address_values["cc"]),
        "reply_to": addresses(address_values["reply_to"]),
        "subject": first.get("subject", ""),
        "date": format_date(first.get("date")),
        "message_id": message_id,
        "in_reply_to": in_reply_to,
        "references": reference_ids,
        "thread_id": thread_id(
            message_id=message_id, in_reply_to=in_reply_to, references=reference_ids
        ),
        "text": text,
        "stripped_text": stripped_text,
        "stripped_signature": stripped_signature,
        "html": walker.html,
        "headers": headers,
        "attachments": walker.attachments,
        "auto_submitted": auto_submitted(first, is_bounce=report is not None),
        "bounce": report,
        "list": mailing_list(first),
        "authentication": {
            "spf": auth.spf,
            "dkim": list(auth.dkim),
            "smtp_auth_user": auth.smtp_auth_user,
            "dmarc": dict(auth.dmarc) if auth.dmarc is not None else None,
            "arc": auth.arc,
        },
        "simulated": bool(simulated),
    }


def attachment_file(raw: bytes, index: int) -> tuple[dict, bytes] | None:
    """The attachment at ``index`` of the payload's ``attachments`` (its entry, without
    content) and its decoded bytes; None when the message has no such attachment.
    The same walk as build_payload's, so the positions agree."""
    walker = Walker(link_over=-1, keep_contents=True)
    walker.walk(parse(bytes(raw)))
    if not 0 <= index < len(walker.attachments) or walker.contents is None:
        return None
    return walker.attachments[index], walker.contents[index]
