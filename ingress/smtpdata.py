"""Reading a message's DATA in chunks, not line by line.

aiosmtpd reads DATA one line at a time: an awaited readuntil() per line, a
list of line buffers, then a join. A 10 KB message is ~130 lines, and that
loop was the largest single cost of a session. Here the body is read as the
bytes arrive and scanned with bytes methods; what the sender gets is the
same as from aiosmtpd with the same line limit (tests run both side by side):

- the body ends at a line holding only "." (RFC 5321 4.1.1.4), and a leading
  dot is removed from every other line (4.5.2); lines end at CRLF only, so a
  bare LF or CR is content and "\n.\n" ends nothing (no SMTP smuggling);
- a line longer than ``line_limit`` octets, CRLF included, makes it "too long"
  (4.5.3.1.6), and a body over ``size_limit`` octets (dots and CRLFs counted,
  the final "." line not) "too much";
- either way the rest is read and dropped until the final ".", so the session
  stays in step, and nothing of it is kept meanwhile.

The size is counted by whole lines, and a line is checked for its length
before it is counted: a body is "too much" only when the lines before its
first long line are already over the size. (aiosmtpd counts a line of 1,002
or 1,003 octets before it finds it too long, so for such a line that crosses
the size limit it says "too much" where this says "too long".)

Bytes that follow the final "." in the same read (a pipelined QUIT or the
next MAIL) are handed back to the reader before any other byte can arrive.
"""

from __future__ import annotations

import asyncio
import enum

END = b"\r\n.\r\n"
CRLF = b"\r\n"
# More than a stream reader ever holds: one read takes all that arrived.
_ALL = 1 << 40


class Outcome(enum.Enum):
    OK = "ok"
    TOO_LONG = "too long"
    TOO_MUCH = "too much"


async def read_data(
    reader: asyncio.StreamReader, *, size_limit: int | None, line_limit: int
) -> tuple[Outcome, bytes]:
    """The body after "354", unstuffed, and whether it was within the limits.

    The bytes are empty unless the outcome is OK. Raises ConnectionError if the
    stream ends first.
    """
    # A CRLF stands in front of the body, so that the end is always CRLF "."
    # CRLF, even for an empty body; it is dropped at the end.
    buf = bytearray(CRLF)
    outcome = Outcome.OK
    line_start = 2  # buf[2:line_start] is whole lines, each within line_limit
    search_from = 0
    while True:
        chunk = await reader.read(_ALL)
        if not chunk:
            raise ConnectionError("the connection closed during DATA")
        buf += chunk
        end = buf.find(END, search_from)
        if outcome is Outcome.OK:
            stop = len(buf) if end < 0 else end + 2
            long_line = _first_long_line(buf, line_start, stop, line_limit)
            last = buf.rfind(CRLF, line_start, stop)
            if last >= 0:
                line_start = last + 2
            # As aiosmtpd counts: the size after each whole line, so a body
            # already too big before its first long line is "too much".
            if long_line >= 0:
                too_much = size_limit and long_line - 2 > size_limit
                outcome = Outcome.TOO_MUCH if too_much else Outcome.TOO_LONG
            elif size_limit and line_start - 2 > size_limit:
                outcome = Outcome.TOO_MUCH
        if end >= 0:
            break
        if outcome is not Outcome.OK:
            # Only a final "." still matters: keep what could be its start.
            del buf[:-4]
            line_start = 0
        search_from = max(len(buf) - 4, 0)
    leftover = buf[end + 5 :]
    if leftover and not reader.at_eof():
        # The read took all the reader held, and nothing arrives before the
        # next await: these bytes go back in front, in order. (After the end
        # of the stream the session is over, and they have nowhere to go.)
        reader.feed_data(bytes(leftover))
    if outcome is not Outcome.OK:
        return outcome, b""
    del buf[end + 2 :]
    del buf[:2]
    content = bytes(buf)
    # RFC 5321 4.5.2: a line's leading dot is transparency, not content.
    if content.startswith(b"."):
        content = content[1:]
    return outcome, content.replace(b"\r\n.", CRLF)


def _first_long_line(buf: bytearray, start: int, stop: int, line_limit: int) -> int:
    """Where the first line over line_limit octets (CRLF included) begins in
    buf[start:stop], or -1.

    buf[start] begins a line; the last one may not be complete yet, and is
    too long already once it holds more than line_limit octets. Steps from
    the last CRLF within line_limit octets to the next, so a 10 KB body takes
    about ten searches, not one per line.
    """
    pos = start
    while stop - pos > line_limit:
        crlf = buf.rfind(CRLF, pos, pos + line_limit)
        if crlf < 0:  # the line at pos has no CRLF within the limit
            return pos
        pos = crlf + 2
    return -1
