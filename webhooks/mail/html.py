"""The visible text of an HTML body, in linear time (docs/payload.md)."""

from __future__ import annotations

import re
from html import unescape as html_unescape
from html.parser import HTMLParser

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


def html_to_text(html: str) -> str:
    """Visible text of an HTML body (see docs/payload.md); never raises."""
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
