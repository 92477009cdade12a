"""The new text of a reply: the body without the quoted history and the signature.

``split_reply(text)`` returns ``(stripped_text, stripped_signature)``. It reads the
body line by line, as a person skims it, and stops at the first line that starts
what the sender did not write now:

- a quoted line (``>``), or the quote header that introduces a quote: Gmail's, Apple
  Mail's and Thunderbird's "On … wrote:" in the languages below (Gmail wraps a long one
  over two lines; both are read together), or any line ending in ``:`` that is followed
  by quoted lines, whatever its language;
- Outlook's header block: a From line whose next few lines hold a Sent/Date line and a
  To/Subject line, with the labels in any of the languages below (``*From:*`` as HTML
  bold turns into text too), with the line of underscores above it;
- a separator such as ``-----Original Message-----`` or ``-------- Original-Nachricht --------``.

When the text begins with the quote (bottom-posting), the reply is what follows the
quoted lines instead. The signature is what follows the first ``-- `` line (RFC 3676; the
trailing blank is often lost, so a bare ``--`` counts), or a mobile client's line
("Sent from my iPhone", "Von meinem iPhone gesendet", "iPhoneから送信", "Get Outlook for
iOS" …) with what follows it. Closings such as "Best regards," stay in the text: they
are part of what the sender wrote, and telling a name from a sentence needs more than
rules.

Languages: English, German, French, Spanish, Italian, Dutch, Swedish, Norwegian,
Danish, Portuguese and Japanese. Only the first MAX_SCAN_CHARS of the text are read
(the cost is bounded on huge bodies); a text longer than that without any of the above
in its first MAX_SCAN_CHARS is its own reply. Pure functions, no Django, never raise.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["MAX_SCAN_CHARS", "split_reply"]

MAX_SCAN_CHARS = 64 * 1024
"""How much of a body is read for quotes and signatures (a reply is near the top)."""

# "On … wrote:" and its translations, as Gmail, Apple Mail, Thunderbird and Outlook for
# mobile write them (the line is whitespace-normalised; NBSP before ':' in French).
_QUOTE_HEADER = re.compile(
    r"""^(?:
        on\s.+\swrote\s?:                         # en: On Mon, 1 Jan 2024 at 10:00, X <x@y> wrote:
      | .{0,80}\swrote\s?:                         # en, Thunderbird: X wrote:
      | am\s.+\sschrieb\s.+:                       # de: Am 01.01.2024 um 10:00 schrieb X:
      | .{0,120}\sschrieb\s?.{0,80}:               # de, Apple Mail: … schrieb X <x@y>:
      | le\s.+\sa\sécrit\s?:                       # fr: Le lun. 1 janv. 2024 à 10:00, X a écrit :
      | .{0,120}\sa\sécrit\s?:                     # fr, Apple Mail: … X <x@y> a écrit :
      | el\s.+\sescribió\s?:                       # es: El lun, 1 ene 2024 a las 10:00, X escribió:
      | .{0,120}\sescribió\s?:
      | il\s.+\sha\sscritto\s?:                    # it: Il giorno … X ha scritto:
      | op\s.+\sschreef\s.+:                       # nl: Op ma 1 jan 2024 om 10:00 schreef X <x@y>:
      | .{0,120}\sschreef\s?.{0,80}:
      | (?:den\s)?.+\sskrev\s.+:                   # sv, no, da: Den … skrev X <x@y>:
      | em\s.+\sescreveu\s?:                       # pt: Em seg., 1 de jan. de 2024 às 10:00, X …:
      | .{0,120}\sescreveu\s?:
      | .{0,160}のメッセージ\s?[:\uff1a]        # ja, Apple Mail: 2024/01/01 10:00、X のメッセージ:
      | .{0,160}書きました\s?[:\uff1a]          # ja, Thunderbird: … に X さんは書きました:
      | \d{4}年\d{1,2}月\d{1,2}日.{0,160}[:\uff1a]  # ja, Gmail: 2024年1月1日(月) 10:00 X <x@y>:
    )$""",
    re.IGNORECASE | re.VERBOSE,
)

# Outlook's header block, label by label (en, de, fr, es, it, nl, sv, no/da, pt, ja).
_FROM_LABELS = "from|von|de|expéditeur|da|van|från|fra|差出人|送信者"
_SENT_LABELS = (
    "sent|date|gesendet|datum|envoyé|date d'envoi|enviado|fecha|inviato|data|verzonden"
    "|skickat|sendt|送信日時|日付|enviada"
)
_TO_LABELS = (
    "to|subject|cc|an|betreff|à|objet|para|asunto|a|oggetto|aan|onderwerp|till|ämne|til"
    "|emne|assunto|宛先|件名"
)
_LABEL_LINE = r"^\*?\s*(?:{labels})\s?\*?\s?[:\uff1a]"
_FROM_LINE = re.compile(_LABEL_LINE.format(labels=_FROM_LABELS), re.IGNORECASE)
_SENT_LINE = re.compile(_LABEL_LINE.format(labels=_SENT_LABELS), re.IGNORECASE)
_TO_LINE = re.compile(_LABEL_LINE.format(labels=_TO_LABELS), re.IGNORECASE)
_OUTLOOK_LOOKAHEAD = 6  # lines after From: in which Sent/Date and To/Subject must appear

_SEPARATOR = re.compile(
    r"""^[-_=*\s]{2,}\s*(?:
        original\smessage|forwarded\smessage|ursprüngliche\snachricht|original-nachricht
      | weitergeleitete\snachricht|message\sd'origine|message\soriginal|mensaje\soriginal
      | messaggio\soriginale|oorspronkelijk\sbericht|origineel\sbericht|ursprungligt\smeddelande
      | originalmeddelande|opprinnelig\smelding|original\smeddelelse|mensagem\soriginal
      | 元のメッセージ|転送されたメッセージ
    )\s*[-_=*\s]{2,}$""",
    re.IGNORECASE | re.VERBOSE,
)
_DATE_OR_ADDRESS = re.compile(r"[0-9@\uff10-\uff19]")
_SEPARATOR_OPENINGS = frozenset("-_=*")
_RULE = re.compile(r"^[-_]{10,}$")  # Outlook's line of underscores above its header block

# Mobile and webmail clients' one-line signatures, in the languages above.
_MOBILE_SIGNATURES = r"""
        sent\s(?:from|via|with)\s.{1,60}|get\soutlook\sfor\s.{1,40}
      | von\smeinem\s.{1,60}|gesendet\s(?:von|mit)\s.{1,60}|outlook\sfür\s.{1,30}\sbeziehen
      | envoyé\s(?:de|depuis|à\spartir\sde)\s.{1,60}|obtenir\soutlook\spour\s.{1,40}
      | enviado\s(?:desde|con)\s.{1,60}|obtener\soutlook\spara\s.{1,40}
      | inviato\sda\s.{1,60}
      | verzonden\s(?:vanaf|met|via)\s.{1,60}|verstuurd\s(?:vanaf|met|via)\s.{1,60}
      | outlook\svoor\s.{1,30}\sdownloaden
      | skickat\sfrån\s.{1,60}|hämta\soutlook\sför\s.{1,40}
      | sendt\sfra\s.{1,60}|hent\soutlook\sfor\s.{1,40}|få\soutlook\still\s.{1,40}
      | enviado\sdo\s.{1,60}|enviado\sde\s.{1,60}|obter\so\soutlook\spara\s.{1,40}
      | .{1,30}から送信|.{1,30}\s?用\s?outlook\s?を入手
