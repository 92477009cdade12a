"""Build the default JSON webhook payload from a raw MIME message.

This module is deliberately free of Django so it can run anywhere on the delivery hot path
(SMTP ingress, Celery workers, the "simulate webhook" API) and be unit-tested in isolation.

Public API
----------
``Envelope`` / ``AuthResults``
    What the SMTP session told us; copied into the payload verbatim.
``build_payload(raw, *, envelope, auth, simulated=False) -> dict``
    The payload dict. Every key is always present and every value is a ``str``, ``int``,
    ``bool``, ``None``, ``list`` or ``dict``, so ``json.dumps`` always works.
``build_simulated_message(*, mail_from, to, subject, text, message_id=None) -> bytes``
    A synthetic RFC 5322 message for the "simulate webhook" API.

Robustness contract
-------------------
Mail on the internet is frequently malformed and ``build_payload`` runs for every delivery, so
it never raises on bad input: every field is extracted defensively and a broken field degrades
to the raw-ish string or an empty value instead of failing the whole delivery.

Decisions
---------
* **Parsing**: ``BytesParser(policy=email.policy.default)`` parses the message once. If even
  that fails (e.g. ``RecursionError`` on absurdly deep MIME nesting) the message is re-parsed
  with ``headersonly=True`` and its whole body is treated as plain text.
* **Headers are decoded by this module, not by the stdlib header classes**: the stdlib's
  structured header parser is quadratic on long headers full of encoded words (a 200 KB
  Subject takes seconds), which is a denial-of-service vector on a hot path. We unfold, repair
  raw 8-bit bytes and decode RFC 2047 encoded words with a linear decoder. Adjacent encoded
  words in the same charset are joined *before* charset decoding, so multi-byte characters
  split across words survive; whitespace between encoded words is dropped (RFC 2047 6.2).
  A malformed encoded word is kept verbatim. Per-part ``Content-Type``/``Content-Disposition``
  parameters (file names, charsets) do use the stdlib, but only for values up to 8 KiB; a
  longer (hostile) value gets a crude linear parse instead. The stdlib parser itself still
  parses every part's Content-Type once, so ingress should cap header sizes anyway.
* Leading and trailing blanks of a header value are insignificant (RFC 5322 folding
  whitespace) and are stripped.
* **Raw 8-bit header bytes** (SMTPUTF8 or just sloppy mailers) are decoded as UTF-8 when
  valid, otherwise as windows-1252 (with ISO-8859-1 for the five bytes cp1252 leaves undefined).
* **Charsets**: a part labelled ``us-ascii`` or not labelled at all is decoded as UTF-8 if
  valid, else windows-1252: unlabelled 8-bit bodies are nearly always one of those.
  ``iso-8859-1`` is decoded as windows-1252 (as browsers do; C1 controls are never intended).
  ``gb2312``/``gbk`` use ``gb18030`` and ``ks_c_5601-1987``/``euc-kr`` use ``cp949`` (their
  supersets, which is what senders actually emit). An unknown charset (or a Python codec that
  is not a real mail charset, e.g. ``unicode_escape``) falls back to UTF-8, then
  windows-1252. Invalid bytes in a known charset become U+FFFD. Body text has CRLF normalised
  to LF and a leading UTF-8 BOM removed.
* **Addresses**: ``email.utils.getaddresses`` runs on the *undecoded* (unfolded) header values
  and display names are RFC 2047-decoded afterwards. Decoding first would break addresses
  whose encoded display name contains a comma (``=?utf-8?q?Doe=2C_John?= <j@x>``). Entries
  without an address (e.g. the empty group ``undisclosed-recipients:;``) are dropped. All
  ``To``/``Cc``/``Reply-To`` headers are combined if a message (illegally) repeats them;
  ``from`` is the first address of the first ``From`` header, or ``None``.
* **message_id / in_reply_to** are the stripped header values *with* their angle brackets, as
  written, so they compare equal to the ``references`` tokens; ``None`` when absent or empty.
  ``references`` is the References header split on whitespace (and on ``><`` / commas, which
  some mailers use as separators).
* **date** is the first Date header converted to UTC (a ``-0000``/naive date is taken as UTC),
  formatted ``YYYY-MM-DDTHH:MM:SSZ``; ``None`` when missing or unparseable.
* **Body selection**: the MIME tree is walked depth-first in document order (iteratively, no
  recursion). ``text`` is the first ``text/plain`` leaf and ``html`` the first ``text/html``
  leaf that is a *body part*: not ``Content-Disposition: attachment`` and without a file name.
  Further inline text parts are **not** concatenated: doing so would glue mailing-list footers
  and alternative renderings into ``text`` unpredictably. Every other leaf is delivered,
  losslessly, under ``attachments`` (including extra inline text parts, ``text/calendar``
  invitations, inline images and ``message/rfc822`` forwards, whose content is the
  re-serialised embedded message).
* **Derived text**: with no ``text/plain`` body part, ``text`` is derived from ``html``
  (tags/scripts/styles/head stripped, entities unescaped, whitespace collapsed, line breaks
  for ``<br>``, block elements such as ``<div>``/``<li>``/``<tr>``, a blank line around
  ``<p>``/headings, cells separated by a space); ``""`` when there is no HTML either. Links,
  image alt texts and list bullets are not rendered. Because ``html.parser`` is quadratic on
  unterminated tags/comments, the HTML is first made linear-safe: comments and declarations
  are removed and a ``<`` that does not open a complete tag is escaped (see ``_prepare_html``).
* **Attachment disposition**: an explicit ``inline`` or ``attachment`` disposition wins;
  without one, a part with a Content-ID is ``"inline"`` (an embedded resource) and anything
  else ``"attachment"``. ``content_type`` is the bare lower-cased type without parameters.
  ``filename`` is decoded from RFC 2231 or RFC 2047 (``None`` if absent); it is untrusted
  sender input and must be sanitised before touching a file system.
* **Simulated messages** are 7-bit: RFC 2047 encoded headers and a quoted-printable UTF-8
  body, except that a non-ASCII *address* (not just a display name) in ``mail_from``/``to``
  switches the headers to raw UTF-8 (RFC 6532), because encoded words are not allowed inside
  an address. CR/LF and other control characters in header inputs become spaces (so no
  header injection) and lone surrogates become U+FFFD. A given ``message_id`` is reduced to
  the characters valid in a msg-id (atext, ``.``, ``@``, ``[]``) and wrapped in ``<>``; if
  nothing is left a fresh ``make_msgid`` id (domain from ``mail_from``) is used. A long
  non-ASCII Subject is encoded with ``email.header.Header``: ``policy.default``'s folder
  separates encoded words with the original space, which RFC 2047 decoders must drop, so
  "meeting tomorrow" would arrive as "meetingtomorrow". Garbage addresses can crash the
  stdlib address parser (IndexError/AttributeError); then the message is written by hand
  (``_build_by_hand``: non-ASCII From/To raw UTF-8, Subject RFC 2047, same body encoding).
  Every line break in ``text`` (anything ``str.splitlines`` splits on) becomes LF and the
  last line is terminated too, so ``text`` round-trips as
  ``"".join(line + "\\n" for line in text.splitlines())`` (``"\\n"`` for an empty text).
"""

