"""What every benchmark needs: its own database and Redis db, the services it
starts as subprocesses (always stopped at the end), memory readings, and the
table / JSON / PNG output.

Nothing here imports Django at module level: the scripts point the environment
at the benchmark database first and only then call ``setup_django``.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench" / "results"
PYTHON = sys.executable
BIN = Path(PYTHON).parent

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/conduit"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/15"


# --- Command line ---------------------------------------------------------------


def arguments(description: str, *, baseline: bool = False) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    if baseline:
        parser.add_argument(
            "--baseline",
            type=Path,
            metavar="TREE",
            help="also run this other checkout of the project (with its own .venv) in the "
            "same rounds, e.g. the commit before a change",
        )
        parser.add_argument(
            "--rounds",
            type=int,
            default=None,
            help="alternating rounds per load (default 2; more to read a small change "
            "through a noisy machine)",
        )
    parser.add_argument(
        "--tiny", action="store_true", help="a few messages/requests in seconds (used by tests)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=RESULTS_DIR,
        help="where the JSON and PNG go (default bench/results/)",
    )
    parser.add_argument(
        "--keep-logs", action="store_true", help="keep the services' logs after a good run"
    )
    return parser.parse_args()


# --- Where the benchmark keeps its data ----------------------------------------


def _with_path(url: str, path: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, parts.fragment))


# DATABASE_URL query parameters that dj-database-url hands to Django's OPTIONS
# and libpq does not know: left out of the benchmark's own connections.
_DJANGO_ONLY = {
    "prepare_threshold",
    "server_side_binding",
    "pool",
    "isolation_level",
    "assume_role",
}


def _libpq_url(url: str) -> str:
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k not in _DJANGO_ONLY]
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), parts.fragment))


def bench_database_url() -> str:
    """BENCH_DATABASE_URL, else DATABASE_URL's database name + ``_bench``."""
    explicit = os.environ.get("BENCH_DATABASE_URL")
    if explicit:
        return explicit
    base = os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL
    name = urlsplit(base).path.lstrip("/") or "conduit"
    return _with_path(base, f"/{name}_bench")


def bench_redis_url() -> str:
    """BENCH_REDIS_URL, else REDIS_URL's server with the neighbouring db number
    (db 15 gives 14, db 11 gives 12): the first choice of ``claim_redis``."""
    explicit = os.environ.get("BENCH_REDIS_URL")
    if explicit:
        return explicit
    base = os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL
    db = int(urlsplit(base).path.strip("/") or "0")
    return _with_path(base, f"/{db + 1 if db < 15 else db - 1}")


@dataclass
class Bench:
    """One benchmark run: its URLs, scratch directory and the environment of its services."""

    name: str
    tiny: bool
    out: Path
    keep_logs: bool = False
    database_url: str = field(default_factory=bench_database_url)
    redis_url: str = field(default_factory=bench_redis_url)
    scratch: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="conduit-bench-")))

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            DATABASE_URL=self.database_url,
            REDIS_URL=self.redis_url,
            SECRET_KEY=os.environ.get("SECRET_KEY") or "conduit-bench-not-a-secret",
            DEBUG="false",  # DEBUG keeps every SQL query in memory
            ALLOWED_HOSTS="127.0.0.1,localhost",
            CONDUIT_VAR_DIR=str(self.scratch / "var"),
            CONDUIT_ALLOW_PRIVATE_TARGETS="true",
            CONDUIT_ALLOW_HTTP_TARGETS="true",
            PYTHONUNBUFFERED="1",
        )
        env.pop("CELERY_TASK_ALWAYS_EAGER", None)
        env.update(extra)
        return env


# Held (a session advisory lock) for the whole run, so two runs never share a database.
_database_locks: list[Any] = []
BENCH_LOCK_KEY = 0x0C0DB17C


