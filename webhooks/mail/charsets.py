"""Charset labels to Python codecs, and decoding that never fails (docs/payload.md)."""

from __future__ import annotations

import codecs
import contextlib
import re
from functools import lru_cache

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
def codec_name(charset: str | None) -> str | None:
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


def decode_legacy(data: bytes) -> str:
    """Decode as windows-1252, falling back to ISO-8859-1 for undefined bytes; never fails."""
    text = data.decode("latin-1")
    if any(0x80 <= b < 0xA0 for b in data):
        text = text.translate(_CP1252_FIXUP)
    return text


def scrub_surrogates(text: str) -> str:
    """Replace lone surrogates (which cannot be encoded as UTF-8) with U+FFFD."""
    if text.isascii() or not _SURROGATES_RE.search(text):
        return text
    return _SURROGATES_RE.sub(lambda m: "\ufffd" * len(m.group()), text)


def decode_bytes(data: bytes, charset: str | None) -> str:
    """Decode ``data`` declared as ``charset`` without ever raising (see docs/payload.md)."""
    if not data:
        return ""
    name = codec_name(charset)
    if name is None or name == _ASCII:
        if data.isascii():
            return data.decode("ascii")
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return decode_legacy(data)
    if name == _LATIN1:
        return decode_legacy(data)
    try:
        return scrub_surrogates(data.decode(name))
    except UnicodeDecodeError:
        return scrub_surrogates(data.decode(name, "replace"))
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
        return decode_legacy(data)


def repair_8bit(value: str) -> str:
    """Turn surrogate-escaped raw 8-bit header bytes back into text (UTF-8, else cp1252).

    The parser decodes header bytes as ASCII with ``surrogateescape``; each run of escaped
    bytes is decoded separately so one mis-encoded field does not spoil a UTF-8 one.
    """
    if value.isascii():
        return value
    return _SURROGATES_RE.sub(_decode_8bit_run, value)