from __future__ import annotations

import base64
import binascii
import codecs
import contextlib
import io
import quopri
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import policy as email_policy
from email.generator import BytesGenerator
from email.header import Header
from email.message import EmailMessage, Message
from email.parser import BytesParser
from email.utils import format_datetime, getaddresses, make_msgid, parsedate_to_datetime
from functools import lru_cache
from html import unescape as html_unescape
from html.parser import HTMLParser
from typing import Any

__all__ = ["AuthResults", "Envelope", "build_payload", "build_simulated_message"]


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


# ---------------------------------------------------------------------------------------------
# Charset handling
# ---------------------------------------------------------------------------------------------

# Labels whose real-world content is a superset encoding: decode with the superset.
_CHARSET_ALIASES = {
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "x-gbk": "gb18030",
    "ks_c_5601-1987": "cp949",
    "euc-kr": "cp949",
    "shift_jis": "cp932",
    "shift-jis": "cp932",
    "sjis": "cp932",
}
# Python codecs that are "text encodings" to Python but never legitimate mail charsets.
_BOGUS_CODECS = frozenset(
    {"unicode-escape", "raw-unicode-escape", "undefined", "idna", "punycode", "mbcs", "oem"}
)
_ASCII = "ascii"
_LATIN1 = "iso8859-1"