def prepare_database(bench: Bench, *, checkout: Checkout | None = None) -> None:
    """Create the benchmark database if missing, take it for this run, migrate and empty it.

    With ``checkout`` (another tree of the project, see Checkout), its own
    database, migrated by that tree's manage.py.
    """
    import psycopg

    tree = checkout or Checkout.this(bench)
    url = tree.database_url
    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    if not re.fullmatch(r"[A-Za-z0-9_]+", name):
        raise SystemExit(f"The benchmark database name {name!r} must be letters, digits and _")
    admin_url = _libpq_url(_with_path(url, "/postgres"))
    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{name}"')
    lock = psycopg.connect(_libpq_url(url), autocommit=True)
    _database_locks.append(lock)
    taken = lock.execute("SELECT pg_try_advisory_lock(%s)", [BENCH_LOCK_KEY]).fetchone()
    if not taken[0]:
        raise SystemExit(
            f"Another benchmark is running on the database {name}; wait for it, or give this "
            "one its own with BENCH_DATABASE_URL."
        )
    subprocess.run(
        [tree.python, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=tree.root,
        env=tree.env(bench),
        check=True,
    )
    with psycopg.connect(_libpq_url(url), autocommit=True) as conn:
        tables = [
            row[0]
            for row in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
                "AND tablename NOT IN ('django_migrations', 'django_content_type', "
                "'auth_permission')"
            )
        ]
        if tables:
            conn.execute("TRUNCATE " + ", ".join(f'"{t}"' for t in tables) + " CASCADE")


@dataclass
class Checkout:
    """Another tree of the project (e.g. ``git worktree add ../before <commit>``
    with its own ``.venv``), run beside this one in the same benchmark so both
    get the same machine at the same minutes. It has its own database: the
    benchmark's name + ``_baseline``."""

    root: Path
    database_url: str
    python: str

    @classmethod
    def at(cls, root: Path, bench: Bench) -> Checkout:
        root = root.resolve()
        python = root / ".venv/bin/python"
        if not (root / "manage.py").is_file() or not python.is_file():
            raise SystemExit(f"{root} is not a checkout of the project with its own .venv")
        parts = urlsplit(bench.database_url)
        return cls(root, _with_path(bench.database_url, f"{parts.path}_baseline"), str(python))

    @classmethod
    def this(cls, bench: Bench) -> Checkout:
        """This tree, run by this interpreter, on the benchmark's own database."""
        return cls(ROOT, bench.database_url, PYTHON)

    def env(self, bench: Bench, **extra: str) -> dict[str, str]:
        return bench.env(**{"DATABASE_URL": self.database_url, **extra})

    def run_in_django(self, bench: Bench, code: str) -> None:
        """Run ``code`` in that tree's Django (its models, its database)."""
        subprocess.run(
            [self.python, "manage.py", "shell", "-c", code],
            cwd=self.root,
            env=self.env(bench),
            check=True,
        )


REDIS_MARKER = "conduit-bench:database"


def claim_redis(bench: Bench) -> None:
    """Settle on a Redis db that nothing else uses, and empty it.

    The benchmark flushes its db, and a worker of anything else on the same db
    would take some of its tasks. So unless BENCH_REDIS_URL names one, the db is
    the first, from ``bench_redis_url``'s on, that no other client is connected
    to and that is empty or was a benchmark's (it carries REDIS_MARKER).
    """
    import redis

    if os.environ.get("BENCH_REDIS_URL"):
        redis.Redis.from_url(bench.redis_url).flushdb()
        return
    preferred = int(urlsplit(bench.redis_url).path.strip("/"))
    base = int(urlsplit(os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL).path.strip("/") or "0")
    server = redis.Redis.from_url(bench.redis_url)
    busy = {int(c["db"]) for c in server.client_list() if c.get("cmd") != "client|list"}
    name = urlsplit(bench.database_url).path.lstrip("/")
    for db in [preferred, *(d for d in range(15, -1, -1) if d != preferred)]:
        if db == base or db in busy:
            continue
        url = _with_path(bench.redis_url, f"/{db}")
        client = redis.Redis.from_url(url)
        if client.dbsize() == 0 or client.get(REDIS_MARKER) == name.encode():
            client.flushdb()
            client.set(REDIS_MARKER, name)
            bench.redis_url = url
            if db != preferred:
                print(f"Redis db {preferred} is in use; the benchmark uses db {db}.")
            return
    raise SystemExit("No free Redis db for the benchmark; name one with BENCH_REDIS_URL.")


