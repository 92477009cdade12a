"""Synthetic RFC 5322 messages for the "simulate webhook" API (docs/payload.md)."""

from __future__ import annotations

import quopri
import re
from datetime import UTC, datetime
from email import policy as email_policy
from email.header import Header
from email.message import EmailMessage
from email.utils import format_datetime, getaddresses, make_msgid

from webhooks.mail.charsets import scrub_surrogates

__all__ = ["build_simulated_message"]

_SIMULATED_POLICY = email_policy.default.clone(linesep="\r\n")
_SIMULATED_POLICY_UTF8 = _SIMULATED_POLICY.clone(utf8=True)
_HEADER_CONTROL_RE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f\u2028\u2029\x85]+")
_DOMAIN_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$")
_FALLBACK_MSGID_DOMAIN = "conduit.invalid"
_SUBJECT_PLACEHOLDER = "conduit-subject-placeholder-7f3a9c"
# Anything but RFC 5322 atext, "." and "@" (and the "[]" of a domain literal).
_MSGID_JUNK_RE = re.compile(r"[^A-Za-z0-9!#$%&'*+/=?^_`{|}~.@\[\]-]")


def _header_input(value: str) -> str:
    """Make arbitrary API input safe to put in a header: one line, encodable as UTF-8."""
    return _HEADER_CONTROL_RE.sub(" ", scrub_surrogates(str(value))).strip()


def _msgid_domain(mail_from: str) -> str:
    # An explicit domain also avoids make_msgid()'s socket.getfqdn(), a potential DNS lookup.
    try:
        pairs = getaddresses([mail_from])
        address = pairs[0][1] if pairs else ""
    except Exception:
        address = ""
    domain = address.rpartition("@")[2]
    return domain if "@" in address and _DOMAIN_RE.match(domain) else _FALLBACK_MSGID_DOMAIN


def _has_non_ascii_address(value: str) -> bool:
    """Whether an address (not just a display name) needs RFC 6532 raw UTF-8 headers."""
    if value.isascii():
        return False
    try:
        return any(not address.isascii() for _, address in getaddresses([value]))
    except Exception:
        return True


def _message_id(message_id: str | None, mail_from: str) -> str:
    if message_id is not None:
        core = _MSGID_JUNK_RE.sub("", str(message_id).strip().strip("<>"))
        if core:
            return f"<{core}>"
    return make_msgid(domain=_msgid_domain(mail_from))


def _build_with_email_package(headers: list[tuple[str, str]], text: str, utf8: bool) -> bytes:
    message = EmailMessage(policy=_SIMULATED_POLICY_UTF8 if utf8 else _SIMULATED_POLICY)
    encoded_subject = None
    for name, value in headers:
        if name == "Subject" and not utf8 and not value.isascii():
            # policy.default folds long non-ASCII text into encoded words separated by the
            # original space, which RFC 2047 decoders must drop ("a b" arrives as "ab").
            # email.header.Header splits inside the encoded text instead, so we splice its
            # output in place of a placeholder.
            encoded_subject = Header(value, "utf-8", header_name=name).encode(linesep="\r\n")
            value = _SUBJECT_PLACEHOLDER
        message[name] = value
    message.set_content(text, charset="utf-8", cte="quoted-printable")
    raw = message.as_bytes()
    if encoded_subject is None:
        return raw
    head, separator, body = raw.partition(b"\r\n\r\n")
    placeholder = f"\r\nSubject: {_SUBJECT_PLACEHOLDER}\r\n".encode("ascii")
    if placeholder not in head + b"\r\n":
        raise ValueError("subject placeholder was not written verbatim")
    replacement = f"\r\nSubject: {encoded_subject}\r\n".encode("ascii")
    return (head + b"\r\n").replace(placeholder, replacement, 1)[:-2] + separator + body


def _build_by_hand(headers: list[tuple[str, str]], text: str) -> bytes:
    """Fallback writer for input the email package refuses to serialise."""
    lines = []
    for name, value in headers:
        if value.isascii():
            lines.append(f"{name}: {value}".encode("ascii"))
        elif name == "Subject":
            encoded = Header(value, "utf-8", header_name=name).encode(linesep="\r\n")
            lines.append(f"{name}: {encoded}".encode("ascii"))
        else:
            lines.append(f"{name}: {value}".encode())
    lines += [
        b"MIME-Version: 1.0",
        b'Content-Type: text/plain; charset="utf-8"',
        b"Content-Transfer-Encoding: quoted-printable",
        b"",
    ]
    body = "\n".join(text.splitlines()) + "\n"
    encoded_body = quopri.encodestring(body.encode("utf-8"))
    return b"\r\n".join(lines) + b"\r\n" + encoded_body.replace(b"\n", b"\r\n")


def build_simulated_message(
    *,
    mail_from: str,
    to: str,
    subject: str,
    text: str,
    message_id: str | None = None,
) -> bytes:
    """A synthetic RFC 5322 message (used by the 'simulate webhook' API) — UTF-8 safe for any input, with Date and Message-ID.

    Users test their webhook endpoint with arbitrary form input, so nothing here may fail:
    header inputs are flattened to one line and any Unicode is encoded properly (see the
    docs/payload.md). ``message_id`` defaults to a fresh ``make_msgid`` id.
    """  # noqa: E501 - the first line is the documented contract, kept verbatim.
    mail_from = _header_input(mail_from)
    to = _header_input(to)
    headers = [
        ("From", mail_from),
        ("To", to),
        ("Subject", _header_input(subject)),
        ("Date", format_datetime(datetime.now(UTC))),
        ("Message-ID", _message_id(message_id, mail_from)),
    ]
    # Normalise every kind of line break (CR, FF, U+2028, ...) ourselves: the email package
    # only treats some of them as line breaks, which would make the round trip unpredictable.
    body = "".join(f"{line}\n" for line in scrub_surrogates(str(text)).splitlines())
    utf8 = _has_non_ascii_address(mail_from) or _has_non_ascii_address(to)
    try:
        return _build_with_email_package(headers, body, utf8)
    except Exception:
        return _build_by_hand(headers, body)
