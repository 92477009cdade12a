"""Prometheus metrics: every metric of Conduit, created once at import.

Each process kind (web, ingress, worker) is several processes: gunicorn's
workers, the ingress's forked processes, a prefork worker's children. They
count in prometheus-client's multiprocess mode: every process writes its
values to memory-mapped files in its kind's folder, ``<CONDUIT_METRICS_DIR>/
<kind>`` (default ``var/metrics/<kind>``), and a scrape adds up the files of
that folder (``exposition``). Each kind has its own folder so that a machine
running them all (bin/serve, one VM with the Procfile) never reports the
ingress's counts from the web's endpoint as well. Any other process (manage.py
shell, the tests, beat) counts in memory and serves nothing.

Recording costs one locked write to a memory-mapped file per value: the hot
paths call the helpers below once per session, message, group or attempt,
with their label children resolved once (``_labelled``).

The gauges of the delivery queue are not counted by any process: they are read
from the database when the web's endpoint is scraped (``DeliveryQueueCollector``),
once per scrape, whichever gunicorn worker answers it.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
    values,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

BASE_DIR = Path(__file__).resolve().parent.parent
KINDS = ("web", "ingress", "worker")
CONTENT_TYPE = CONTENT_TYPE_LATEST


def process_kind(argv: Sequence[str]) -> str | None:
    """Which of Conduit's processes this is, from its command line; None for any other
    (manage.py shell, migrate, beat, the tests), which counts in memory."""
    program = Path(argv[0]).as_posix() if argv else ""
    if "gunicorn" in program:
        return "web"
    if "celery" in program and "worker" in argv[1:]:
        return "worker"
    if len(argv) > 1 and argv[1] == "ingress":  # manage.py ingress
        return "ingress"
    return None


def metrics_directory(kind: str) -> Path:
    """Where processes of ``kind`` keep their metric files (read from the environment,
    not Django's settings: gunicorn's master uses it before any app is loaded)."""
    base = os.environ.get("CONDUIT_METRICS_DIR") or str(
        Path(os.environ.get("CONDUIT_VAR_DIR") or BASE_DIR / "var") / "metrics"
    )
    return Path(base) / kind


def remove_dead_files(directory: Path) -> None:
    """Drop the files of processes that are no longer running (a previous run's), and
    any of this process's pid (a dead one's, reused): a process kind starts counting
    from zero, as Prometheus expects of a restart, and never resumes another's counts."""
    own = os.getpid()
    for path in directory.glob("*.db"):
        pid = path.stem.rpartition("_")[2]
        if pid.isdigit() and (int(pid) == own or not _running(int(pid))):
            path.unlink(missing_ok=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


KIND = process_kind(sys.argv)
DIRECTORY: Path | None = None
if KIND is not None:
    DIRECTORY = metrics_directory(KIND)
    DIRECTORY.mkdir(parents=True, exist_ok=True)
    remove_dead_files(DIRECTORY)
    # prometheus-client reads the folder from this variable whenever a process
    # (a fork) opens its files, and chooses multiprocess mode when it is first
    # imported: set both here, whoever imported it first.
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(DIRECTORY)
    values.ValueClass = values.MultiProcessValue()
# The *_created series exist only in memory, never across processes: left out
# everywhere, so that every endpoint shows the same series.
disable_created_metrics()


# --- SMTP ingress ---------------------------------------------------------------

SMTP_SESSIONS = Counter("conduit_smtp_sessions", "SMTP connections accepted by the ingress.")
SMTP_MESSAGES = Counter(
    "conduit_smtp_messages",
    "Messages answered at the end of DATA, by outcome (accepted: 2xx, deferred: 4xx, "
    "rejected: 5xx) and reply code.",
    ["outcome", "code"],
)
SMTP_ACCEPTED_BYTES = Counter(
    "conduit_smtp_accepted_bytes", "Bytes of the messages accepted (250), as received."
)
SMTP_ACCEPT_SECONDS = Histogram(
    "conduit_smtp_accept_seconds",
    "From the end of a message's DATA to its 250: checks, storing and the commit.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20),
)
SMTP_GROUP_COMMIT_SIZE = Histogram(
    "conduit_smtp_group_commit_size",
    "Messages stored by one group commit (one transaction).",
    buckets=(1, 2, 4, 8, 16, 32, 64),
)

# --- Deliveries -----------------------------------------------------------------

DELIVERIES = Counter(
    "conduit_deliveries",
    "Delivery attempts by what they led to: delivered, retrying (pending again) or failed.",
    ["outcome"],
)
DELIVERY_ATTEMPT_SECONDS = Histogram(
    "conduit_delivery_attempt_seconds",
    "Duration of each delivery attempt's HTTP request.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 30),
)

# --- API ------------------------------------------------------------------------

API_REQUESTS = Counter(
    "conduit_api_requests", "Requests under /api/, by method and status.", ["method", "status"]
)
API_REQUEST_SECONDS = Histogram(
    "conduit_api_request_seconds", "Time to answer a request under /api/."
)


def _labelled(metric: Any) -> Callable[..., Any]:
    """``metric.labels(*values)``, each child looked up once per process."""
    children: dict[tuple[str, ...], Any] = {}

    def child(*label_values: str) -> Any:
        found = children.get(label_values)
        if found is None:
            found = children[label_values] = metric.labels(*label_values)
        return found

    return child


_smtp_message = _labelled(SMTP_MESSAGES)
_delivery = _labelled(DELIVERIES)
_api_request = _labelled(API_REQUESTS)
_SMTP_OUTCOMES = {"2": "accepted", "4": "deferred", "5": "rejected"}
_DELIVERY_OUTCOMES = {"delivered": "delivered", "pending": "retrying", "failed": "failed"}


def smtp_session_started() -> None:
    SMTP_SESSIONS.inc()


def smtp_message_answered(reply: str, *, size: int, started: float) -> None:
    """A DATA reply given (``started``: time.perf_counter() when the data was in)."""
    code = reply[:3]
    _smtp_message(_SMTP_OUTCOMES.get(code[:1], "rejected"), code).inc()
    if code == "250":
        SMTP_ACCEPTED_BYTES.inc(size)
        SMTP_ACCEPT_SECONDS.observe(time.perf_counter() - started)


def smtp_group_committed(size: int) -> None:
    SMTP_GROUP_COMMIT_SIZE.observe(size)


def delivery_attempted(*, status: str, duration_ms: int) -> None:
    """An attempt recorded; ``status`` is the delivery's new status."""
    _delivery(_DELIVERY_OUTCOMES.get(status, status)).inc()
    DELIVERY_ATTEMPT_SECONDS.observe(duration_ms / 1000)


def api_request_answered(*, method: str, status: int, seconds: float) -> None:
    _api_request(method, str(status)).inc()
    API_REQUEST_SECONDS.observe(seconds)


# --- Exposition -------------------------------------------------------------------


class DeliveryQueueCollector:
    """The delivery queue's gauges, read from the database at scrape time (one query)."""

    def __init__(self, read: Callable[[], Any]) -> None:
        self.read = read

    def describe(self) -> Iterable[Any]:
        return []  # no reading at registration: the database may not be there yet

    def collect(self) -> Iterable[GaugeMetricFamily]:
        backlog = self.read()
        yield GaugeMetricFamily(
            "conduit_deliveries_due",
            "Pending deliveries whose next attempt is due now (the queue's depth).",
            value=backlog.due,
        )
        yield GaugeMetricFamily(
            "conduit_oldest_due_delivery_age_seconds",
            "How long the oldest due delivery has been waiting past its due time (0: none).",
            value=backlog.oldest_due_age,
        )
        yield GaugeMetricFamily(
            "conduit_retries_pending",
            "Pending deliveries that have failed at least once and wait for a retry.",
            value=backlog.retries,
        )
        yield GaugeMetricFamily(
            "conduit_webhooks_failing",
            "Webhooks with at least one delivery waiting for a retry.",
            value=backlog.failing_webhooks,
        )


def registry(*, extra: Sequence[Any] = ()) -> CollectorRegistry:
    """What a scrape of this process kind shows: the files of every process of the
    kind (or, counting in memory, this process's values), and ``extra`` collectors."""
    scraped = CollectorRegistry()
    if DIRECTORY is not None:
        MultiProcessCollector(scraped, path=str(DIRECTORY))
    else:
        scraped.register(_InMemory())
    for collector in extra:
        scraped.register(collector)
    return scraped


class _InMemory:
    """This process's own values (prometheus-client's default registry)."""

    def collect(self) -> Iterable[Any]:
        return REGISTRY.collect()


def exposition(scraped: CollectorRegistry) -> bytes:
    return generate_latest(scraped)
