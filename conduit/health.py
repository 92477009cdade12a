"""The health checks behind every process kind's /readyz and the health commands.

Each check answers within its timeout, whatever the dependency does (a database
that accepts connections and then says nothing included): it runs in a thread
of its own and is given up on after ``timeout`` seconds. Liveness (/healthz)
checks nothing: a process that answers HTTP is alive.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections

# Seconds each check may take; a probe's own timeout should be above their sum.
TIMEOUT = 3.0


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str = "ok"


def _bounded(name: str, probe: Callable[[], str], timeout: float) -> Check:
    """``probe`` (its detail, or an exception) run in a thread, given up on after ``timeout``."""
    outcome: list[Check] = []

    def run() -> None:
        try:
            outcome.append(Check(name, True, probe()))
        except Exception as exc:
            outcome.append(Check(name, False, f"{type(exc).__name__}: {exc}".strip()))

    thread = threading.Thread(target=run, name=f"health-{name}", daemon=True)
    thread.start()
    thread.join(timeout)
    if not outcome:
        return Check(name, False, f"no answer in {timeout:g} s")
    return outcome[0]


def check_database(*, timeout: float = TIMEOUT) -> Check:
    """A new connection to the default database answers ``SELECT 1``.

    A connection of its own, closed at once: the check shares nothing with the
    process's connections, so a parent that forks (the ingress) never hands one on.
    """

    def probe() -> str:
        # The answer is given up on after ``timeout`` (_bounded); a connect
        # that hangs on (a database that drops packets) ends its daemon thread
        # when the system's own connect timeout runs out.
        wrapper = connections.create_connection(DEFAULT_DB_ALIAS)
        try:
            with wrapper.cursor() as cursor:
                cursor.execute("SELECT 1")
                cursor.fetchone()
        finally:
            wrapper.close()
        return "ok"

    return _bounded("database", probe, timeout)


def check_broker(app: Any, *, timeout: float = TIMEOUT) -> Check:
    """The Celery broker accepts a connection (Redis: and answers PING)."""

    def probe() -> str:
        with app.connection_for_write() as connection:
            # One try, no waiting between: the probe's caller retries.
            connection.ensure_connection(max_retries=1, interval_start=0, interval_step=0)
        return "ok"

    return _bounded("broker", probe, timeout)


def check_smtp(host: str, port: int, *, timeout: float = TIMEOUT) -> Check:
    """An SMTP server at ``host``:``port`` greets with 220."""

    def probe() -> str:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            greeting = b""
            while b"\r\n" not in greeting and len(greeting) < 4096:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                greeting += chunk
            if not greeting.startswith(b"220"):
                raise ConnectionError(f"greeted with {greeting[:60]!r}, not 220")
            sock.sendall(b"QUIT\r\n")
        return "ok"

    return _bounded("smtp", probe, timeout)


def check_heartbeat(path: Path, *, max_age: float, now: float | None = None) -> Check:
    """The worker's heartbeat file was written in the last ``max_age`` seconds."""
    try:
        written = float(path.read_text().strip())
    except FileNotFoundError:
        return Check("heartbeat", False, f"no heartbeat at {path}: is the worker running?")
    except (OSError, ValueError) as exc:
        return Check("heartbeat", False, f"unreadable heartbeat at {path}: {exc}")
    age = (time.time() if now is None else now) - written
    if age > max_age:
        return Check(
            "heartbeat", False, f"last heartbeat {age:.0f} s ago (at most {max_age:g} s allowed)"
        )
    return Check("heartbeat", True, f"{age:.1f} s ago")


def write_heartbeat(path: Path) -> None:
    """Now, written whole (a reader never sees half a timestamp)."""
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(f"{time.time():.3f}\n")
    partial.replace(path)


def readiness(checks: Sequence[Check]) -> tuple[int, dict]:
    """The status and body of a /readyz answer: 200, or 503 naming what failed."""
    body: dict[str, Any] = {"checks": {check.name: check.detail for check in checks}}
    failed = [check for check in checks if not check.ok]
    if not failed:
        return 200, {"status": "ready", **body}
    reasons = "; ".join(f"{check.name}: {check.detail}" for check in failed)
    return 503, {
        "code": "not_ready",
        "error": f"Not ready ({reasons}). Look at the failing dependencies; the process "
        "keeps retrying them.",
        "failed": [check.name for check in failed],
        **body,
    }


LIVE = {"status": "alive"}
