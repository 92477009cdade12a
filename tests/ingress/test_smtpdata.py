"""The DATA reader (ingress.smtpdata, in ingress.protocol.LeanSMTP) against the
installed aiosmtpd's own DATA handling, run side by side on loopback: the same
bytes to both, the same replies and the same stored messages. Then what a
sender sees from the real ingress: bare LF, long lines, smuggling attempts."""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP
from hypothesis import given, settings
from hypothesis import strategies as st

from ingress.protocol import DATA_LINE_LIMIT, LeanSMTP
from ingress.smtpdata import Outcome, read_data
from tests.ingress.conftest import SideBySide, hook
from webhooks.models import InboundMessage

LINE_LIMIT = 1001  # aiosmtpd's line_length_limit, and its stream reader's limit


def _talk(port: int, pieces: list[bytes]) -> list[bytes]:
    """Send ``pieces`` (each in its own write) and return every reply line
    until the server closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for piece in pieces:
            if piece:
                sock.sendall(piece)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return [line for line in b"".join(chunks).split(b"\r\n") if line[3:4] == b" "]


ENVELOPE = b"EHLO sender.example\r\nMAIL FROM:<s@sender.example>\r\nRCPT TO:<t@mx.test>\r\nDATA\r\n"


def _both(
    side_by_side: SideBySide,
    pieces: list[bytes],
    *,
    ours: type[SMTP] = LeanSMTP,
    theirs: type[SMTP] = SMTP,
    **options: Any,
):
    """(replies, stored messages) from aiosmtpd's protocol, then from ours."""
    results = []
    for protocol in (theirs, ours):
        port, handler = side_by_side.port(protocol, **options)
        before = len(handler.messages)
        replies = _talk(port, [ENVELOPE, *pieces])
        results.append((replies, handler.messages[before:]))
    return results


class ShortLines(LeanSMTP):
    """LeanSMTP held to aiosmtpd's line limit, to compare the "too long" path."""

    data_line_limit = LINE_LIMIT


class LongLines(SMTP):
    """aiosmtpd allowed LeanSMTP's line limit: what LeanSMTP must give for long lines."""

    line_length_limit = DATA_LINE_LIMIT


def _codes(replies: list[bytes]) -> list[bytes]:
    return [reply[:3] for reply in replies]


def _stuffed(body: bytes) -> bytes:
    """``body`` with no line that is a lone "." before its end."""
    while b"\r\n.\r\n" in b"\r\n" + body:
        if body.startswith(b".\r\n"):
            body = b"." + body
        body = body.replace(b"\r\n.\r\n", b"\r\n..\r\n")
    return body


_lines = st.lists(
    st.one_of(
        st.sampled_from([b"", b".", b"..", b".x", b"x.", b"\r", b"\n", b"a\rb", b"a\nb", b". "]),
        st.binary(max_size=40),
        st.integers(min_value=995, max_value=1004).map(lambda n: b"y" * n),
    ),
    max_size=30,
)


@settings(max_examples=150, deadline=None)
@given(
    lines=_lines,
    cuts=st.lists(st.integers(min_value=0, max_value=40_000), max_size=8),
    size_limit=st.sampled_from([None, 10, 200, 2000, 30_000]),
)
def test_it_reads_what_the_installed_aiosmtpd_reads(side_by_side, lines, cuts, size_limit):
    # Lines ended by CRLF (bare CR and LF inside them), then the final "." and
    # QUIT, sent in pieces cut anywhere.
    wire = _stuffed(b"".join(line + b"\r\n" for line in lines)) + b".\r\nQUIT\r\n"
    cuts = sorted(c for c in cuts if c <= len(wire))
    pieces = [wire[a:b] for a, b in zip([0, *cuts], [*cuts, len(wire)], strict=True)]

    (their_replies, theirs), (our_replies, ours) = _both(
        side_by_side, pieces, ours=ShortLines, data_size_limit=size_limit
    )

    assert ours == theirs
    if _codes(our_replies) != _codes(their_replies):
        # The one difference, kept on purpose: aiosmtpd counts a line of 1,002
        # or 1,003 octets into the size before it finds the line too long; the
        # chunked reader checks every line before counting it.
        assert _codes(our_replies)[5] == b"500" and _codes(their_replies)[5] == b"552"
        assert any(len(line) + 2 in (LINE_LIMIT + 1, LINE_LIMIT + 2) for line in lines)
    assert _codes(our_replies)[-1] == b"221"