def setup_django(bench: Bench) -> None:
    """Point this process at the benchmark database and start Django in it."""
    os.environ.update(bench.env())
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "conduit.settings")
    import django

    django.setup()


# --- Services -------------------------------------------------------------------

_PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None) if sys.platform == "linux" else None


def _die_with_parent() -> None:
    # A benchmark killed outright (e.g. by a test timeout) must not leave its
    # services running: the kernel sends them SIGTERM when it dies. (Runs in the
    # child between fork and exec, so it only calls into an already loaded libc.)
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class Service:
    """A subprocess whose output goes to a log file and can be waited on for a line."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: dict[str, str],
        logdir: Path,
        on_line: Callable[[str], None] | None = None,
        cwd: Path = ROOT,
    ):
        self.name = name
        self.on_line = on_line
        self.argv = list(argv)
        self.log_path = logdir / f"{name}.log"
        self._log = self.log_path.open("w", encoding="utf-8", errors="replace")
        self._cond = threading.Condition()
        self._head: list[str] = []  # startup lines, searched by wait_for
        self._tail: deque[str] = deque(maxlen=40)
        self._closed = False
        self.proc = subprocess.Popen(
            self.argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        self._reader = threading.Thread(target=self._read, name=f"log-{name}", daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace")
            if self.on_line is not None:
                self.on_line(line)
            self._log.write(line)
            with self._cond:
                if len(self._head) < 2000:
                    self._head.append(line)
                self._tail.append(line)
                self._cond.notify_all()
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._log.flush()

    def wait_for(self, pattern: str, timeout: float = 30.0) -> re.Match[str]:
        """The first startup line matching ``pattern``; raises if the process dies first."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        seen = 0
        with self._cond:
            while True:
                for line in self._head[seen:]:
                    match = regex.search(line)
                    if match:
                        return match
                seen = len(self._head)
                if self._closed or self.proc.poll() is not None:
                    raise RuntimeError(f"{self.name} exited early:\n{self.tail()}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RuntimeError(f"{self.name}: no line like {pattern!r}:\n{self.tail()}")
                self._cond.wait(min(left, 0.5))

    def tail(self) -> str:
        return "".join(self._tail)

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        # Children left behind by a process that exited (prefork pool, gunicorn workers).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self._reader.join(5)
        self._log.close()


class Services:
    """Starts services and stops all of them, in reverse order, whatever happens."""

    def __init__(self, bench: Bench) -> None:
        self.bench = bench
        self.logdir = bench.scratch / "logs"
        self.logdir.mkdir(parents=True, exist_ok=True)
        self.started: list[Service] = []

    def start(
        self,
        name: str,
        argv: Sequence[str],
        on_line: Callable[[str], None] | None = None,
        *,
        checkout: Checkout | None = None,
        **env: str,
    ) -> Service:
        """Start ``argv`` in this tree, or in ``checkout`` with its database."""
        tree = checkout or Checkout.this(self.bench)
        service = Service(
            name,
            argv,
            env=tree.env(self.bench, **env),
            logdir=self.logdir,
            on_line=on_line,
            cwd=tree.root,
        )
        self.started.append(service)
        return service

    def __enter__(self) -> Services:
        return self

    def __exit__(self, *exc: object) -> None:
        for service in reversed(self.started):
            service.stop()
        failed = exc[0] is not None
        if failed:
            for service in self.started:
                print(f"--- last lines of {service.name} ({service.log_path})", file=sys.stderr)
                print(service.tail(), file=sys.stderr)
        if not failed and not self.bench.keep_logs:
            shutil.rmtree(self.bench.scratch, ignore_errors=True)
        else:
            print(f"Service logs kept in {self.logdir}", file=sys.stderr)

    # The project's own processes, started as in the Procfile.

    def ingress(
        self, name: str = "ingress", *, checkout: Checkout | None = None, **env: str
    ) -> tuple[Service, int]:
        """The ingress as ``manage.py ingress`` starts it: this tree's, or ``checkout``'s."""
        python = (checkout or Checkout.this(self.bench)).python
        argv = [python, "manage.py", "ingress", "--host", "127.0.0.1", "--port", "0"]
        service = self.start(name, argv, checkout=checkout, **env)
        port = int(service.wait_for(r"SMTP ingress listening on [\d.]+:(\d+)", 60).group(1))
        return service, port

    def worker(self, *extra: str, **env: str) -> Service:
        service = self.start(
            "worker",
            [str(BIN / "celery"), "-A", "conduit", "worker", "--loglevel=INFO", *extra],
            **env,
        )
        service.wait_for(r"celery@\S+ ready\.", 60)
        return service

    def beat(self) -> Service:
        schedule = self.bench.scratch / "celerybeat-schedule"
        service = self.start(
            "beat",
            [str(BIN / "celery"), "-A", "conduit", "beat", "--loglevel=INFO", "-s", str(schedule)],
        )
        service.wait_for(r"beat: Starting", 60)
        return service

    def gunicorn(self, *, workers: int) -> tuple[Service, int]:
        port = free_port()
        service = self.start(
            "gunicorn",
            [
                str(BIN / "gunicorn"),
                "conduit.wsgi",
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                str(workers),
                "--access-logfile",
                "-",
            ],
        )
        service.wait_for(r"Booting worker", 60)
        wait_http(port, "/api/v1/ping", 60)
        return service, port


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(port: int, path: str, timeout: float) -> None:
    import http.client

    deadline = time.monotonic() + timeout
    while True:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", path)
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"nothing answers 200 on 127.0.0.1:{port}{path}")
        time.sleep(0.2)


