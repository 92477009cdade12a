"""DATA read in chunks (ingress.smtpdata) gives what aiosmtpd's line loop gives."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingress.smtpdata import Outcome, read_data
from tests.ingress.conftest import hook
from webhooks.models import InboundMessage

LINE_LIMIT = 1001  # aiosmtpd's line_length_limit, and its stream reader's limit


async def _reference(reader: asyncio.StreamReader, size_limit: int | None) -> tuple[Outcome, bytes]:
    """aiosmtpd 1.4's smtp_DATA loop, one readuntil() per line, for comparison."""
    data: list[bytearray] = []
    num_bytes = 0
    fragments: list[bytes] = []
    state = Outcome.OK
    while True:
        try:
            line = await reader.readuntil(b"\r\n")
        except asyncio.LimitOverrunError as error:
            if state is Outcome.OK:
                state = Outcome.TOO_LONG
            data *= 0
            line = await reader.read(error.consumed)
        if not fragments and line == b".\r\n":
            break
        fragments.append(line)
        # The one difference: aiosmtpd counts the size of a line of 1,002 or
        # 1,003 octets before it sees the line is too long (longer ones it
        # catches first). Here every line is checked before it is counted.
        whole = b"".join(fragments)
        if state is Outcome.OK and line.endswith(b"\r\n") and len(whole) > LINE_LIMIT:
            state = Outcome.TOO_LONG
            data *= 0
        num_bytes += len(line)
        if state is Outcome.OK and size_limit and num_bytes > size_limit:
            state = Outcome.TOO_MUCH
            data *= 0
        if line.endswith(b"\r\n"):
            if state is Outcome.OK:
                data.append(bytearray(whole))
            fragments *= 0
    if state is not Outcome.OK:
        return state, b""
    for text in data:
        if text.startswith(b"."):
            del text[0]
    return state, b"".join(data)


async def _read_both(wire: bytes, cuts: list[int], size_limit: int | None):
    """Both readers over the same bytes, arriving in pieces split at ``cuts``;
    each result with the next line left in the reader."""
    results = []
    for read in (_reference, None):
        reader = asyncio.StreamReader(limit=LINE_LIMIT)
        pieces = [wire[a:b] for a, b in zip([0, *cuts], [*cuts, len(wire)], strict=True)]

        async def feed(reader: asyncio.StreamReader = reader, pieces: list[bytes] = pieces) -> None:
            for piece in pieces:
                if piece:
                    reader.feed_data(piece)
                await asyncio.sleep(0)

        feeder = asyncio.create_task(feed())
        if read is None:
            outcome, content = await read_data(reader, size_limit=size_limit, line_limit=LINE_LIMIT)
        else:
            outcome, content = await read(reader, size_limit)
        await feeder
        after = await reader.readuntil(b"\r\n")
        results.append((outcome, content, after))
    return results


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


@settings(max_examples=300, deadline=None)
@given(
    lines=_lines,
    cuts=st.lists(st.integers(min_value=0, max_value=40_000), max_size=8),
    size_limit=st.sampled_from([None, 0, 10, 200, 2000, 30_000]),
)
def test_it_reads_what_aiosmtpds_line_loop_reads(lines, cuts, size_limit):
    # Lines ended by CRLF, then the final "." and the next command.
    wire = _stuffed(b"".join(line + b"\r\n" for line in lines)) + b".\r\nQUIT\r\n"
    cuts = sorted(c for c in cuts if c <= len(wire))

    reference, chunked = asyncio.run(_read_both(wire, cuts, size_limit))

    assert chunked == reference
    assert chunked[2] == b"QUIT\r\n"


def _run(wire: bytes, cuts: list[int], size_limit: int | None = None):
    return asyncio.run(_read_both(wire, cuts, size_limit))[1]


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
        b"Subject: long\r\n\r\n" + b"x" * 5000 + b"\r\n.\r\n",
        b"NOOP\r\nQUIT\r\n",
    )

    lines = [line for line in replies.split(b"\r\n") if line[3:4] == b" "]
    assert [line[:3] for line in lines] == [b"250", b"250", b"250", b"354", b"500", b"250", b"221"]
    assert lines[4] == b"500 Line too long (see RFC5321 4.5.3.1.6)"
    assert not InboundMessage.objects.exists()


def test_a_session_idle_past_the_timeout_is_closed_and_commands_extend_it(
    start_ingress, monkeypatch
):
    monkeypatch.setattr("ingress.server.SESSION_TIMEOUT", 1.0)
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