def test_long_lines_and_bare_lf_read_as_aiosmtpd_reads_them_with_a_longer_line_limit(
    side_by_side,
):
    # One 100 KB line of one-line HTML, an LF-only part and a lone CR: all of
    # it content, and only CRLF "." CRLF ends the body.
    body = (
        b"Subject: long\r\n\r\n<p>"
        + b"x" * 100_000
        + b"</p>\r\n"
        + b"unix\nline\nendings\n.\nstill the body\rCR\r\n"
    )
    pieces = [body[:50_000], body[50_000:], b".\r\nQUIT\r\n"]

    (their_replies, theirs), (our_replies, ours) = _both(
        side_by_side, pieces, theirs=LongLines, data_size_limit=None
    )

    assert ours == theirs == [body]
    assert (
        _codes(our_replies)
        == _codes(their_replies)
        == [b"220", *[b"250"] * 3, b"354", b"250", b"221"]
    )


def _run(wire: bytes, cuts: list[int], size_limit: int | None = None):
    """The chunked reader over ``wire`` arriving in pieces split at ``cuts``:
    (outcome, content, the next line left in the reader)."""

    async def main() -> tuple[Outcome, bytes, bytes]:
        reader = asyncio.StreamReader(limit=LINE_LIMIT)
        pieces = [wire[a:b] for a, b in zip([0, *cuts], [*cuts, len(wire)], strict=True)]

        async def feed() -> None:
            for piece in pieces:
                if piece:
                    reader.feed_data(piece)
                await asyncio.sleep(0)

        feeder = asyncio.create_task(feed())
        outcome, content = await read_data(reader, size_limit=size_limit, line_limit=LINE_LIMIT)
        await feeder
        return outcome, content, await reader.readuntil(b"\r\n")

    return asyncio.run(main())


def test_an_empty_body_ends_at_once():
    assert _run(b".\r\nQUIT\r\n", []) == (Outcome.OK, b"", b"QUIT\r\n")


def test_leading_dots_are_removed_once_per_line():
    wire = b"..one\r\n.two\r\nthree.\r\n...\r\n.\r\nNOOP\r\n"
    assert _run(wire, [3, 9]) == (Outcome.OK, b".one\r\ntwo\r\nthree.\r\n..\r\n", b"NOOP\r\n")


@pytest.mark.parametrize("cut", range(1, 5))
def test_the_end_is_found_when_it_arrives_split(cut):
    wire = b"hello\r\n.\r\nQUIT\r\n"
    assert _run(wire, [len(b"hello") + cut]) == (Outcome.OK, b"hello\r\n", b"QUIT\r\n")


def test_a_line_of_1001_octets_fits_and_one_of_1002_does_not():
    fits = b"x" * 999 + b"\r\n"
    too_long = b"x" * 1000 + b"\r\n"
    assert _run(fits + b".\r\nQUIT\r\n", [500])[:2] == (Outcome.OK, fits)
    assert _run(b"a\r\n" + too_long + b"b\r\n.\r\nQUIT\r\n", [700]) == (
        Outcome.TOO_LONG,
        b"",
        b"QUIT\r\n",
    )


