"""One pass over a message's MIME tree: body texts and attachments (docs/payload.md).

The tree is read from the original bytes by offsets (``Part``), not by the email package:
header blocks are read leniently (``headers.read_header_block``), boundaries are found the
way mail clients find them and every part, forwarded messages included, is a slice of the
bytes the sender wrote.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import quopri
import re
from dataclasses import dataclass, field
from typing import Any

from webhooks.mail.charsets import decode_bytes
from webhooks.mail.headers import (
    decode_header,
    disposition_type,
    media_type,
    parameters,
    read_header_block,
)
from webhooks.mail.tnef import TNEF_TYPES, tnef_files

# Deeper multiparts than this are delivered as text, not walked (a hostile message can nest
# thousands of levels; no mail client goes near this).
MAX_DEPTH = 64


def safe(function: Any, default: Any) -> Any:
    try:
        return function()
    except Exception:
        return default


@dataclass
class Part:
    """One MIME entity: its header fields and where its body lies in the message's bytes."""

    raw: bytes
    headers: list[tuple[str, str]]
    body_start: int
    body_end: int
    default_type: str = "text/plain"
    children: list[Part] | None = None  # None for a leaf; [] for a multipart without parts

    def header(self, name: str) -> str | None:
        for field_name, value in self.headers:
            if field_name.lower() == name:
                return value
        return None

    @property
    def body(self) -> bytes:
        return self.raw[self.body_start : self.body_end]


def _strip_line_break(raw: bytes, start: int, end: int) -> int:
    """The end of a part before a delimiter: the CRLF before it belongs to the delimiter."""
    if end - 2 >= start and raw[end - 2 : end] == b"\r\n":
        return end - 2
    if end - 1 >= start and raw[end - 1 : end] == b"\n":
        return end - 1
    return end


def _delimiters(raw: bytes, start: int, end: int, boundary: bytes) -> list[tuple[int, int, bool]]:
    """(line start, line end, is closing) of every delimiter line of ``boundary``."""
    marker = b"--" + boundary
    found = []
    position = start
    while True:
        index = raw.find(marker, position, end)
        if index < 0:
            return found
        position = index + len(marker)
        if index != start and raw[index - 1] != 0x0A:
            continue
        newline = raw.find(b"\n", position, end)
        line_end = end if newline < 0 else newline + 1
        rest = raw[position:line_end].rstrip(b"\r\n")
        closing = rest.startswith(b"--")
        if closing:
            rest = rest[2:]
        if not rest.strip(b" \t"):
            found.append((index, line_end, closing))


def _split(raw: bytes, start: int, end: int, boundary: bytes) -> list[tuple[int, int]] | None:
    """The (start, end) of each body part, or None when no delimiter line is found.

    A closing delimiter followed by more delimiters of the same boundary does not end the
    multipart: that is how a nested part reusing its parent's boundary hides the parts after
    it from strict parsers, and mail clients show those parts.
    """
    delimiters = _delimiters(raw, start, end, boundary)
    if not delimiters:
        return None
    spans = []
    for (_, line_end, closing), following in zip(delimiters, [*delimiters[1:], None], strict=True):
        if closing:
            continue
        if following is None:
            spans.append((line_end, end))  # no closing delimiter: the part runs to the end
        else:
            spans.append((line_end, _strip_line_break(raw, line_end, following[0])))
    return spans


def parse(raw: bytes) -> Part:
    return _parse_part(raw, 0, len(raw), "text/plain", (), 0)


def _parse_part(
    raw: bytes, start: int, end: int, default_type: str, boundaries: tuple[bytes, ...], depth: int
) -> Part:
    headers, body_start = read_header_block(raw, start, end)
    part = Part(raw, headers, body_start, end, default_type)
    content_type = part.header("content-type")
    if not media_type(content_type, default_type).startswith("multipart/") or depth >= MAX_DEPTH:
        return part
    boundary_text = parameters(content_type).get("boundary", "").rstrip()
    boundary = boundary_text.encode("utf-8", "surrogateescape")
    if not boundary:
        return part
    if boundary in boundaries:
        # Reuses an enclosing boundary: that multipart took every delimiter line, so the
        # parts this one seems to hold are its siblings (see _split).
        part.children = []
        return part
    spans = _split(raw, body_start, end, boundary)
    if spans is None:
        return part
    child_default = (
        "message/rfc822" if media_type(content_type, "") == "multipart/digest" else "text/plain"
    )
    part.children = [
        _parse_part(raw, s, e, child_default, (*boundaries, boundary), depth + 1) for s, e in spans
    ]
    return part


@dataclass
class _PartInfo:
    """What the walker needs to know about one MIME part, read once."""

    content_type: str
    disposition: str | None
    filename: str | None
    charset: str | None
    content_id: str | None
    transfer_encoding: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def _part_info(part: Part) -> _PartInfo:
    content_type = part.header("content-type")
    disposition = part.header("content-disposition")
    type_parameters = parameters(content_type)
    filename = parameters(disposition).get("filename") or type_parameters.get("name")
    return _PartInfo(
        content_type=media_type(content_type, part.default_type),
        disposition=disposition_type(disposition),
        filename=_clean_filename(filename),
        charset=type_parameters.get("charset"),
        content_id=_clean_content_id(part.header("content-id")),
        transfer_encoding=(part.header("content-transfer-encoding") or "").strip().lower(),
    )