@contextlib.contextmanager
def terminate_cleanly() -> Iterator[None]:
    """SIGTERM (e.g. from a test's timeout) unwinds like Ctrl-C, so services are stopped."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# --- The delivery pipeline, end to end ---------------------------------------------
#
# bench/e2e.py and bench/recover.py: the ingress, a worker, beat and an HTTP sink
# (bench/sink.py), one webhook pointing at the sink, and an open-loop SMTP client
# whose messages carry their tag as the Subject; the sink reports each tag with its
# arrival time.

PIPELINE_RCPT = "inbox@bench.example"
PIPELINE_MESSAGE_SIZE = 10 * 1024


class Arrivals:
    """Tag -> first arrival time at the sink, fed by the sink's output thread."""

    def __init__(self) -> None:
        self.first: dict[str, float] = {}
        self.duplicates = 0
        self._lock = threading.Lock()

    def on_line(self, line: str) -> None:
        stamp, _, tag = line.strip().partition(" ")
        if not stamp.isdigit():
            return
        with self._lock:
            if tag in self.first:
                self.duplicates += 1
            else:
                self.first[tag] = int(stamp) / 1e9


@dataclass
class Run:
    rate: float
    seconds: float
    sent: dict[str, float] = field(default_factory=dict)  # tag -> time of the 250
    smtp_seconds: list[float] = field(default_factory=list)
    errors: int = 0
    achieved_rate: float = 0.0
    gave_up: bool = False
    cpu_ms_per_msg: dict[str, float] = field(default_factory=dict)

    def latencies(self, arrivals: Arrivals) -> list[float]:
        return [arrivals.first[t] - at for t, at in self.sent.items() if t in arrivals.first]

    def lost(self, arrivals: Arrivals) -> int:
        return sum(1 for t in self.sent if t not in arrivals.first)

    def held(self, arrivals: Arrivals, p99_seconds: float) -> bool:
        return (
            not self.gave_up
            and self.errors == 0
            and self.lost(arrivals) == 0
            and self.achieved_rate >= 0.95 * self.rate
            and percentile(self.latencies(arrivals), 99) < p99_seconds
        )

    def summary(self, arrivals: Arrivals) -> dict:
        latencies = self.latencies(arrivals)
        return {
            "rate": self.rate,
            "seconds": self.seconds,
            "accepted": len(self.sent),
            "errors": self.errors,
            "achieved_rate": self.achieved_rate,
            "delivered": len(latencies),
            "lost": self.lost(arrivals),
            "stopped_early": self.gave_up,
            "latency_ms": summary_ms(latencies),
            "smtp_session_ms": summary_ms(self.smtp_seconds),
            "cpu_ms_per_msg": self.cpu_ms_per_msg,
        }


