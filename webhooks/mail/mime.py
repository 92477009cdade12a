"""One pass over a message's MIME tree: body texts and attachments (docs/payload.md)."""

from __future__ import annotations

import base64
import contextlib
import io
import re
from dataclasses import dataclass
from email import policy as email_policy
from email.generator import BytesGenerator
from email.message import EmailMessage, Message
from email.parser import BytesParser
from typing import Any

from webhooks.mail.charsets import decode_bytes
from webhooks.mail.headers import decode_header, unfold

_PARSE_POLICY = email_policy.default
# Re-serialises embedded messages (message/rfc822) close to byte-for-byte: never refold.
_SERIALIZE_POLICY = email_policy.default.clone(linesep="\r\n", refold_source="none")


def safe(function: Any, default: Any) -> Any:
    try:
        return function()
    except Exception:
        return default


# The stdlib's structured parse of Content-Type/Content-Disposition is quadratic in the
# header's length; real values are far below this, so longer ones get a crude parse instead.
_MAX_STRUCTURED_HEADER = 8192
_TOKEN_RE = re.compile(r"[!#$%&'*+.^`|~\w-]+/[!#$%&'*+.^`|~\w-]+")
_CRUDE_NAME_RE = re.compile(r"""\b(?:file)?name\*?\s*=\s*"?([^";]{1,1024})""", re.IGNORECASE)


@dataclass
class _PartInfo:
    """What the walker needs to know about one MIME part, read once."""

    content_type: str
    disposition: str | None
    filename: str | None
    charset: str | None
    content_id: str | None


def _clean_filename(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    value = decode_header(value).strip()
    return value or None


def _clean_content_id(value: str | None) -> str | None:
    if value is None:
        return None
    value = decode_header(value).strip().strip("<>").strip()
    return value or None


def _part_info(part: Message) -> _PartInfo:
    raw: dict[str, str] = {}
    for name, value in part.raw_items():
        lower = str(name).lower()
        if lower in ("content-type", "content-disposition", "content-id"):
            raw.setdefault(lower, str(value))
    content_id = _clean_content_id(raw.get("content-id"))
    if all(len(raw.get(h, "")) <= _MAX_STRUCTURED_HEADER for h in raw):
        return _PartInfo(
            content_type=safe(part.get_content_type, None) or "text/plain",
            disposition=safe(part.get_content_disposition, None),
            filename=_clean_filename(safe(part.get_filename, None)),
            charset=safe(part.get_content_charset, None),
            content_id=content_id,
        )
    # Oversized (hostile) headers: a linear best effort.
    content_type_value = unfold(raw.get("content-type", ""))
    match = _TOKEN_RE.match(content_type_value.strip())
    if match:
        content_type = match.group().lower()
    elif "content-type" in raw:
        content_type = "application/octet-stream"
    else:
        content_type = safe(part.get_default_type, None) or "text/plain"
    disposition_value = unfold(raw.get("content-disposition", ""))
    disposition = disposition_value.partition(";")[0].strip().lower() or None
    name_match = _CRUDE_NAME_RE.search(disposition_value) or _CRUDE_NAME_RE.search(
        content_type_value
    )
    return _PartInfo(
        content_type=content_type,
        disposition=disposition,
        filename=_clean_filename(name_match.group(1)) if name_match else None,
        charset=None,
        content_id=content_id,
    )


def _part_bytes(part: Message) -> bytes:
    """The decoded (transfer-encoding removed) bytes of a leaf part."""
    data = safe(lambda: part.get_payload(decode=True), None)
    if isinstance(data, bytes):
        return data
    payload = safe(part.get_payload, "")
    if isinstance(payload, str):
        return payload.encode("utf-8", "surrogateescape")
    return b""


def _serialize_embedded(part: Message) -> bytes:
    """The body of a message/* part (the embedded message) as bytes."""
    try:
        buffer = io.BytesIO()
        BytesGenerator(buffer, policy=_SERIALIZE_POLICY).flatten(part, unixfrom=False)
        flattened = buffer.getvalue()
    except Exception:
        try:
            flattened = part.as_bytes(policy=email_policy.compat32.clone(linesep="\r\n"))
        except Exception:
            return b""
    if flattened.startswith(b"\r\n"):
        return flattened[2:]
    _, separator, body = flattened.partition(b"\r\n\r\n")
    return body if separator else b""


def _body_text(part: Message, charset: str | None) -> str:
    text = decode_bytes(_part_bytes(part), charset)
    if text.startswith("\ufeff"):
        text = text[1:]
    return text.replace("\r\n", "\n")


def _attachment(info: _PartInfo, data: bytes) -> dict[str, Any]:
    disposition = info.disposition
    if disposition not in ("inline", "attachment"):
        disposition = "inline" if info.content_id else "attachment"
    return {
        "filename": info.filename,
        "content_type": info.content_type,
        "size": len(data),
        "content_id": info.content_id,
        "disposition": disposition,
        "content": base64.b64encode(data).decode("ascii"),
    }


class Walker:
    """Single pass over the MIME tree collecting bodies and attachments."""

    def __init__(self) -> None:
        self.text: str | None = None
        self.html: str | None = None
        self.attachments: list[dict[str, Any]] = []

    def walk(self, message: Message) -> None:
        # Iterative depth-first walk in document order: no recursion limit to hit.
        stack: list[Message] = [message]
        while stack:
            part = stack.pop()
            try:
                self._visit(part, stack)
            except Exception:
                self._visit_fallback(part)

    def _visit(self, part: Message, stack: list[Message]) -> None:
        if part.is_multipart():
            info = _part_info(part)
            if info.content_type.startswith("message/"):
                # message/rfc822 forwards, delivery-status reports: the embedded message.
                self.attachments.append(_attachment(info, _serialize_embedded(part)))
                return
            children = part.get_payload()
            if isinstance(children, list):
                stack.extend(reversed(children))
            return

        info = _part_info(part)
        if info.content_type.startswith("multipart/"):
            # A multipart without a usable boundary: the parser left its body as one string.
            info.content_type = "text/plain"
        is_body_candidate = info.disposition != "attachment" and info.filename is None
        if is_body_candidate and info.content_type == "text/plain" and self.text is None:
            self.text = _body_text(part, info.charset)
            return
        if is_body_candidate and info.content_type == "text/html" and self.html is None:
            self.html = _body_text(part, info.charset)
            return
        self.attachments.append(_attachment(info, _part_bytes(part)))

    def _visit_fallback(self, part: Message) -> None:
        """Last resort for a part that broke the normal path: keep its bytes if we can."""
        with contextlib.suppress(Exception):
            info = _PartInfo("application/octet-stream", None, None, None, None)
            self.attachments.append(_attachment(info, _part_bytes(part)))


def parse(raw: bytes) -> Message:
    with contextlib.suppress(Exception):
        return BytesParser(policy=_PARSE_POLICY).parsebytes(raw)
    try:
        return BytesParser(policy=_PARSE_POLICY).parsebytes(raw, headersonly=True)
    except Exception:
        return EmailMessage(policy=_PARSE_POLICY)
