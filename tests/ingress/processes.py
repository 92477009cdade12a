"""Real processes for the ingress tests: Conduit services, a private Redis, a TCP proxy.

Why real processes: the faults these tests provoke (a broker that goes away, a
worker killed with SIGKILL, a database that stops answering, SIGTERM to the
ingress) only mean something against the real programs, configured the way
production configures them: from environment variables.

Nothing here touches the shared Redis or PostgreSQL server beyond the test
database: each fault test gets its own redis-server on a free port, and the
database faults are made by cutting a proxy, never the server itself.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import quote

import redis
from django.conf import settings
from django.db import connection

from conduit.crypto import derived_key
from webhooks import storage

BASE_DIR = Path(__file__).resolve().parents[2]

# Passed through to the services; everything else comes from service_env().
_INHERITED = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "VIRTUAL_ENV", "SYSTEMROOT")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def service_database_url(*, host: str | None = None, port: int | None = None) -> str:
    """A DATABASE_URL for the test database (pytest-django's NAME during the test)."""
    db = connection.settings_dict
    assert storage.on_postgresql(), "these tests need PostgreSQL (set DATABASE_URL)"
    auth = quote(db["USER"] or "", safe="")
    if db.get("PASSWORD"):
        auth += ":" + quote(db["PASSWORD"], safe="")
    return (
        f"postgres://{auth}@{host or db['HOST'] or '127.0.0.1'}:{port or db['PORT'] or 5432}"
        f"/{db['NAME']}"
    )


def service_env(
    *, database_url: str | None, redis_url: str | None, var_dir: Path, **extra: str
) -> dict:
    """The environment a Conduit process gets: settings from variables only.

    ``database_url`` / ``redis_url`` None leaves the variable unset: the
    embedded default (SQLite and the file-system broker under ``var_dir``).
    """
    env = {name: os.environ[name] for name in _INHERITED if name in os.environ}
    env.update(
        SECRET_KEY="ingress-tests-not-a-secret",
        # Secrets at rest written by the test process must open in the services,
        # as production's processes share their keys.
        CONDUIT_ENCRYPTION_KEYS=_encryption_keys(),
        CONDUIT_VAR_DIR=str(var_dir),
        CONDUIT_ALLOW_PRIVATE_TARGETS="true",
        CONDUIT_ALLOW_HTTP_TARGETS="true",
        PYTHONUNBUFFERED="1",
        LOG_LEVEL="INFO",
    )
    if database_url is not None:
        env["DATABASE_URL"] = database_url
    if redis_url is not None:
        env["REDIS_URL"] = redis_url
    env.update(extra)
    return env


def _encryption_keys() -> str:
    return ",".join(settings.CONDUIT_ENCRYPTION_KEYS) or derived_key(settings.SECRET_KEY)


class Service:
    """One subprocess with its output in a file the test can wait on and show."""

    def __init__(self, name: str, argv: list[str], *, env: dict, log_dir: Path, ready: str) -> None:
        self.name = name
        self.ready = ready
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115  (closed in stop())
        self.process = subprocess.Popen(
            argv,
            cwd=BASE_DIR,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_output(self, pattern: str, *, timeout: float = 20.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while True:
            found = re.search(pattern, self.output())
            if found:
                return found
            if self.process.poll() is not None:
                raise AssertionError(
                    f"{self.name} exited ({self.process.returncode}) before printing "
                    f"{pattern!r}:\n{self.output()}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{self.name} did not print {pattern!r} in {timeout} s:\n{self.output()}"
                )
            time.sleep(0.05)

    def wait_ready(self, *, timeout: float = 20.0) -> re.Match[str]:
        """Wait for the line the program prints once it serves."""
        return self.wait_for_output(self.ready, timeout=timeout)

    def send_signal(self, sig: int) -> None:
        self.process.send_signal(sig)

    def wait(self, timeout: float) -> int:
        return self.process.wait(timeout)

    def kill(self) -> None:
        """SIGKILL: no cleanup, no acks, exactly what a crash looks like."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(5)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()


def ingress_argv(*, port: int = 0) -> list[str]:
    return [sys.executable, "manage.py", "ingress", "--host", "127.0.0.1", "--port", str(port)]


INGRESS_READY = r"SMTP ingress listening on 127\.0\.0\.1:(\d+)"


def worker_argv(name: str, *, pool: str | None = "solo") -> list[str]:
    """A worker; ``pool`` None keeps the configured pool (CONDUIT_WORKER_POOL)."""
    # Gossip, mingle and heartbeats only slow the start of a one-worker test.
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "conduit",
        "worker",
        *(["--pool", pool] if pool else []),
        "--loglevel",
        "INFO",
        "--hostname",
        f"{name}@%h",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ]


WORKER_READY = r"@\S+ ready\."


def beat_argv(schedule: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "conduit",
        "beat",
        "--loglevel",
        "INFO",
        "--schedule",
        str(schedule),
    ]


BEAT_READY = r"beat: Starting"


class PrivateRedis:
    """A redis-server of this test's own, on a free port, that the test may stop and restart."""

    def __init__(self) -> None:
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> PrivateRedis:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(redis.ConnectionError):
                if client.ping():
                    break
            assert self.process.poll() is None, "redis-server exited at start"
            assert time.monotonic() < deadline, "redis-server did not answer PING"
            time.sleep(0.02)
        client.close()
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
        self.process = None


class TcpProxy:
    """A TCP relay that the test can cut (every connection closed, new ones reset),
    hold (a black hole: connections stay open, nothing gets through) and restore.

    Put between a service and PostgreSQL, it makes "the database became
    unreachable" or "the database stopped answering" happen at a chosen moment
    without touching the shared server.
    """

    def __init__(self, *, target: tuple[str, int]) -> None:
        self.target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._up = True
        self._closed = False
        self._cut_on: bytes | None = None
        self._flowing = threading.Event()
        self._flowing.set()
        threading.Thread(target=self._accept_loop, name="TcpProxy", daemon=True).start()

    def cut(self) -> None:
        with self._lock:
            self._up = False
            doomed, self._sockets = self._sockets, set()
        for sock in doomed:
            _abort(sock)

    def cut_on(self, pattern: bytes) -> None:
        """Cut, instead of forwarding, when a client sends bytes containing ``pattern``:
        the database goes away at an exact point, e.g. in the middle of a transaction."""
        self._cut_on = pattern

    def hold(self) -> None:
        """Stop passing bytes on, in both directions, and keep every connection
        open: the client waits on an answer that does not come. What was held
        goes through, in order, on restore()."""
        self._flowing.clear()

    def restore(self) -> None:
        with self._lock:
            self._up = True
            self._cut_on = None
        self._flowing.set()

    def close(self) -> None:
        self._closed = True
        self.cut()
        self._flowing.set()
        self._listener.close()

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                up = self._up
            if not up:
                _abort(client)  # the database is "down": reset, like a refused connection
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                _abort(client)
                continue
            upstream.settimeout(None)
            with self._lock:
                if not self._up:  # cut while this one was connecting
                    _abort(client)
                    _abort(upstream)
                    continue
                self._sockets.update((client, upstream))
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, from_client: bool) -> None:
        try:
            while data := src.recv(65536):
                if from_client and self._cut_on is not None and self._cut_on in data:
                    self.cut()
                    return
                self._flowing.wait()
                dst.sendall(data)
        except OSError:
            pass
        finally:
            _abort(dst)


def _abort(sock: socket.socket) -> None:
    """Close at once, with a reset rather than a polite FIN."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()
