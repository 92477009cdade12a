"""A fast HTTP sink for bench/e2e.py: answers every request 200 at once.

Plain asyncio, HTTP/1.1 with keep-alive, no framework. For each request it
prints one line ``<time.monotonic_ns()> <subject>`` (the Subject from the JSON
payload, which carries the benchmark's message tag) so the benchmark can match
arrivals to the 250s it saw; CLOCK_MONOTONIC is the same clock in every process.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"


def _subject(body: bytes) -> str:
    try:
        return str(json.loads(body).get("subject", "")).replace(" ", "_") or "-"
    except ValueError:
        return "-"


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    out = sys.stdout
    try:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            arrived = time.monotonic_ns()
            length = 0
            for line in head.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            body = await reader.readexactly(length) if length else b""
            writer.write(RESPONSE)
            out.write(f"{arrived} {_subject(body)}\n")
            out.flush()
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        return
    finally:
        writer.close()


async def main() -> None:
    loop = asyncio.get_running_loop()
    server = await asyncio.start_server(handle, "127.0.0.1", 0, limit=2**20, backlog=1024)
    port = server.sockets[0].getsockname()[1]
    print(f"sink listening on 127.0.0.1:{port}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()


if __name__ == "__main__":
    asyncio.run(main())
