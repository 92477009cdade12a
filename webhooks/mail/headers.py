"""Header values: unfolding, RFC 2047 encoded words, addresses, dates (docs/payload.md)."""

from __future__ import annotations

import binascii
import contextlib
import re
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any

from webhooks.mail.charsets import decode_bytes, repair_8bit, scrub_surrogates

# Lenient: the encoded text may contain spaces (some mailers emit them) but never "?".
_ENCODED_WORD_RE = re.compile(r"=\?([^?\s]+)\?([QqBb])\?([^?]*)\?=")
_BASE64_JUNK_RE = re.compile(r"[^A-Za-z0-9+/]")


def _decode_word_payload(encoding: str, text: str) -> bytes | None:
    """Bytes of one encoded word's text, or None if it cannot be decoded.

    Raw 8-bit bytes inside the word (surrogate-escaped by the reader) are taken as bytes in
    the word's charset, as mail clients do.
    """
    data = text.encode("utf-8", "surrogateescape")
    try:
        if encoding in "Qq":
            return binascii.a2b_qp(data, header=True)
        if not text.isascii():
            return None
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
    """A header value, unfolded, with encoded words and then raw 8-bit bytes decoded."""
    try:
        value = str(value)
        if "\n" in value or "\r" in value:
            value = value.replace("\r", "").replace("\n", "")
        value = value.strip(" \t")
        if "=?" in value:
            value = decode_encoded_words(value)
        return scrub_surrogates(repair_8bit(value))
    except Exception:
        return scrub_surrogates(str(value))


# One token of an address list: a quoted string, a comment, an angle-addr, a separator or a
# run of anything else. Comments nest (RFC 5322 §3.2.2); the scanner below handles that.
_ADDRESS_TOKEN_RE = re.compile(r"""\s+|"(?:[^"\\]|\\.)*"?|<[^<>]*>?|[,;:]|\(|[^\s"(),;:<>]+|[)>]""")


def _skip_comment(value: str, position: int, comments: list[str]) -> int:
    """From just after a "(": to just after its matching ")", appending the comment's text."""
    depth, start, index = 1, position, position
    while index < len(value) and depth:
        char = value[index]
        if char == "\\":
            index += 1
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        index += 1
    text = value[start : index - 1 if depth == 0 else index]
    comments.append(_QUOTED_PAIR_RE.sub(r"\1", text).strip())
    return index


def _mailbox(words: list[tuple[str, bool]], angle: str | None, comments: list[str]):
    """(name, address) of one mailbox from its tokens, or None when it has no address.

    ``words`` are the phrase/addr-spec tokens in order with whether whitespace came before.
    """
    if angle is not None:
        address = re.sub(r"\([^()]*\)|\s+", "", angle)
        if address.startswith("@") and ":" in address:  # an obsolete source route
            address = address.rpartition(":")[2]
        name = " ".join(text for text, _ in words)
        return (name or (comments[0] if comments else ""), address)
    if not words:
        return None
    # An addr-spec, possibly with the obsolete blanks around "." and "@" (RFC 5322 §4.4).
    joined, previous = "", ""
    for text, spaced in words:
        if spaced and joined and not (previous[-1:] in ".@" or text[:1] in ".@"):
            break
        joined += text
        previous = text
    else:
        if "@" in joined or len(words) == 1:
            return (comments[0] if comments else "", joined)
        return None
    # Words that are no addr-spec: keep the one that looks like an address, if any.
    candidates = [text for text, _ in words if "@" in text.strip("@")]
    if len(candidates) != 1:
        return None
    name = " ".join(text for text, _ in words if text != candidates[0])
    return (name, candidates[0])


def _plausible(address: str) -> bool:
    """Whether ``address`` can be one: no blanks, and a local part and a domain around "@"."""
    if not address or any(char.isspace() for char in address):
        return False
    if "@" not in address:
        return True  # a bare local part, as some mailers write local recipients
    local, _, domain = address.rpartition("@")
    return bool(local.strip("@")) and bool(domain)


def parse_address_list(value: str) -> list[tuple[str, str]]:
    """``(display name, address)`` pairs of an address header, the way mail clients read it.

    Unlike ``email.utils.getaddresses``: the angle-addr wins over anything before it
    (``billing@bank.example <x@attacker.example>`` is x@attacker.example); comments never
    join the display name; a malformed entry (a junk tail, a phrase without an address) is
    dropped without taking its neighbours with it; groups yield their members.
    """
    result: list[tuple[str, str]] = []
    words: list[tuple[str, bool]] = []
    comments: list[str] = []
    angle: str | None = None
    spaced = False

    def finish() -> None:
        nonlocal angle
        mailbox = _mailbox(words, angle, comments)
        if mailbox is not None and _plausible(mailbox[1]):
            result.append(mailbox)
        words.clear()
        comments.clear()
        angle = None

    position = 0
    while position < len(value):
        match = _ADDRESS_TOKEN_RE.match(value, position)
        if match is None:  # cannot happen: every character starts some token
            break
        token = match.group()
        position = match.end()
        if token.isspace():
            spaced = True
            continue
        if token == "(":
            position = _skip_comment(value, position, comments)
        elif token in (",", ";"):
            finish()
        elif token == ":":
            if angle is None:  # a group's name: its members follow
                words.clear()
                comments.clear()
        elif token.startswith("<"):
            angle = token[1:].removesuffix(">")
        elif token.startswith('"'):
            if angle is None:
                text = _QUOTED_PAIR_RE.sub(r"\1", token[1:].removesuffix('"'))
                words.append((text, spaced))
        elif token not in ")>" and angle is None:
            words.append((token, spaced))
        spaced = False
    finish()
    return result