"""
_MOBILE_SIGNATURE = re.compile(r"^(?:" + _MOBILE_SIGNATURES + r")$", re.IGNORECASE | re.VERBOSE)
# Where a quote can begin: a line with a colon (a quote header, an Outlook block), or
# one that starts (after blanks) like a quoted line, a separator or a rule.
_ANYWHERE = (":", "\uff1a")
_LINE_START = (">", "-", "_", "=", "*", "—")
_MOBILE_SIGNATURE_LINES = 4  # a client's line is among the reply's last non-blank lines
# How those lines begin (lower-cased) and how the Japanese ones end, to skip the regular
# expression on every other line.
_MOBILE_OPENINGS = (
    "sent ", "get outlook", "von meinem", "gesendet ", "outlook ", "envoyé ", "obtenir ",
    "enviado ", "obtener ", "inviato ", "verzonden ", "verstuurd ", "skickat ", "hämta ",
    "sendt ", "hent ", "få ", "obter ",
)  # fmt: skip
_MOBILE_ENDINGS = ("から送信", "を入手")
_COLONS = (":", "\uff1a")  # and the full-width colon of CJK text
_SIGNATURE_DELIMITERS = frozenset({"--", "__", "—"})  # compared right-trimmed
# The word a wrapped quote header's first line starts with ("On", "Am", "Le" …).
_QUOTE_OPENING = re.compile(r"^\s*(?:on|am|le|el|il|op|den|em|\d{4}[年/.-])\s?", re.IGNORECASE)


def _normal(line: str) -> str:
    """A line as compared: blanks (NBSP included) collapsed, the ends trimmed."""
    return " ".join(line.split())


def _is_quoted(line: str) -> bool:
    return line.lstrip()[:1] == ">"


def _is_blank(line: str) -> bool:
    return not line or line.isspace()


def _is_quote_header(line: str) -> bool:
    """A quote header names a date or an address: "as I wrote:" in a sentence does not."""
    return (
        len(line) <= 400
        and _DATE_OR_ADDRESS.search(line) is not None
        and bool(_QUOTE_HEADER.match(_normal(line)))
    )


def _next_content(lines: list[str], index: int) -> int:
    """The index of the first non-blank line at or after ``index`` (len(lines) if none)."""
    while index < len(lines) and _is_blank(lines[index]):
        index += 1
    return index


def _outlook_block_start(lines: list[str], index: int, start: int) -> int | None:
    """Where an Outlook header block whose From line is ``index`` begins (the rule of
    underscores above it, if any), or None when there is no such block."""
    if not _FROM_LINE.match(lines[index]):
        return None
    following = lines[index + 1 : index + 1 + _OUTLOOK_LOOKAHEAD]
    if not any(_SENT_LINE.match(line) for line in following) or not any(
        _TO_LINE.match(line) for line in following
    ):
        return None
    above = index - 1
    while above >= start and _is_blank(lines[above]):
        above -= 1
    return above if above >= start and _RULE.match(lines[above].strip()) else index


@dataclass
class _Marks:
    """The lines worth a look: where a quote may begin, and the dashed lines."""

    quote: list[int]
    dashed: list[int]


def _mark_positions(text: str) -> list[int]:
    """Where the characters a quote or a delimiter line can start with are, in order.

    Found with str.find on single characters (C speed, like memchr) rather than by
    looking at every line in Python: a text without colons, quotes or dashes costs a
    few scans and is never split into lines."""
    positions = []
    for char in _ANYWHERE + _LINE_START:
        at = text.find(char)
        while at >= 0:
            positions.append(at)
            at = text.find(char, at + 1)
    return sorted(positions)


def _marks(lines: list[str], text: str, positions: list[int]) -> _Marks:
    """The lines worth a look, from the positions in ``text`` ("\\n".join(lines) and
    perhaps a cut last line)."""
    marks = _Marks(quote=[], dashed=[])
    line, last = 0, 0
    for position in positions:
        line += text.count("\n", last, position)
        last = position
        if line >= len(lines):
            break
        char = text[position]
        first = lines[line].lstrip()[:1]
        if char in _ANYWHERE or first == char:
            if not marks.quote or marks.quote[-1] != line:
                marks.quote.append(line)
            if first in "-_—" and (not marks.dashed or marks.dashed[-1] != line):
                marks.dashed.append(line)
    return marks


_NO_MARKS = _Marks(quote=[], dashed=[])


def _quote_start(lines: list[str], marks: _Marks, start: int = 0) -> int | None:
    """Where the quoted history begins (the line index, from ``start`` on), or None."""
    for index in marks.quote:
        if index < start:
            continue
        line = lines[index].rstrip()
        if _is_quoted(line):
            return index
        if line.endswith(_COLONS):
            above = lines[index - 1] if index > start else ""
            if _QUOTE_OPENING.match(above) and _is_quote_header(above + " " + line):
                return index - 1  # a header wrapped over two lines
            if _is_quote_header(line):
                return index
            following = _next_content(lines, index + 1)
            if following < len(lines) and _is_quoted(lines[following]):
                return index  # any header, in any language, that introduces a quote
        opening = line.lstrip()[:1]
        if opening in _SEPARATOR_OPENINGS and _SEPARATOR.match(line):
            return index
        if (
            ":" in line[:24] or _COLONS[1] in line[:24]  # a label comes first
        ) and (found := _outlook_block_start(lines, index, start)) is not None:
            return found
    return None


def _signature_start(lines: list[str], marks: _Marks, start: int, end: int) -> int | None:
    """Where the signature in ``lines[start:end]`` begins: the first delimiter line, else
    a mobile client's line among the last non-blank lines."""
    for index in marks.dashed:
        if start <= index < end and lines[index].strip() in _SIGNATURE_DELIMITERS:
            return index
    seen = 0
    for index in range(end - 1, start - 1, -1):
        line = lines[index]
        if _is_blank(line):
            continue
        if len(line) <= 100 and _is_mobile_signature(line.strip()):
            return index
        seen += 1
        if seen == _MOBILE_SIGNATURE_LINES:
            break
    return None


