"""The references for bench/ingress.py: a bare aiosmtpd server that accepts and discards.

Same library, same event loop, same one-process shape as Conduit's ingress, but
no recipient lookup, no database and no queue: the ceiling the ingress is
compared with. With ``--lean`` it serves Conduit's own protocol class
(ingress.protocol.LeanSMTP, aiosmtpd with its per-session costs cut) instead of
aiosmtpd's, so that what storing costs shows apart from what the protocol
costs. Prints ``SMTP ingress listening on HOST:PORT`` like the ingress.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP

# Run as a script, bench/ would come first on sys.path and bench/ingress.py
# would shadow ingress/ (for --lean).
sys.path[0] = str(Path(__file__).resolve().parent.parent)


class Discard:
    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, _: Any):
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        return "250 2.0.0 Ok: discarded"


async def main(protocol: type[SMTP], handler: Any) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: protocol(
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
    if "--lean" in sys.argv[1:]:
        from ingress.protocol import HooksOnlyDir, LeanSMTP

        class LeanDiscard(HooksOnlyDir, Discard):
            pass

        asyncio.run(main(LeanSMTP, LeanDiscard()))
    else:
        asyncio.run(main(SMTP, Discard()))
