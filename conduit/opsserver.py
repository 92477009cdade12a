"""The operator's HTTP port of the ingress and the worker: /metrics, /healthz, /readyz.

The web process answers these on its own port (conduit.ops); the ingress and
the worker speak no HTTP, so each runs this small server in a thread, on
``CONDUIT_METRICS_HOST`` (default 127.0.0.1) and ``CONDUIT_INGRESS_METRICS_PORT``
/ ``CONDUIT_WORKER_METRICS_PORT`` (unset or 0: none). One per process kind:
the ingress's parent process serves the files of all its SMTP processes, the
worker's main process those of its pool. ``/metrics`` needs the bearer token
when ``CONDUIT_METRICS_TOKEN`` is set (otherwise the bind address is the
protection), the probes never do.

The worker's heartbeat is written here too (``WorkerOps``, a Celery bootstep):
the time, into ``CONDUIT_WORKER_HEARTBEAT_FILE``, every
``CONDUIT_WORKER_HEARTBEAT_INTERVAL`` seconds, from the worker's own timer, so a
consumer that stopped turning stops the heartbeat.
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from celery import bootsteps
from django.conf import settings

from conduit.health import LIVE, Check, check_broker, check_heartbeat, readiness, write_heartbeat
from conduit.metrics import CONTENT_TYPE, exposition, registry

logger = logging.getLogger("conduit.ops")


class OpsServer:
    """/metrics, /healthz and /readyz over HTTP, in a daemon thread."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        ready: Callable[[], Sequence[Check]],
        token: str = "",
    ) -> None:
        scrape = registry()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner._answer(self)

            do_HEAD = do_GET

            def log_message(self, format: str, *args: Any) -> None:
                pass  # probes every few seconds: no line each

        self.scrape = scrape
        self.ready = ready
        self.token = token
        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, name="ops-server", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    def start(self) -> OpsServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def close_in_child(self) -> None:
        """In a forked process: let go of the listening socket, serve nothing."""
        self.httpd.socket.close()

    def _answer(self, request: BaseHTTPRequestHandler) -> None:
        path = request.path.split("?", 1)[0]
        if path == "/healthz":
            _send_json(request, 200, LIVE)
        elif path == "/readyz":
            _send_json(request, *readiness(self.ready()))
        elif path == "/metrics":
            if self.token and not _bearer_matches(request.headers.get("Authorization"), self.token):
                _send_json(
                    request,
                    401,
                    {
                        "code": "metrics_token_required",
                        "error": "Scraping /metrics needs the header Authorization: Bearer "
                        "<CONDUIT_METRICS_TOKEN>; the token was missing or wrong.",
                    },
                    headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
                )
                return
            _send(request, 200, exposition(self.scrape), CONTENT_TYPE)
        else:
            _send_json(
                request,
                404,
                {"code": "not_found", "error": "Not found: try /metrics, /healthz or /readyz."},
            )


def _bearer_matches(header: str | None, token: str) -> bool:
    scheme, _, value = (header or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(value.strip(), token)


def _send_json(
    request: BaseHTTPRequestHandler, status: int, body: dict, headers: dict | None = None
) -> None:
    _send(request, status, json.dumps(body).encode(), "application/json", headers)


def _send(
    request: BaseHTTPRequestHandler,
    status: int,
    body: bytes,
    content_type: str,
    headers: dict | None = None,
) -> None:
    request.send_response(status)
    request.send_header("Content-Type", content_type)
    request.send_header("Content-Length", str(len(body)))
    for name, value in (headers or {}).items():
        request.send_header(name, value)
    request.end_headers()
    if request.command != "HEAD":
        request.wfile.write(body)


def start(kind: str, *, port: int, ready: Callable[[], Sequence[Check]]) -> OpsServer | None:
    """The ops server of this process kind on ``port``; None when the port is 0, or
    taken (logged: the process goes on serving mail or deliveries without it)."""
    if not port:
        return None
    try:
        server = OpsServer(
            host=settings.CONDUIT_METRICS_HOST,
            port=port,
            ready=ready,
            token=settings.CONDUIT_METRICS_TOKEN,
        ).start()
    except OSError as exc:
        logger.error(
            "The %s's metrics and health port %s:%s could not be opened (%s); running without it",
            kind,
            settings.CONDUIT_METRICS_HOST,
            port,
            exc,
        )
        return None
    logger.info(
        "%s metrics and health checks on http://%s:%d/metrics (/healthz, /readyz)",
        kind.capitalize(),
        settings.CONDUIT_METRICS_HOST,
        server.port,
    )
    return server


# --- The worker ---------------------------------------------------------------------


def worker_checks(app: Any) -> list[Check]:
    """The worker is ready while its broker answers and its heartbeat is recent."""
    return [
        check_broker(app),
        check_heartbeat(
            Path(settings.CONDUIT_WORKER_HEARTBEAT_FILE),
            max_age=settings.CONDUIT_WORKER_HEARTBEAT_MAX_AGE,
        ),
    ]


class WorkerOps(bootsteps.StartStopStep):
    """The worker's heartbeat and ops server, started with the worker, stopped with it."""

    requires = {"celery.worker.components:Timer"}

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self.heartbeat = Path(settings.CONDUIT_WORKER_HEARTBEAT_FILE)
        self.timer_ref: Any = None
        self.server: OpsServer | None = None

    def start(self, worker: Any) -> None:
        self.heartbeat.parent.mkdir(parents=True, exist_ok=True)
        self.beat()
        self.timer_ref = worker.timer.call_repeatedly(
            settings.CONDUIT_WORKER_HEARTBEAT_INTERVAL, self.beat, priority=10
        )
        self.server = start(
            "worker",
            port=settings.CONDUIT_WORKER_METRICS_PORT,
            ready=lambda: worker_checks(worker.app),
        )

    def beat(self) -> None:
        try:
            write_heartbeat(self.heartbeat)
        except OSError as exc:
            logger.warning("Could not write the worker's heartbeat to %s: %s", self.heartbeat, exc)

    def stop(self, worker: Any) -> None:
        if self.timer_ref is not None:
            self.timer_ref.cancel()
        if self.server is not None:
            self.server.stop()
        # A stopped worker is not ready: no heartbeat left behind to say otherwise.
        self.heartbeat.unlink(missing_ok=True)