async def _offer(
    port: int, run: Run, prefix: str, arrivals: Arrivals, give_up_after: float | None
) -> None:
    """Open loop: message i starts at t0 + i/rate, whatever the server's pace.

    With ``give_up_after``, stops early once more than 1 % of the run's messages
    took longer than that (a p99 under it is then out of reach).
    """
    import asyncio

    from bench.smtpload import SmtpReplyError, make_message, send_one

    loop = asyncio.get_running_loop()
    count = int(run.rate * run.seconds)
    t0 = loop.time() + 0.05
    first_error: list[BaseException] = []

    async def one(i: int) -> None:
        tag = f"{prefix}-{i}"
        message = make_message(tag=tag, rcpt=PIPELINE_RCPT, size=PIPELINE_MESSAGE_SIZE)
        try:
            sent = await send_one(
                "127.0.0.1",
                port,
                mail_from="sender@bench.example",
                rcpt=PIPELINE_RCPT,
                message=message,
            )
        except (SmtpReplyError, OSError) as exc:
            run.errors += 1
            first_error.append(exc)
            return
        run.sent[tag] = sent.accepted
        run.smtp_seconds.append(sent.accepted - sent.started)

    def out_of_reach() -> bool:
        now = time.monotonic()
        late = 0
        for tag, at in list(run.sent.items()):
            arrived = arrivals.first.get(tag)
            if (arrived if arrived is not None else now) - at >= give_up_after:
                late += 1
        return late > count / 100

    tasks = []
    for i in range(count):
        delay = t0 + i / run.rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i)))
        if give_up_after is not None and i % max(1, int(run.rate / 4)) == 0 and out_of_reach():
            run.gave_up = True
            break
    await asyncio.gather(*tasks)
    if first_error:
        print(f"  {run.errors} failed sessions, e.g.: {first_error[0]}", file=sys.stderr)


def wait_for_arrivals(tags: list[str], arrivals: Arrivals, *, patience: float = 30.0) -> None:
    """Until every tag arrived, or nothing arrived at all for ``patience`` seconds."""
    last_progress, missing = time.monotonic(), len(tags)
    while missing:
        time.sleep(0.05)
        now_missing = sum(1 for t in tags if t not in arrivals.first)
        if now_missing < missing:
            last_progress, missing = time.monotonic(), now_missing
        elif time.monotonic() - last_progress > patience:
            return


