"""Header values: unfolding, RFC 2047 encoded words, addresses, dates (docs/payload.md)."""

from __future__ import annotations

import binascii
import contextlib
import re
from datetime import UTC
from email.utils import getaddresses, parsedate_to_datetime
from typing import Any

from webhooks.mail.charsets import decode_bytes, repair_8bit, scrub_surrogates

# Lenient: the encoded text may contain spaces (some mailers emit them) but never "?".
_ENCODED_WORD_RE = re.compile(r"=\?([^?\s]+)\?([QqBb])\?([^?]*)\?=")
_BASE64_JUNK_RE = re.compile(r"[^A-Za-z0-9+/]")


def _decode_word_payload(encoding: str, text: str) -> bytes | None:
    """Bytes of one encoded word's text, or None if it cannot be decoded."""
    if not text.isascii():
        return None
    try:
        if encoding in "Qq":
            return binascii.a2b_qp(text, header=True)
        text = text.replace(" ", "").rstrip("=")
        if _BASE64_JUNK_RE.search(text):
            return None
        if len(text) % 4 == 1:  # one stray character can never be valid base64: drop it
            text = text[:-1]
        return binascii.a2b_base64(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None


def decode_encoded_words(value: str) -> str:
    """Linear-time RFC 2047 decoder (docs/payload.md says why not the stdlib's)."""
    out: list[str] = []
    pending = bytearray()
    pending_charset: str | None = None
    previous_was_word = False
    position = 0

    def flush() -> None:
        nonlocal pending_charset
        if pending_charset is not None:
            out.append(decode_bytes(bytes(pending), pending_charset))
            pending.clear()
            pending_charset = None

    for match in _ENCODED_WORD_RE.finditer(value):
        gap = value[position : match.start()]
        position = match.end()
        data = _decode_word_payload(match.group(2), match.group(3))
        if data is None:  # not decodable: keep it verbatim, like ordinary text
            flush()
            out.append(gap)
            out.append(match.group(0))
            previous_was_word = False
            continue
        if gap and not (previous_was_word and gap.isspace()):
            flush()
            out.append(gap)
        charset = match.group(1).split("*", 1)[0].lower()  # drop an RFC 2231 language tag
        if charset != pending_charset:
            flush()
            pending_charset = charset
        pending.extend(data)
        previous_was_word = True
    flush()
    out.append(value[position:])
    return "".join(out)


def unfold(value: str) -> str:
    """RFC 5322 unfolding (drop the CRLFs, keep the folding whitespace) plus 8-bit repair."""
    value = repair_8bit(value)
    if "\n" in value or "\r" in value:
        value = value.replace("\r", "").replace("\n", "")
    return value


def decode_header(value: Any) -> str:
    """A header value, unfolded, with raw 8-bit bytes and encoded words decoded."""
    try:
        value = unfold(str(value)).strip(" \t")
        if "=?" in value:
            value = decode_encoded_words(value)
        return scrub_surrogates(value)
    except Exception:
        return scrub_surrogates(str(value))


def _getaddresses(values: list[str]) -> list[tuple[str, str]]:
    pairs = getaddresses(values)
    # Python versions with the CVE-2023-27043 fix return [("", "")] for input they consider
    # malformed; fall back to the historical lenient behaviour so we still degrade gracefully.
    if not any(address for _, address in pairs) and any(v.strip() for v in values):
        with contextlib.suppress(TypeError):
            pairs = getaddresses(values, strict=False)  # type: ignore[call-arg]
    return pairs


def addresses(raw_values: list[str]) -> list[dict[str, str]]:
    """Parse address headers (see docs/payload.md): [{"address", "name"}], never raising."""
    if not raw_values:
        return []
    try:
        values = [unfold(v) for v in raw_values]
        result = []
        for name, address in _getaddresses(values):
            if not address:
                continue
            result.append({"address": decode_header(address), "name": decode_header(name).strip()})
        return result
    except Exception:
        return []


def format_date(value: str | None) -> str | None:
    """ISO 8601 UTC ("...Z") for an RFC 5322 date, or None if missing/unparseable."""
    if not value or not value.strip():
        return None
    try:
        parsed = parsedate_to_datetime(value.strip())
        if parsed is None:
            return None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        parsed = parsed.astimezone(UTC)
    except Exception:
        return None
    return (
        f"{parsed.year:04d}-{parsed.month:02d}-{parsed.day:02d}"
        f"T{parsed.hour:02d}:{parsed.minute:02d}:{parsed.second:02d}Z"
    )


def optional(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    return value or None


_REFERENCE_TOKEN_RE = re.compile(r"<[^<>]*>|[^\s<>,]+")


def references(value: str | None) -> list[str]:
    if not value:
        return []
    return _REFERENCE_TOKEN_RE.findall(value)