# windows-1252 for 0x80-0x9F where defined, ISO-8859-1 (i.e. the identity) elsewhere.
_CP1252_FIXUP = {}
for _byte in range(0x80, 0xA0):
    with contextlib.suppress(UnicodeDecodeError):
        _CP1252_FIXUP[_byte] = bytes([_byte]).decode("cp1252")
del _byte

_SURROGATES_RE = re.compile("[\ud800-\udfff]+")


@lru_cache(maxsize=256)
def _codec_name(charset: str | None) -> str | None:
    """Map a MIME charset label to a usable Python codec name, or None for "guess"."""
    if not charset or not isinstance(charset, str):
        return None
    label = charset.strip().strip("\"'").lower()
    label = _CHARSET_ALIASES.get(label, label)
    try:
        info = codecs.lookup(label)
    except (LookupError, ValueError):
        return None
    if not getattr(info, "_is_text_encoding", True):
        return None
    name = info.name.replace("_", "-")
    if name in _BOGUS_CODECS:
        return None
    return info.name


def _decode_legacy(data: bytes) -> str:
    """Decode as windows-1252, falling back to ISO-8859-1 for undefined bytes; never fails."""
    text = data.decode("latin-1")
    if any(0x80 <= b < 0xA0 for b in data):
        text = text.translate(_CP1252_FIXUP)
    return text


def _scrub_surrogates(text: str) -> str:
    """Replace lone surrogates (which cannot be encoded as UTF-8) with U+FFFD."""
    if text.isascii() or not _SURROGATES_RE.search(text):
        return text
    return _SURROGATES_RE.sub(lambda m: "\ufffd" * len(m.group()), text)


def _decode_bytes(data: bytes, charset: str | None) -> str:
    """Decode ``data`` declared as ``charset`` without ever raising (see module docstring)."""
    if not data:
        return ""
    name = _codec_name(charset)
    if name is None or name == _ASCII:
        if data.isascii():
            return data.decode("ascii")
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return _decode_legacy(data)
    if name == _LATIN1:
        return _decode_legacy(data)
    try:
        return _scrub_surrogates(data.decode(name))
    except UnicodeDecodeError:
        return _scrub_surrogates(data.decode(name, "replace"))
    except Exception:  # a broken codec: never let it fail the delivery
        return data.decode("utf-8", "replace")


def _decode_8bit_run(match: re.Match[str]) -> str:
    raw = bytearray()
    for char in match.group():
        code = ord(char)
        # surrogateescape maps byte 0xXX to U+DCXX; other surrogates are just invalid.
        raw.append(code - 0xDC00 if 0xDC80 <= code <= 0xDCFF else 0x3F)
    data = bytes(raw)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return _decode_legacy(data)


def _repair_8bit(value: str) -> str:
    """Turn surrogate-escaped raw 8-bit header bytes back into text (UTF-8, else cp1252).

    The parser decodes header bytes as ASCII with ``surrogateescape``; each run of escaped
    bytes is decoded separately so one mis-encoded field does not spoil a UTF-8 one.
    """
    if value.isascii():
        return value
    return _SURROGATES_RE.sub(_decode_8bit_run, value)


# ---------------------------------------------------------------------------------------------
# Header decoding
# ---------------------------------------------------------------------------------------------

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


def _decode_encoded_words(value: str) -> str:
    """Linear-time RFC 2047 decoder (see module docstring for why not the stdlib's)."""
    out: list[str] = []
    pending = bytearray()
    pending_charset: str | None = None
    previous_was_word = False
    position = 0

    def flush() -> None:
        nonlocal pending_charset
        if pending_charset is not None:
            out.append(_decode_bytes(bytes(pending), pending_charset))
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