_BASE64_JUNK_RE = re.compile(rb"[^A-Za-z0-9+/]")


def _decode_base64(data: bytes) -> bytes:
    """Base64 as mail clients decode it: junk characters and a stray last one are ignored."""
    with contextlib.suppress(binascii.Error, ValueError):
        return binascii.a2b_base64(data)
    cleaned = _BASE64_JUNK_RE.sub(b"", data)
    if len(cleaned) % 4 == 1:
        cleaned = cleaned[:-1]
    return binascii.a2b_base64(cleaned + b"=" * (-len(cleaned) % 4))


def _decode_uuencode(data: bytes) -> bytes:
    out = bytearray()
    for line in data.splitlines():
        if line.startswith(b"begin ") or not line.strip():
            continue
        if line.strip() == b"end":
            break
        try:
            out += binascii.a2b_uu(line)
        except binascii.Error:
            # Some encoders add padding the decoder does not want: cut the line to its length.
            with contextlib.suppress(binascii.Error, IndexError):
                out += binascii.a2b_uu(line[: ((line[0] - 32) & 63) * 4 // 3 + 5])
    return bytes(out)


def _part_bytes(part: Part, encoding: str) -> bytes:
    """The decoded (transfer-encoding removed) bytes of a leaf part."""
    data = part.body
    try:
        if encoding == "base64":
            return _decode_base64(data)
        if encoding == "quoted-printable":
            return quopri.decodestring(data)
        if encoding in ("x-uuencode", "uuencode", "x-uue", "uue"):
            return _decode_uuencode(data)
    except Exception:
        return data
    return data


def _body_text(data: bytes, charset: str | None) -> str:
    text = decode_bytes(data, charset)
    if text.startswith("\ufeff"):
        text = text[1:]
    return text.replace("\r\n", "\n")


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


def _disposition(info: _PartInfo) -> str:
    if info.disposition in ("inline", "attachment"):
        return info.disposition
    return "inline" if info.content_id else "attachment"


class Walker:
    """Single pass over the MIME tree collecting bodies and attachments.

    An attachment larger than ``link_over`` bytes gets ``content: None`` instead of
    its base64 (the payload links to it instead); with ``keep_contents`` the decoded
    bytes of every attachment are kept in ``contents``, in the same order.
    """

    def __init__(self, *, link_over: int | None = None, keep_contents: bool = False) -> None:
        self.text: str | None = None
        self.html: str | None = None
        self.attachments: list[dict[str, Any]] = []
        self.contents: list[bytes] | None = [] if keep_contents else None
        self.link_over = link_over

    def _add(
        self,
        data: bytes,
        *,
        filename: str | None,
        content_type: str,
        content_id: str | None,
        disposition: str,
    ) -> None:
        inline = self.link_over is None or len(data) <= self.link_over
        self.attachments.append(
            {
                "filename": filename,
                "content_type": content_type,
                "size": len(data),
                "content_id": content_id,
                "disposition": disposition,
                "content": base64.b64encode(data).decode("ascii") if inline else None,
            }
        )
        if self.contents is not None:
            self.contents.append(data)

    def _attachment(self, info: _PartInfo, data: bytes) -> None:
        self._add(
            data,
            filename=info.filename,
            content_type=info.content_type,
            content_id=info.content_id,
            disposition=_disposition(info),
        )

    def walk(self, message: Part) -> None:
        # Iterative depth-first walk in document order: no recursion limit to hit.
        stack: list[Part] = [message]
        while stack:
            part = stack.pop()
            try:
                self._visit(part, stack)
            except Exception:
                self._visit_fallback(part)

    def _visit(self, part: Part, stack: list[Part]) -> None:
        if part.children is not None:
            stack.extend(reversed(part.children))
            return
        info = _part_info(part)
        data = _part_bytes(part, info.transfer_encoding)
        if info.content_type.startswith("multipart/"):
            if not data.strip():
                return  # an empty multipart (e.g. an empty alternative) holds nothing
            # A multipart without a usable boundary: its body is all we have, as text.
            info.content_type = "text/plain"
        is_body_candidate = info.disposition != "attachment" and info.filename is None
        if is_body_candidate and info.content_type == "text/plain" and self.text is None:
            self.text = _body_text(data, info.charset)
            return
        if is_body_candidate and info.content_type == "text/html" and self.html is None:
            self.html = _body_text(data, info.charset)
            return
        # Everything else is delivered as it is: message/* parts (forwards, reports) are
        # the embedded message's own bytes.
        self._attachment(info, data)
        if info.content_type in TNEF_TYPES or (info.filename or "").lower() == "winmail.dat":
            for filename, content_type, content in tnef_files(data):
                self._add(
                    content,
                    filename=filename,
                    content_type=content_type,
                    content_id=None,
                    disposition="attachment",
                )

    def _visit_fallback(self, part: Part) -> None:
        """Last resort for a part that broke the normal path: keep its bytes if we can."""
        with contextlib.suppress(Exception):
            info = _PartInfo("application/octet-stream", None, None, None, None)
            self._attachment(info, part.body)