class Stack:
    """The running pipeline: where to send, where arrivals come in, what CPU is used."""

    def __init__(
        self,
        port: int,
        arrivals: Arrivals,
        meter: CpuMeter,
        *,
        webhook: Any = None,
        ingress: Service | None = None,
        worker: Service | None = None,
    ) -> None:
        self.port = port
        self.arrivals = arrivals
        self.meter = meter
        self.webhook = webhook
        self.ingress = ingress
        self.worker = worker
        self.runs: list[Run] = []

    def offer(
        self, rate: float, seconds: float, prefix: str, give_up_after: float | None = None
    ) -> Run:
        import asyncio

        run = Run(rate=rate, seconds=seconds)
        self.runs.append(run)
        before = self.meter.mark()
        started = time.monotonic()
        asyncio.run(_offer(self.port, run, prefix, self.arrivals, give_up_after))
        if run.sent:
            # Offered over count/rate seconds: held only if the last 250 came about on time.
            run.achieved_rate = len(run.sent) / max(max(run.sent.values()) - started, 1e-9)
        # The next run starts once this one's deliveries are in (or clearly stuck).
        wait_for_arrivals(list(run.sent), self.arrivals)
        run.cpu_ms_per_msg = self.meter.ms_per(before, self.meter.mark(), len(run.sent))
        return run

    def describe(self, run: Run, label: str) -> str:
        lat = summary_ms(run.latencies(self.arrivals))
        return (
            f"  {label}: {len(run.sent)} messages, achieved {run.achieved_rate:.1f}/s, "
            f"p50 {lat['p50']:.1f} ms, p99 {lat['p99']:.1f} ms, max {lat['max']:.0f} ms, "
            f"not arrived {run.lost(self.arrivals)}"
        )

    def accepted_tags(self) -> list[str]:
        return [tag for run in self.runs for tag in run.sent]


