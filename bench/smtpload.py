"""A lean asyncio SMTP client, so the load generator is never the bottleneck.

One message per connection, as MX traffic arrives: connect, EHLO, MAIL, RCPT,
DATA, QUIT. No smtplib (blocking, one thread per session) and no parsing beyond
the reply codes.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass

BODY_LINE = b"The quick brown fox jumps over the lazy dog; pack my box with five dozen jugs.\r\n"


class SmtpReplyError(Exception):
    def __init__(self, step: str, code: int, text: bytes) -> None:
        super().__init__(f"{step}: {code} {text.decode('utf-8', 'replace').strip()}")
        self.code = code


def make_message(*, tag: str, rcpt: str, size: int) -> bytes:
    """An RFC 5322 message of about ``size`` bytes whose Subject is ``tag``.

    Lines never start with a dot, so the bytes go on the wire as they are.
    """
    head = (
        f"From: Bench Sender <sender@bench.example>\r\n"
        f"To: <{rcpt}>\r\n"
        f"Subject: {tag}\r\n"
        f"Message-ID: <{tag}@bench.example>\r\n"
        f"Date: Thu, 02 Apr 2026 12:00:00 +0000\r\n"
        f"MIME-Version: 1.0\r\n"
        f"Content-Type: text/plain; charset=utf-8\r\n"
        f"\r\n"
    ).encode()
    lines = max(1, (size - len(head)) // len(BODY_LINE))
    return head + BODY_LINE * lines


# A server that never answers fails the session (as a sending MTA would give
# up and retry later) instead of holding the benchmark forever.
REPLY_TIMEOUT = 30.0


async def _reply(reader: asyncio.StreamReader, step: str, expect: int) -> bytes:
    while True:
        try:
            line = await asyncio.wait_for(reader.readline(), REPLY_TIMEOUT)
        except TimeoutError:
            raise TimeoutError(f"{step}: no reply within {REPLY_TIMEOUT:g} s") from None
        if not line:
            raise ConnectionError(f"{step}: connection closed by the server")
        if line[3:4] != b"-":
            code = int(line[:3])
            if code != expect:
                raise SmtpReplyError(step, code, line[4:])
            return line


@dataclass(frozen=True)
class Sent:
    started: float  # time.monotonic() at connect
    accepted: float  # time.monotonic() when the 250 after DATA arrived
    reply: bytes


async def send_one(
    host: str,
    port: int,
    *,
    mail_from: str,
    rcpt: str,
    message: bytes,
    helo: str = "client.bench.example",
) -> Sent:
    """One SMTP session delivering ``message``; raises SmtpReplyError unless it is accepted."""
    started = time.monotonic()
    reader, writer = await asyncio.open_connection(host, port, limit=2**16)
    try:
        await _reply(reader, "greeting", 220)
        writer.write(f"EHLO {helo}\r\n".encode())
        await _reply(reader, "EHLO", 250)
        writer.write(f"MAIL FROM:<{mail_from}> SIZE={len(message)}\r\n".encode())
        await _reply(reader, "MAIL", 250)
        writer.write(f"RCPT TO:<{rcpt}>\r\n".encode())
        await _reply(reader, "RCPT", 250)
        writer.write(b"DATA\r\n")
        await _reply(reader, "DATA", 354)
        writer.write(message)
        writer.write(b"\r\n.\r\n" if not message.endswith(b"\r\n") else b".\r\n")
        reply = await _reply(reader, "end of data", 250)
        accepted = time.monotonic()
        writer.write(b"QUIT\r\n")
        await writer.drain()
        with contextlib.suppress(TimeoutError, ConnectionError):
            await asyncio.wait_for(_reply(reader, "QUIT", 221), 5)
        return Sent(started=started, accepted=accepted, reply=reply)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