def addresses(raw_values: list[str]) -> list[dict[str, str]]:
    """Parse address headers (see docs/payload.md): [{"address", "name"}], never raising."""
    result = []
    for raw_value in raw_values:
        pairs: list[tuple[str, str]] = []
        with contextlib.suppress(Exception):
            # Not unfold(): raw 8-bit bytes must reach decode_header as bytes, so that
            # those inside an encoded word are decoded in its charset.
            pairs = parse_address_list(raw_value.replace("\r", "").replace("\n", ""))
        for name, address in pairs:
            result.append({"address": decode_header(address), "name": decode_header(name).strip()})
    return result


_DATE_COMMENT_RE = re.compile(r"\([^()]*\)")


def format_date(value: str | None) -> str | None:
    """ISO 8601 UTC ("...Z") for an RFC 5322 date, or None if missing/unparseable."""
    if not value or not value.strip():
        return None
    for _ in range(8):  # comments may nest; a comment before the zone would shift the time
        without = _DATE_COMMENT_RE.sub(" ", value)
        if without == value:
            break
        value = without
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


# ---------------------------------------------------------------------------------------------
# The header block, read leniently
# ---------------------------------------------------------------------------------------------

# A field line: a name of printable ASCII without ":" (RFC 5322 §3.6.8), then the colon;
# obsolete whitespace before the colon is accepted (RFC 5322 §4.5.3).
_FIELD_RE = re.compile(rb"([\x21-\x39\x3b-\x7e]+)[ \t]*:")
_BOM = b"\xef\xbb\xbf"


def _line_end(raw: bytes, position: int, end: int) -> int:
    newline = raw.find(b"\n", position, end)
    return end if newline < 0 else newline + 1


def _is_field_or_continuation(raw: bytes, position: int, end: int) -> bool:
    if position >= end:
        return False
    if raw[position] in b" \t":
        return bool(raw[position : _line_end(raw, position, end)].strip())
    return _FIELD_RE.match(raw, position, end) is not None


def read_header_block(raw: bytes, start: int = 0, end: int | None = None) -> tuple[list, int]:
    """The header fields of the message (or part) in ``raw[start:end]``, and where its body starts.

    Fields are ``(name, value)`` with the value as the email package gives it (bytes decoded
    as ASCII with ``surrogateescape``, folding kept). Unlike the email package, one malformed
    line does not end the block: a line that is no field but is followed by one is a
    continuation that lost its blank (unfolded into the field before it) or, when it has a
    colon or comes first, junk (skipped). A UTF-8 BOM before the first field is skipped and an
    indented first field is read as a field. The block ends at the blank line, or at a line
    that is no field and is not followed by one (a message without the blank line).
    """
    fields, body_start = _field_lines(raw, start, end)
    return _finish(fields), body_start


def _field_lines(raw: bytes, start: int, end: int | None) -> tuple[list[list[bytes]], int]:
    """read_header_block's work: each field's raw lines, and where the body starts."""
    end = len(raw) if end is None else end
    position = start + 3 if raw.startswith(_BOM, start, end) else start
    fields: list[list[bytes]] = []
    while position < end:
        line_end = _line_end(raw, position, end)
        line = raw[position:line_end]
        if not line.rstrip(b"\r\n"):  # the blank line
            return fields, line_end
        position_before, position = position, line_end
        if line[0] in b" \t":
            if fields:
                fields[-1].append(line)
            elif _FIELD_RE.match(line.lstrip(b" \t")):
                fields.append([line.lstrip(b" \t")])
            continue
        if _FIELD_RE.match(line):
            fields.append([line])
            continue
        if line.startswith((b"From ", b">From ")):  # an mbox separator line
            continue
        if not _is_field_or_continuation(raw, line_end, end):
            return fields, position_before  # the body starts here
        if fields and b":" not in line:
            fields[-1].append(b" " + line)
    return fields, end


def header_block_end(raw: bytes) -> int:
    """Where the blank line after the first header block ends, found without reading it
    line by line (the whole message when there is none). Past it, read_header_block
    never looks, so a caller that only wants the headers need not hand it the body."""
    # A blank line, "\r\n" or "\n", right after a line's end. (One the reader also
    # takes for blank but this misses, "\r\r\n", only makes the bound later.) The
    # bare-LF form is looked for only before the CRLF one: absent, it scans slowly.
    crlf = raw.find(b"\n\r\n")
    limit = crlf + 3 if crlf >= 0 else len(raw)
    lf = raw.find(b"\n\n", 0, limit)
    return lf + 2 if lf >= 0 else limit