def postgres_backends() -> list[int]:
    """The benchmark database's other backends (the services' connections)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return [row[0] for row in cursor.fetchall()]


def start_pipeline(
    services: Services,
    arrivals: Arrivals,
    *,
    prepare: Callable[[Any], None] | None = None,
) -> Stack:
    """The sink, an account whose one webhook (PIPELINE_RCPT) posts to it, then
    the ingress, a worker as `celery -A conduit worker` starts it and beat.
    ``prepare(webhook)`` runs before the ingress and the worker start (for
    rows a benchmark inserts up front). Needs ``setup_django``."""
    from accounts.models import Account
    from domains.models import Domain
    from webhooks.models import Webhook

    sink = services.start("sink", [PYTHON, "bench/sink.py"], on_line=arrivals.on_line)
    sink_port = int(sink.wait_for(r"listening on [\d.]+:(\d+)").group(1))
    account = Account.objects.create_user(email="bench@bench.example", password=None)
    domain = Domain.objects.create(account=account, name="bench.example", verified=True)
    webhook = Webhook.objects.create(
        account=account,
        domain=domain,
        address=PIPELINE_RCPT,
        target_url=f"http://127.0.0.1:{sink_port}/hook",
        secret="whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    )
    if prepare is not None:
        prepare(webhook)
    ingress, port = services.ingress()
    worker = services.worker()
    services.beat()
    meter = CpuMeter(
        {"ingress": ingress.pid, "worker": worker.pid, "sink": sink.pid},
        {"postgres": postgres_backends, "client": lambda: [os.getpid()]},
    )
    return Stack(port, arrivals, meter, webhook=webhook, ingress=ingress, worker=worker)


# --- Rows inserted up front -------------------------------------------------------


def copy_rows(model: type, rows: Iterator[dict]) -> None:
    """COPY rows into ``model``'s table: every column from _meta, those a row
    leaves out at the field's default (as the ORM would write it)."""
    from django.db import connection

    fields = model._meta.concrete_fields
    defaults = {f.column: f.get_db_prep_save(f.get_default(), connection) for f in fields}
    columns = [f.column for f in fields]
    table = connection.ops.quote_name(model._meta.db_table)
    names = ", ".join(connection.ops.quote_name(c) for c in columns)
    with connection.cursor() as cursor:
        with cursor.cursor.copy(f"COPY {table} ({names}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row([row[c] if c in row else defaults[c] for c in columns])
        cursor.execute(f"ANALYZE {table}")


# --- Memory ---------------------------------------------------------------------


def _status_kb(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def rss_mb(pid: int) -> float:
    """Resident memory now."""
    try:
        return _status_kb(pid, "VmRSS") / 1024
    except OSError:
        import psutil

        return psutil.Process(pid).memory_info().rss / 2**20


def peak_rss_mb(pid: int) -> float:
    """The highest resident memory of the process so far (VmHWM; psutil's RSS as a fallback)."""
    try:
        return _status_kb(pid, "VmHWM") / 1024
    except OSError:
        return rss_mb(pid)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of the process (all its threads) so far."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        import psutil

        times = psutil.Process(pid).cpu_times()
        return times.user + times.system


def tree_cpu_seconds(pid: int) -> float:
    """``cpu_seconds`` of the process and its live children (a prefork pool)."""
    total = 0.0
    for each in [pid, *children(pid)]:
        with contextlib.suppress(OSError, ValueError):
            total += cpu_seconds(each)
    return total


class CpuMeter:
    """CPU time used by named process trees (and optionally some loose pids) between marks."""

    def __init__(self, trees: dict[str, int], loose: dict[str, Callable[[], list[int]]]):
        self.trees = trees
        self.loose = loose

    def mark(self) -> dict[str, dict[int, float]]:
        marks: dict[str, dict[int, float]] = {}
        for name, root in self.trees.items():
            marks[name] = {}
            for pid in [root, *children(root)]:
                with contextlib.suppress(OSError, ValueError):
                    marks[name][pid] = cpu_seconds(pid)
        for name, pids in self.loose.items():
            marks[name] = {}
            for pid in pids():
                with contextlib.suppress(OSError, ValueError):
                    marks[name][pid] = cpu_seconds(pid)
        return marks

    @staticmethod
    def ms_per(before: dict, after: dict, count: int) -> dict[str, float]:
        """Milliseconds of CPU per item (message, request) for each name."""
        return (
            {
                name: 1000
                * sum(cpu - before[name].get(pid, 0.0) for pid, cpu in pids.items())
                / count
                for name, pids in after.items()
            }
            if count
            else {}
        )


def reset_peak_rss(pid: int) -> bool:
    """Start VmHWM afresh (Linux: ``5`` into clear_refs), so a later peak is this step's."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def children(pid: int) -> list[int]:
    try:
        import psutil

        return [child.pid for child in psutil.Process(pid).children(recursive=True)]
    except ImportError:
        found = []
        for task in Path(f"/proc/{pid}/task").iterdir():
            text = (task / "children").read_text().split()
            found.extend(int(p) for p in text)
        return found + [c for p in found for c in children(p)]


# --- Numbers --------------------------------------------------------------------


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (no interpolation): p99 of 100 values is the 99th."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * pct // 100))
    return ordered[int(rank) - 1]


def summary_ms(seconds: Sequence[float]) -> dict[str, float]:
    ms = [s * 1000 for s in seconds]
    if not ms:
        return {"p50": float("nan"), "p95": float("nan"), "p99": float("nan"), "max": float("nan")}
    return {
        "p50": percentile(ms, 50),
        "p95": percentile(ms, 95),
        "p99": percentile(ms, 99),
        "max": max(ms),
        "mean": statistics.fmean(ms),
    }


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table, so that it pastes into the README as it is."""

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:,.1f}" if abs(value) < 1000 else f"{value:,.0f}"
        return str(value)

    def numeric(value: Any) -> bool:
        return isinstance(value, int | float) and not isinstance(value, bool)

    text = [[cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in text)) for i, h in enumerate(headers)]
    lines = [
        "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |",
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
    ]
    for raw, row in zip(rows, text, strict=True):
        cells = [
            c.rjust(w) if numeric(v) else c.ljust(w)
            for v, c, w in zip(raw, row, widths, strict=True)
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_at_start": os.getloadavg(),
    }


def write_results(bench: Bench, data: dict[str, Any]) -> Path:
    bench.out.mkdir(parents=True, exist_ok=True)
    data = {
        "benchmark": bench.name,
        "mode": "tiny" if bench.tiny else "full",
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "machine": machine(),
        **data,
    }
    path = bench.out / f"{bench.name}.json"
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    return path


def chart_path(bench: Bench) -> Path:
    return bench.out / f"{bench.name}.png"


def pyplot() -> Any | None:
    """matplotlib's pyplot, or None (with a note) when the bench extra is not installed."""
    try:
        import matplotlib
    except ImportError:
        print("No chart: matplotlib is not installed (pip install -e '.[bench]').")
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"