def test_a_body_over_the_size_limit_is_read_to_its_end_and_dropped():
    body = b"0123456789abcdef\r\n" * 1000  # 18,000 octets
    assert _run(body + b".\r\nQUIT\r\n", [1, 5000, 17_999], size_limit=18_000)[:2] == (
        Outcome.OK,
        body,
    )
    assert _run(body + b".\r\nQUIT\r\n", [1, 5000, 17_999], size_limit=17_999) == (
        Outcome.TOO_MUCH,
        b"",
        b"QUIT\r\n",
    )


def test_a_connection_that_closes_during_data_is_an_error():
    async def main() -> None:
        reader = asyncio.StreamReader(limit=LINE_LIMIT)
        reader.feed_data(b"half a message\r\n")
        reader.feed_eof()
        await read_data(reader, size_limit=None, line_limit=LINE_LIMIT)

    with pytest.raises(ConnectionError):
        asyncio.run(main())


# Through the real ingress: what a sender sees.


def _session(port: int, *commands: bytes) -> bytes:
    """Send raw bytes in one write each, and read every reply until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.recv(1024)  # the greeting
        for command in commands:
            sock.sendall(command)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_a_pipelined_quit_after_the_final_dot_is_answered(ingress, alice, alice_domain):
    hook(alice, alice_domain, "http://127.0.0.1:9/", "team@alice.example")
    message = b"Subject: dots\r\n\r\n..a dot\r\nend\r\n"

    replies = _session(
        ingress.port,
        b"EHLO sender.example\r\nMAIL FROM:<s@sender.example>\r\nRCPT TO:<team@alice.example>\r\n",
        b"DATA\r\n",
        message + b".\r\nQUIT\r\n",
    )

    codes = [line[:3] for line in replies.split(b"\r\n") if line[3:4] == b" "]
    assert codes == [b"250", b"250", b"250", b"354", b"250", b"221"]
    assert bytes(InboundMessage.objects.get().raw) == b"Subject: dots\r\n\r\n.a dot\r\nend\r\n"


def test_a_line_too_long_is_refused_and_the_session_goes_on(ingress, alice, alice_domain):
    hook(alice, alice_domain, "http://127.0.0.1:9/", "team@alice.example")

    replies = _session(
        ingress.port,
        b"EHLO sender.example\r\nMAIL FROM:<s@sender.example>\r\nRCPT TO:<team@alice.example>\r\n",
        b"DATA\r\n",
        b"Subject: long\r\n\r\n" + b"x" * DATA_LINE_LIMIT + b"\r\n.\r\n",
        b"NOOP\r\nQUIT\r\n",
    )

    lines = [line for line in replies.split(b"\r\n") if line[3:4] == b" "]
    assert [line[:3] for line in lines] == [b"250", b"250", b"250", b"354", b"500", b"250", b"221"]
    assert lines[4] == (
        b"500 5.6.0 Line too long: more than 1048576 octets without a CRLF "
        b"(a bare LF or CR does not end a line)"
    )
    assert not InboundMessage.objects.exists()


def test_a_session_idle_past_the_timeout_is_closed_and_commands_extend_it(
    start_ingress, monkeypatch
):
    monkeypatch.setattr("ingress.smtp.SESSION_TIMEOUT", 1.0)
    ingress = start_ingress()

    with socket.create_connection(("127.0.0.1", ingress.port), timeout=10) as sock:
        started = time.monotonic()
        assert sock.recv(1024).startswith(b"220")
        for _ in range(10):  # 2 s of commands, each well within the timeout
            time.sleep(0.2)
            sock.sendall(b"NOOP\r\n")
            assert sock.recv(1024).startswith(b"250")
        assert time.monotonic() - started >= 2.0
        idle = time.monotonic()
        assert sock.recv(1024) == b""  # closed by the server
        waited = time.monotonic() - idle
    assert 0.8 <= waited < 5


def test_bytes_after_the_end_of_a_closed_stream_are_dropped_quietly():
    async def main() -> tuple[Outcome, bytes]:
        reader = asyncio.StreamReader(limit=LINE_LIMIT)
        reader.feed_data(b"hi\r\n.\r\nQUIT\r\n")
        reader.feed_eof()
        return await read_data(reader, size_limit=None, line_limit=LINE_LIMIT)

    assert asyncio.run(main()) == (Outcome.OK, b"hi\r\n")


def test_a_100_kb_line_is_accepted_and_stored_whole(ingress, alice, alice_domain):
    hook(alice, alice_domain, "http://127.0.0.1:9/", "team@alice.example")
    message = b"Subject: one-line HTML\r\n\r\n<html>" + b"<td>cell</td>" * 8000 + b"</html>\r\n"
    assert len(message) > 100_000

    replies = _session(
        ingress.port,
        b"EHLO sender.example\r\nMAIL FROM:<s@sender.example>\r\nRCPT TO:<team@alice.example>\r\n",
        b"DATA\r\n",
        message + b".\r\nQUIT\r\n",
    )

    codes = [line[:3] for line in replies.split(b"\r\n") if line[3:4] == b" "]
    assert codes == [b"250", b"250", b"250", b"354", b"250", b"221"]
    assert bytes(InboundMessage.objects.get().raw) == message


def test_bare_lf_is_line_content_and_only_crlf_dot_crlf_ends_the_message(
    ingress, alice, alice_domain
):
    # An LF-only message of 50 KB, as some scripts send: accepted as it is.
    hook(alice, alice_domain, "http://127.0.0.1:9/", "team@alice.example")
    message = b"Subject: unix\n\n" + b"a line of text\n" * 3500 + b".\nstill here\r\n"

    replies = _session(
        ingress.port,
        b"EHLO sender.example\r\nMAIL FROM:<s@sender.example>\r\nRCPT TO:<team@alice.example>\r\n",
        b"DATA\r\n",
        message + b".\r\nQUIT\r\n",
    )

    codes = [line[:3] for line in replies.split(b"\r\n") if line[3:4] == b" "]
    assert codes == [b"250", b"250", b"250", b"354", b"250", b"221"]
    assert bytes(InboundMessage.objects.get().raw) == message


# SMTP smuggling: an end of data that one server sees and another does not lets
# a sender hide a second message inside the first. aiosmtpd's own test vectors,
# each followed by a second transaction; only CRLF "." CRLF ends DATA, so it
# stays content of the first message, here as in the installed aiosmtpd.
SMUGGLING_VECTORS = {
    "lf-dot-lf": b"\n.\n",
    "lf-dot-crlf": b"\n.\r\n",
    "cr-dot-crlf": b"\r.\r\n",
    "crlf-dot-cr": b"\r\n.\r",
}
SMUGGLED = (
    b"MAIL FROM:<admin@alice.example>\r\nRCPT TO:<team@alice.example>\r\nDATA\r\n"
    b"From: admin@alice.example\r\nSubject: smuggled\r\n\r\nsecond message\r\n"
)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("vector", SMUGGLING_VECTORS.values(), ids=SMUGGLING_VECTORS.keys())
def test_smtp_smuggling_never_makes_a_second_message(
    ingress, alice, alice_domain, side_by_side, vector
):
    hook(alice, alice_domain, "http://127.0.0.1:9/", "team@alice.example")
    first = b"From: s@sender.example\r\nSubject: first\r\n\r\nfirst message"
    pieces = [first + vector + SMUGGLED, b".\r\nQUIT\r\n"]

    replies = _session(
        ingress.port,
        b"EHLO sender.example\r\nMAIL FROM:<s@sender.example>\r\nRCPT TO:<team@alice.example>\r\n",
        b"DATA\r\n",
        *pieces,
    )
    (_, theirs), (_, ours) = _both(side_by_side, pieces)

    codes = [line[:3] for line in replies.split(b"\r\n") if line[3:4] == b" "]
    assert codes == [b"250", b"250", b"250", b"354", b"250", b"221"]
    [stored] = InboundMessage.objects.all()
    assert b"second message" in bytes(stored.raw)
    assert ours == theirs == [bytes(stored.raw)]