def _is_mobile_signature(line: str) -> bool:
    if not line.lower().startswith(_MOBILE_OPENINGS) and not line.endswith(_MOBILE_ENDINGS):
        return False
    return _MOBILE_SIGNATURE.match(_normal(line)) is not None


def _reply_span(lines: list[str], marks: _Marks) -> tuple[int, int]:
    """The lines of the sender's own text: [start, end)."""
    begin = _next_content(lines, 0)
    start = _quote_start(lines, marks, begin)
    if start is None:
        return begin, len(lines)
    if start > begin:
        return begin, start
    # Nothing above the quote: bottom-posting, the reply follows the quoted lines (and
    # the header that introduced them). A header that introduces no quoted lines (a
    # forward, an Outlook block) starts history only: no reply.
    index = start
    if not _is_quoted(lines[start]):
        index = _next_content(lines, start + 1)
        if index >= len(lines) or not _is_quoted(lines[index]):
            return start, start
    while index < len(lines) and (_is_blank(lines[index]) or _is_quoted(lines[index])):
        index += 1
    end = _quote_start(lines, marks, index)
    return index, len(lines) if end is None else end


def _joined(lines: list[str]) -> str:
    return "\n".join(lines).strip("\n")


def _split(lines: list[str], signature_at: int | None, end: int) -> tuple[int, int]:
    """Where the reply's own text ends and its signature begins."""
    if signature_at is None:
        return end, end
    # The "-- " delimiter line is no part of the signature; a mobile client's line is.
    return signature_at, signature_at + (lines[signature_at].strip() in _SIGNATURE_DELIMITERS)


