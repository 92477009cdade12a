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
    "ks_c_5601": "cp949",
    "ks_c_5601-1989": "cp949",
    "ksc5601": "cp949",
    "ksc_5601": "cp949",
    "x-windows-949": "cp949",
    "windows-949": "cp949",
    "shift_jis": "cp932",
    "shift-jis": "cp932",
    "sjis": "cp932",
    "x-sjis": "cp932",
    "windows-31j": "cp932",
    # Hebrew and Arabic with an explicit ("-i") or visual ("-e") direction: same bytes.
    "iso-8859-8-i": "iso8859-8",
    "iso-8859-8-e": "iso8859-8",
    "iso-8859-6-i": "iso8859-6",
    "iso-8859-6-e": "iso8859-6",
    "windows-874": "cp874",
    "x-mac-cyrillic": "mac-cyrillic",
    "x-mac-roman": "mac-roman",
}
# Labels two incompatible supersets are sent under: the first that decodes the bytes wins.
# Big5 is written by Windows (cp950: the Microsoft additions) and in Hong Kong (HKSCS).
_SUPERSET_CHAINS = {"big5": ("cp950", "big5hkscs")}
_ISO2022JP = frozenset({"iso2022_jp", "iso2022_jp_1", "iso2022_jp_2", "iso2022_jp_ext"})
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
        return decode_mixed(data)
    if name == _LATIN1:
        return decode_legacy(data)
    for superset in _SUPERSET_CHAINS.get(name, ()):
        with contextlib.suppress(UnicodeDecodeError):
            return data.decode(superset)
    try:
        return scrub_surrogates(data.decode(name))
    except UnicodeDecodeError:
        if name in _ISO2022JP:
            return _decode_iso2022jp_as_cp932(data)
        return scrub_surrogates(data.decode(name, "replace"))
    except Exception:  # a broken codec: never let it fail the delivery
        return data.decode("utf-8", "replace")


_ISO2022JP_ESCAPE_RE = re.compile(rb"\x1b(\$[@B]|\$\(D|\([BJI])")


def _decode_iso2022jp_as_cp932(data: bytes) -> str:
    """ISO-2022-JP with the NEC and IBM extensions Windows writes (circled digits, ㈱, ...).

    Python's ISO-2022-JP codecs refuse those rows; they are Shift_JIS (cp932) characters in
    7-bit form, so each two-byte JIS character is converted to Shift_JIS and decoded as cp932.
    """
    out = bytearray()
    mode = b"(B"
    position = 0
    for match in [*_ISO2022JP_ESCAPE_RE.finditer(data), None]:
        chunk = data[position : match.start() if match else len(data)]
        if mode in (b"$@", b"$B", b"$(D"):
            for index in range(0, len(chunk) - 1, 2):
                first, second = chunk[index], chunk[index + 1]
                lead = ((first - 0x21) >> 1) + 0x81
                lead += 0x40 if lead > 0x9F else 0
                trail = second + (0x1F + (second >= 0x60) if first % 2 else 0x7E)
                out += bytes([lead & 0xFF, trail & 0xFF])
        elif mode == b"(I":
            out += bytes((byte | 0x80) & 0xFF for byte in chunk)
        else:
            out += chunk
        if match is None:
            break
        mode, position = match.group(1), match.end()
    return out.decode("cp932", "replace")


def _decode_8bit_run(match: re.Match[str]) -> str:
    raw = bytearray()
    for char in match.group():
        code = ord(char)
        # surrogateescape maps byte 0xXX to U+DCXX; other surrogates are just invalid.
        raw.append(code - 0xDC00 if 0xDC80 <= code <= 0xDCFF else 0x3F)
    return decode_mixed(bytes(raw))


def _legacy_fallback(error: UnicodeError) -> tuple[str, int]:
    if not isinstance(error, UnicodeDecodeError):
        raise error
    return decode_legacy(error.object[error.start : error.end]), error.end


codecs.register_error("conduit-cp1252", _legacy_fallback)
# Past this size a run that is not UTF-8 is decoded as cp1252 at once: the per-byte fallback
# calls back into Python for each bad byte.
_MIXED_LIMIT = 64 * 1024


def decode_mixed(data: bytes) -> str:
    """UTF-8 where the bytes are UTF-8 and windows-1252 for each byte that is not.

    Mixed runs happen when a mailer pastes a Latin-1 name into a UTF-8 header: decoding the
    whole run as cp1252 would turn every correct UTF-8 character into mojibake.
    """
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        if len(data) > _MIXED_LIMIT:
            return decode_legacy(data)
        return data.decode("utf-8", "conduit-cp1252")


def repair_8bit(value: str) -> str:
    """Turn surrogate-escaped raw 8-bit header bytes back into text (UTF-8, else cp1252).

    The parser decodes header bytes as ASCII with ``surrogateescape``; each run of escaped
    bytes is decoded separately so one mis-encoded field does not spoil a UTF-8 one.
    """
    if value.isascii():
        return value
    return _SURROGATES_RE.sub(_decode_8bit_run, value)