def _unfold(value: str) -> str:
    """RFC 5322 unfolding (drop the CRLFs, keep the folding whitespace) plus 8-bit repair."""
    value = _repair_8bit(value)
    if "\n" in value or "\r" in value:
        value = value.replace("\r", "").replace("\n", "")
    return value


def _decode_header(value: Any) -> str:
    """A header value, unfolded, with raw 8-bit bytes and encoded words decoded."""
    try:
        value = _unfold(str(value)).strip(" \t")
        if "=?" in value:
            value = _decode_encoded_words(value)
        return _scrub_surrogates(value)
    except Exception:
        return _scrub_surrogates(str(value))


def _getaddresses(values: list[str]) -> list[tuple[str, str]]:
    pairs = getaddresses(values)
    # Python versions with the CVE-2023-27043 fix return [("", "")] for input they consider
    # malformed; fall back to the historical lenient behaviour so we still degrade gracefully.
    if not any(address for _, address in pairs) and any(v.strip() for v in values):
        with contextlib.suppress(TypeError):
            pairs = getaddresses(values, strict=False)  # type: ignore[call-arg]
    return pairs


def _addresses(raw_values: list[str]) -> list[dict[str, str]]:
    """Parse address headers (see module docstring): [{"address", "name"}], never raising."""
    if not raw_values:
        return []
    try:
        values = [_unfold(v) for v in raw_values]
        result = []
        for name, address in _getaddresses(values):
            if not address:
                continue
            result.append(
                {"address": _decode_header(address), "name": _decode_header(name).strip()}
            )
        return result
    except Exception:
        return []


def _format_date(value: str | None) -> str | None:
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