def message_id_and_subject(raw: bytes) -> tuple[str, str]:
    """The message's first Message-ID and Subject, as the payload's ``message_id`` and
    ``subject`` report them; "" for one it lacks.

    The one reading of them: the ingress stores both with every message it accepts
    (InboundMessage.message_id_header, what operators search by, and .subject, what the
    message list searches), and webhooks.payload reads the same header block with the
    same reader.
    """
    found: dict[str, str] = {}
    fields, _ = _field_lines(raw, 0, header_block_end(raw))
    for lines in fields:
        start = lines[0][:10].lower()
        if start != b"message-id" and not start.startswith(b"subject"):
            continue
        # Only the fields asked for are decoded (_finish, as read_header_block does).
        for name, value in _finish([lines]):
            name = name.lower()
            if name in ("message-id", "subject") and name not in found:
                found[name] = decode_header(value)
        if len(found) == 2:
            break
    return found.get("message-id", "").strip(), found.get("subject", "")


def _finish(fields: list[list[bytes]]) -> list[tuple[str, str]]:
    result = []
    for lines in fields:
        first = lines[0].decode("ascii", "surrogateescape")
        name, _, value = first.partition(":")
        rest = "".join(line.decode("ascii", "surrogateescape") for line in lines[1:])
        result.append((name.rstrip(" \t"), (value.lstrip(" \t") + rest).rstrip("\r\n")))
    return result


# ---------------------------------------------------------------------------------------------
# Content-Type / Content-Disposition parameters
# ---------------------------------------------------------------------------------------------

_MEDIA_TYPE_RE = re.compile(r"\s*([!#$%&'*+.^`|~\w-]+)\s*/\s*([!#$%&'*+.^`|~\w-]+)")
_PARAMETER_RE = re.compile(
    r"""[\s;]*([!#$%&'+.^`|~\w-]+)(?:\*(\d+))?(\*)?\s*=\s*("(?:[^"\\]|\\.)*"?|[^;]*)""",
    re.DOTALL,
)
_QUOTED_PAIR_RE = re.compile(r"\\(.)", re.DOTALL)
_PERCENT_RE = re.compile(rb"%([0-9A-Fa-f]{2})")


def media_type(value: str | None, default: str) -> str:
    """The bare lower-cased ``type/subtype`` of a Content-Type value; invalid: text/plain."""
    if value is None:
        return default
    match = _MEDIA_TYPE_RE.match(unfold(value))
    return f"{match.group(1)}/{match.group(2)}".lower() if match else "text/plain"


def disposition_type(value: str | None) -> str | None:
    if value is None:
        return None
    return unfold(value).partition(";")[0].strip().lower()


def parameters(value: str | None) -> dict[str, str]:
    """The parameters of a Content-Type/-Disposition value, by lower-cased name.

    Values are unquoted and RFC 2231 sections joined and decoded; an unquoted value runs to
    the next ``;`` (so ``name=This is a test.txt`` and ``boundary=----=_Part`` stay whole),
    and a missing ``;`` after the media type is tolerated. Raw 8-bit bytes and RFC 2047
    encoded words are left for ``decode_header``. Linear in the length of the value.
    """
    if not value:
        return {}
    value = value.replace("\r", "").replace("\n", "")
    match = _MEDIA_TYPE_RE.match(value)
    position = match.end() if match else value.find(";") + 1 if ";" in value else len(value)
    plain: dict[str, str] = {}
    sections: dict[str, list[tuple[int, bool, str]]] = {}
    while position < len(value):
        match = _PARAMETER_RE.match(value, position)
        if match is None:
            semicolon = value.find(";", position)
            if semicolon < 0:
                break
            position = semicolon + 1
            continue
        position = match.end()
        name, section, extended, raw_value = match.groups()
        name = name.lower()
        if raw_value.startswith('"'):
            raw_value = _QUOTED_PAIR_RE.sub(r"\1", raw_value[1:].removesuffix('"'))
        else:
            raw_value = raw_value.strip()
        if section is None and not extended:
            plain.setdefault(name, raw_value)
        else:
            sections.setdefault(name, []).append((int(section or 0), bool(extended), raw_value))
    for name, parts in sections.items():
        joined = _join_rfc2231(parts)
        if joined is not None:
            plain[name] = joined
    return plain


def _join_rfc2231(parts: list[tuple[int, bool, str]]) -> str | None:
    parts.sort(key=lambda part: part[0])
    charset: str | None = None
    data = bytearray()
    for index, (_, extended, text) in enumerate(parts):
        if extended and index == 0 and text.count("'") >= 2:
            charset, _, text = text.split("'", 2)
        raw = text.encode("utf-8", "surrogateescape")
        data += _PERCENT_RE.sub(lambda m: bytes([int(m.group(1), 16)]), raw) if extended else raw
    if charset is None and not any(extended for _, extended, _ in parts):
        return bytes(data).decode("utf-8", "surrogateescape")
    return decode_bytes(bytes(data), charset or None)