def split_reply(text: str) -> tuple[str, str | None]:
    """(the reply's own text, its signature or None) of a plain-text body.

    The reply keeps its lines as written, without leading and trailing blank lines.
    """
    if not text:
        return "", None
    truncated = len(text) > MAX_SCAN_CHARS
    scanned = text[:MAX_SCAN_CHARS]
    if "\r" in scanned:
        scanned = scanned.replace("\r\n", "\n")
    positions = _mark_positions(scanned)
    if not positions:
        # No line can begin a quote or a delimiter: the text is the reply, but for a
        # mobile client's line among its last lines (read from the end, unsplit).
        if truncated:
            return text.strip("\n"), None
        tail = scanned.rsplit("\n", 3 * _MOBILE_SIGNATURE_LINES)
        head = int(len(tail) > 3 * _MOBILE_SIGNATURE_LINES)  # tail[0]: all lines before
        text_end, signature_start = _split(
            tail, _signature_start(tail, _NO_MARKS, head, len(tail)), len(tail)
        )
        return _joined(tail[:text_end]), _joined(tail[signature_start:]) or None
    lines = scanned.split("\n")
    if truncated:
        lines.pop()  # the last line may be cut in the middle
    marks = _marks(lines, scanned, positions)
    start, end = _reply_span(lines, marks)
    if truncated and end == len(lines):
        return text.strip("\n"), None  # no quote in the part read: all of it is the reply
    text_end, signature_start = _split(lines, _signature_start(lines, marks, start, end), end)
    return _joined(lines[start:text_end]), _joined(lines[signature_start:end]) or None