def _optional(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    return value or None


_REFERENCE_TOKEN_RE = re.compile(r"<[^<>]*>|[^\s<>,]+")


def _references(value: str | None) -> list[str]:
    if not value:
        return []
    return _REFERENCE_TOKEN_RE.findall(value)


# ---------------------------------------------------------------------------------------------
# HTML to text
# ---------------------------------------------------------------------------------------------

_SKIPPED_ELEMENTS = frozenset({"script", "style", "title", "template"})
_PARAGRAPH_ELEMENTS = frozenset({"p", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "pre"})
_LINE_ELEMENTS = frozenset(
    {
        "div",
        "li",
        "ul",
        "ol",
        "dl",
        "dt",
        "dd",
        "tr",
        "table",
        "thead",
        "tbody",
        "tfoot",
        "section",
        "article",
        "header",
        "footer",
        "nav",
        "aside",
        "main",
        "address",
        "figure",
        "figcaption",
        "form",
        "fieldset",
        "hr",
        "center",
    }
)
_CELL_ELEMENTS = frozenset({"td", "th"})
_WHITESPACE_RE = re.compile(r"\s+")


class _HTMLToText(HTMLParser):
    """Collects the visible text of an HTML document with sensible line breaks.

    Line breaks are "requested" rather than written: block elements ask for at least one
    newline (paragraphs for a blank line) and the request is only honoured before the next
    piece of text, so nested ``<div>``s never pile up blank lines while each ``<br>`` still
    counts.
    """

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self._out: list[str] = []
        self._newlines = 0  # newlines requested before the next text
        self._space = False  # a separating space requested before the next text
        self._skip = 0  # depth inside script/style/title/template
        self._in_head = False
        self._pre = 0

    def _request(self, newlines: int) -> None:
        self._newlines = max(self._newlines, newlines)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._start(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in _SKIPPED_ELEMENTS and tag != "head":
            self._start(tag)

    def _start(self, tag: str) -> None:
        if tag in _SKIPPED_ELEMENTS:
            self._skip += 1
        elif tag == "head":
            self._in_head = True
        elif tag == "body":
            # Recover from an unclosed <head>/<title>: the body is always visible.
            self._in_head = False
            self._skip = 0
        elif tag == "br":
            self._newlines += 1
        elif tag in _PARAGRAPH_ELEMENTS:
            self._request(2)
            if tag == "pre":
                self._pre += 1
        elif tag in _LINE_ELEMENTS:
            self._request(1)
        elif tag in _CELL_ELEMENTS:
            self._space = True

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIPPED_ELEMENTS:
            self._skip = max(0, self._skip - 1)
        elif tag == "head":
            self._in_head = False
        elif tag in _PARAGRAPH_ELEMENTS:
            self._request(2)
            if tag == "pre":
                self._pre = max(0, self._pre - 1)
        elif tag in _LINE_ELEMENTS:
            self._request(1)
        elif tag in _CELL_ELEMENTS:
            self._space = True

    def handle_data(self, data: str) -> None:
        if self._skip or self._in_head or not data:
            return
        trailing_space = False
        if self._pre:
            text = data.replace("\r\n", "\n")
        else:
            text = _WHITESPACE_RE.sub(" ", data)
            if text.startswith(" "):
                self._space = True
            trailing_space = text.endswith(" ")
            text = text.strip(" ")
            if not text:
                return
        if self._out:
            if self._newlines:
                self._out.append("\n" * self._newlines)
            elif self._space:
                self._out.append(" ")
        self._newlines = 0
        self._out.append(text)
        self._space = trailing_space

    def text(self) -> str:
        lines = [line.rstrip() for line in "".join(self._out).split("\n")]
        result: list[str] = []
        blank = 0
        for line in lines:
            if line.strip():
                blank = 0
                result.append(line)
            else:
                blank += 1
                if blank <= 1 and result:
                    result.append("")
        while result and not result[-1]:
            result.pop()
        return "\n".join(result)


_TAG_RE = re.compile(r"<[^>]*>")
# Markup declarations, CDATA sections and processing instructions: never visible text.
_DECLARATION_RE = re.compile(r"<[!?][^<>]*>")
# A "<" that does not open a tag closed before the next "<".
_STRAY_LT_RE = re.compile(r"<(?![A-Za-z/][^<>]*>)")


def _strip_comments(html: str) -> str:
    """Remove ``<!-- ... -->`` in one linear pass (an unclosed comment runs to the end)."""
    if "<!--" not in html:
        return html
    out: list[str] = []
    position = 0
    while True:
        start = html.find("<!--", position)
        if start < 0:
            out.append(html[position:])
            break
        out.append(html[position:start])
        end = html.find("-->", start + 4)
        if end < 0:
            break
        position = end + 3
    return "".join(out)


def _prepare_html(html: str) -> str:
    """Neutralise the constructs that make ``html.parser`` quadratic.

    ``HTMLParser`` rescans the rest of the document for every tag, comment or declaration it
    cannot find the end of, so hostile HTML such as ``"<a " * 30_000`` takes many seconds.
    Comments and declarations carry no visible text and are removed; any other ``<`` that does
    not start a tag closed before the next ``<`` is escaped to ``&lt;`` (which is also how a
    browser would display it). All three passes are linear.
    """
    html = _strip_comments(html)
    html = _DECLARATION_RE.sub("", html)
    return _STRAY_LT_RE.sub("&lt;", html)


def _html_to_text(html: str) -> str:
    """Visible text of an HTML body (see module docstring); never raises."""
    if not html:
        return ""
    try:
        parser = _HTMLToText()
        parser.feed(_prepare_html(html))
        parser.close()
        return parser.text()
    except Exception:
        stripped = html_unescape(_TAG_RE.sub(" ", html))
        return _WHITESPACE_RE.sub(" ", stripped).strip()


# ---------------------------------------------------------------------------------------------
# MIME walking
# ---------------------------------------------------------------------------------------------

_PARSE_POLICY = email_policy.default
# Re-serialises embedded messages (message/rfc822) close to byte-for-byte: never refold.
_SERIALIZE_POLICY = email_policy.default.clone(linesep="\r\n", refold_source="none")


def _safe(function: Any, default: Any) -> Any:
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
    value = _decode_header(value).strip()
    return value or None


def _clean_content_id(value: str | None) -> str | None:
    if value is None:
        return None
    value = _decode_header(value).strip().strip("<>").strip()
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
            content_type=_safe(part.get_content_type, None) or "text/plain",
            disposition=_safe(part.get_content_disposition, None),
            filename=_clean_filename(_safe(part.get_filename, None)),
            charset=_safe(part.get_content_charset, None),
            content_id=content_id,
        )
    # Oversized (hostile) headers: a linear best effort.
    content_type_value = _unfold(raw.get("content-type", ""))
    match = _TOKEN_RE.match(content_type_value.strip())
    if match:
        content_type = match.group().lower()
    elif "content-type" in raw:
        content_type = "application/octet-stream"
    else:
        content_type = _safe(part.get_default_type, None) or "text/plain"
    disposition_value = _unfold(raw.get("content-disposition", ""))
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
    data = _safe(lambda: part.get_payload(decode=True), None)
    if isinstance(data, bytes):
        return data
    payload = _safe(part.get_payload, "")
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
    text = _decode_bytes(_part_bytes(part), charset)
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


class _Walker:
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


def _parse(raw: bytes) -> Message:
    with contextlib.suppress(Exception):
        return BytesParser(policy=_PARSE_POLICY).parsebytes(raw)
    try:
        return BytesParser(policy=_PARSE_POLICY).parsebytes(raw, headersonly=True)
    except Exception:
        return EmailMessage(policy=_PARSE_POLICY)


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------

_ADDRESS_FIELDS = {"from": "from", "to": "to", "cc": "cc", "reply-to": "reply_to"}


def build_payload(
    raw: bytes,
    *,
    envelope: Envelope,
    auth: AuthResults,
    simulated: bool = False,
) -> dict:
    """Build the default webhook payload for one delivery of ``raw``.

    Never raises on malformed mail (a webhook must still be delivered for it); see the module
    docstring for every decoding decision. The result is JSON-serialisable as is.
    """
    if isinstance(raw, str):  # tolerate callers handing us text
        raw = raw.encode("utf-8", "surrogateescape")
    message = _parse(bytes(raw))

    headers: list[dict[str, str]] = []
    first: dict[str, str] = {}
    address_values: dict[str, list[str]] = {key: [] for key in _ADDRESS_FIELDS.values()}
    for name, value in _safe(lambda: list(message.raw_items()), []):
        name = _scrub_surrogates(_repair_8bit(str(name)))
        lower = name.lower()
        decoded = _decode_header(value)
        headers.append({"name": name, "value": decoded})
        first.setdefault(lower, decoded)
        if lower in _ADDRESS_FIELDS:
            address_values[_ADDRESS_FIELDS[lower]].append(str(value))

    from_addresses = _addresses(address_values["from"][:1])

    walker = _Walker()
    walker.walk(message)
    text = walker.text
    if text is None:
        text = _html_to_text(walker.html) if walker.html else ""

    return {
        "envelope": {
            "mail_from": envelope.mail_from,
            "rcpt_to": list(envelope.rcpt_to),
            "client_ip": envelope.client_ip,
            "helo": envelope.helo,
        },
        "from": from_addresses[0] if from_addresses else None,
        "to": _addresses(address_values["to"]),
        "cc": _addresses(address_values["cc"]),
        "reply_to": _addresses(address_values["reply_to"]),
        "subject": first.get("subject", ""),
        "date": _format_date(first.get("date")),
        "message_id": _optional(first.get("message-id")),
        "in_reply_to": _optional(first.get("in-reply-to")),
        "references": _references(first.get("references")),
        "text": text,
        "html": walker.html,
        "headers": headers,
        "attachments": walker.attachments,
        "authentication": {
            "spf": auth.spf,
            "dkim": list(auth.dkim),
            "smtp_auth_user": auth.smtp_auth_user,
        },
        "simulated": bool(simulated),
    }


# ---------------------------------------------------------------------------------------------
# Simulated messages
# ---------------------------------------------------------------------------------------------

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
    return _HEADER_CONTROL_RE.sub(" ", _scrub_surrogates(str(value))).strip()


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
    module docstring). ``message_id`` defaults to a fresh ``make_msgid`` id.
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
    body = "".join(f"{line}\n" for line in _scrub_surrogates(str(text)).splitlines())
    utf8 = _has_non_ascii_address(mail_from) or _has_non_ascii_address(to)
    try:
        return _build_with_email_package(headers, body, utf8)
    except Exception:
        return _build_by_hand(headers, body)
