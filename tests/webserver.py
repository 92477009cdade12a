"""Conduit's web process in a subprocess: gunicorn, started from the repository root as
Procfile and bin/serve start it, so it reads gunicorn.conf.py the same way."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests

from tests.ingress.processes import Service, free_port, service_env


class WebServer:
    def __init__(self, service: Service, port: int) -> None:
        self.service = service
        self.url = f"http://127.0.0.1:{port}"

    def request(self, method: str, path: str, **kwargs: object) -> requests.Response:
        return requests.request(method, self.url + path, timeout=30, **kwargs)


@contextmanager
def web_server(
    *, directory: Path, database_url: str = "", redis_url: str = ""
) -> Iterator[WebServer]:
    port = free_port()
    env = service_env(database_url=database_url, redis_url=redis_url, var_dir=directory)
    env["ALLOWED_HOSTS"] = "127.0.0.1"
    for name in ("DATABASE_URL", "REDIS_URL"):
        if not env[name]:
            del env[name]  # the embedded defaults: SQLite, file cache and broker
    argv = [sys.executable, "-m", "gunicorn", "conduit.wsgi", "--bind", f"127.0.0.1:{port}"]
    argv += ["--workers", "1"]
    service = Service("web", argv, env=env, log_dir=directory, ready=r"Booting worker")
    try:
        service.wait_ready()
        yield WebServer(service, port)
    finally:
        service.stop()
