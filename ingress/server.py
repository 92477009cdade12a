"""The SMTP listener's processes: serve() runs one event loop on listening
sockets and shuts it down gracefully; run() forks several such processes
sharing one port, and replaces any that dies. The protocol is ingress.smtp,
the hooks ingress.handler, the decisions ingress.decisions.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from django.conf import settings

from conduit import health, opsserver
from ingress import routes
from ingress.handler import off_loop
from ingress.protocol import check_aiosmtpd
from ingress.smtp import protocol_factory, tls_context
from ingress.store import GroupCommitter
from webhooks import accept as webhook_accept

logger = logging.getLogger("conduit.ingress")

# Threads for the decisions (database, DNS). SPF and DKIM lookups can each take
# seconds, so this is well above the default pool's cpu_count + 4; each thread
# keeps at most one database connection.
DECISION_THREADS = 32


async def serve(
    *,
    host: str = "",
    port: int = 0,
    sockets: list[socket.socket] | None = None,
    stop: asyncio.Event | None = None,
    on_ready: Any = None,
    grace: float = 30.0,
    announce: bool = True,
    route_cache: routes.RouteCache | None = None,
) -> None:
    """Listen until SIGTERM/SIGINT (or ``stop``), then stop accepting connections,
    let transactions in progress finish (for up to ``grace`` seconds) and close
    idle sessions with 421, so senders retry elsewhere or later.

    Binds ``host``:``port``, or serves ``sockets`` already bound and listening
    (the processes of run() share them). ``route_cache`` is for tests to look into."""
    check_aiosmtpd()
    loop = asyncio.get_running_loop()
    loop.set_default_executor(
        ThreadPoolExecutor(max_workers=DECISION_THREADS, thread_name_prefix="ingress")
    )
    cache = route_cache if route_cache is not None else routes.RouteCache()
    listener = None
    params = await off_loop(
        routes.listener_connection_params, timeout=settings.CONDUIT_INGRESS_STORE_TIMEOUT
    )
    if params is not None:
        listener = asyncio.create_task(routes.listen(cache, params), name="route-listener")
    committer = GroupCommitter(loop)
    factory = protocol_factory(route_cache=cache, committer=committer)
    if sockets is None:
        sockets = listening_sockets(host, port)
    # asyncio listens again on a given socket, with its own backlog of 100.
    servers = [
        await loop.create_server(factory, sock=sock, backlog=LISTEN_BACKLOG) for sock in sockets
    ]
    if stop is None:
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
    bound = [sock.getsockname() for server in servers for sock in server.sockets]
    if announce:
        _announce(bound)
    if on_ready is not None:
        on_ready(bound[0][1])
    await stop.wait()
    logger.info("Stopping: no new connections; finishing %d session(s)", len(factory.live))
    for server in servers:
        server.close()
    deadline = loop.time() + grace
    while factory.live and loop.time() < deadline:
        for protocol in list(factory.live):
            protocol.close_if_idle()
        await asyncio.sleep(0.05)
    for protocol in list(factory.live):
        if protocol.transport is not None:
            protocol.transport.close()
    for server in servers:
        await server.wait_closed()
    await loop.run_in_executor(None, committer.close)
    if listener is not None:
        listener.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listener
    logger.info("SMTP ingress stopped")


def _announce(bound: list[Any]) -> None:
    addresses = ", ".join(f"{address[0]}:{address[1]}" for address in bound)
    logger.info("SMTP ingress listening on %s", addresses)
    if settings.CONDUIT_LOG_FORMAT != "json":  # there every line is a JSON object
        print(f"SMTP ingress listening on {addresses}", flush=True)


def process_count(requested: int | None = None) -> int:
    """How many ingress processes to run: as asked, else the setting, 0 = one per core."""
    count = settings.CONDUIT_INGRESS_PROCESSES if requested is None else requested
    if not webhook_accept.on_postgresql():  # SQLite: one writer at a time
        return 1
    return count or os.cpu_count() or 1


# Connections the kernel completes before a process accepts them. When this
# queue is full, Linux drops the handshake's last ACK: the sender believes it
# is connected and waits for a greeting that never comes. Bursts of MX
# traffic need room here (capped by net.core.somaxconn).
LISTEN_BACKLOG = 1024


def listening_sockets(host: str, port: int) -> list[socket.socket]:
    """Bound, listening sockets for ``host`` (every address it resolves to) and ``port``."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    seen: set[tuple[int, Any]] = set()
    for family, kind, proto, _, address in infos:
        if (family, address) in seen:
            continue
        seen.add((family, address))
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if sockets and port == 0:  # the port the first address got, for all
                address = (address[0], sockets[0].getsockname()[1], *address[2:])
            sock.bind(address)
            sock.listen(LISTEN_BACKLOG)
            sock.setblocking(False)
        except OSError:
            sock.close()
            for other in sockets:
                other.close()
            raise
        sockets.append(sock)
    return sockets


def run(*, host: str, port: int, processes: int, grace: float = 30.0) -> int:
    """Run the ingress in ``processes`` processes sharing one listening socket.

    The parent binds, forks the processes and waits; SIGTERM or SIGINT is passed
    on to each, which finishes its sessions (serve()) and exits. A process that
    dies otherwise is replaced. Each process has its own event loop, database
    connections and route cache, so the ingress uses every core; one process is
    one event loop and, through the GIL, at most one core.
    """
    check_aiosmtpd()  # here, not in a loop of processes that each fail
    tls_context()  # a bad certificate stops the command here, not each process in a loop
    sockets = listening_sockets(host, port)
    ops = opsserver.start(
        "ingress",
        port=settings.CONDUIT_INGRESS_METRICS_PORT,
        ready=functools.partial(readiness_checks, sockets[0].getsockname()),
    )
    try:
        if processes <= 1:
            asyncio.run(serve(sockets=sockets, grace=grace))
            return 0
        return _run_processes(sockets, processes=processes, grace=grace, ops=ops)
    finally:
        if ops is not None:
            ops.stop()


def readiness_checks(address: tuple) -> list[health.Check]:
    """The ingress is ready while its port greets with 220 and the database answers."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(address[0], address[0])  # noqa: S104
    return [health.check_smtp(host, address[1]), health.check_database()]


def _run_processes(sockets: list[socket.socket], *, processes: int, grace: float, ops: Any) -> int:
    _announce([sock.getsockname() for sock in sockets])
    stopping = False
    children: set[int] = set()

    def spawn() -> None:
        pid = os.fork()
        if pid == 0:  # the child: its own loop, threads and connections
            code = 1
            try:
                if ops is not None:
                    ops.close_in_child()  # the parent serves it
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                asyncio.run(serve(sockets=sockets, grace=grace, announce=False))
                code = 0
            except BaseException:
                logger.exception("Ingress process failed")
            finally:
                logging.shutdown()
                os._exit(code)
        children.add(pid)

    def stop(signum: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        # The port closes once every process has let go of it.
        for sock in sockets:
            sock.close()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for _ in range(processes):
        spawn()
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        children.discard(pid)
        if not stopping:
            logger.error("Ingress process %d exited (status %d); starting another", pid, status)
            time.sleep(1)
            spawn()
    for sock in sockets:
        sock.close()
    logger.info("SMTP ingress stopped (%d processes)", processes)
    return 0
