"""The reference for bench/ingress.py: a bare aiosmtpd server that accepts and discards.

Same library, same event loop, same one-process shape as Conduit's ingress, but
no recipient lookup, no database and no queue: the ceiling the ingress is
compared with. Prints ``SMTP ingress listening on HOST:PORT`` like the ingress.
"""

from __future__ import annotations

import asyncio
import signal
from typing import Any

from aiosmtpd.smtp import SMTP


class Discard:
    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, _: Any):
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        return "250 2.0.0 Ok: discarded"


async def main() -> None:
    loop = asyncio.get_running_loop()
    handler = Discard()
    server = await loop.create_server(
        lambda: SMTP(
            handler,
            data_size_limit=25 * 1024 * 1024,
            enable_SMTPUTF8=True,
            hostname="bare.bench.example",
            timeout=300,
        ),
        host="127.0.0.1",
        port=0,
    )
    host, port = server.sockets[0].getsockname()[:2]
    print(f"SMTP ingress listening on {host}:{port}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()


if __name__ == "__main__":
    asyncio.run(main())
