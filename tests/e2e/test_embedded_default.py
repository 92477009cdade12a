"""The whole path on the embedded default, the one a new user gets from bin/serve.

No DATABASE_URL and no REDIS_URL: the web API, the SMTP ingress and the worker
run as real processes on a SQLite file and the file-system broker under a
scratch CONDUIT_VAR_DIR, in development mode as bin/serve starts them. A user
signs up through the API, the operator verifies the test domain
(``manage.py domain_verify_dev``), real SMTP sessions deliver three messages,
and a real HTTP server receives them: one signed POST answered 200, one
answered 500 and then 200 (delivered on the second attempt, with the same
webhook-id), one answered 422 (failed after one attempt, and in the log).

The rest of the suite runs the ORM half of webhooks/storage.py on PostgreSQL
(fixture ``storage_half``); this is where it runs on SQLite, with the broker
that only exists on the embedded default.
"""

from __future__ import annotations

import smtplib
import sqlite3
import subprocess
import sys
import threading
import time
from collections import defaultdict
from email.message import EmailMessage
from pathlib import Path

import pytest
import requests
from standardwebhooks.webhooks import Webhook as StandardWebhook
from werkzeug import Request, Response

from tests.ingress.processes import (
    BASE_DIR,
    INGRESS_READY,
    WORKER_READY,
    Service,
    free_port,
    ingress_argv,
    service_env,
    worker_argv,
)
from webhooks.models import Delivery

# First retry after a 500: the schedule's 5 s, jittered by up to 20 %.
DEADLINE_SECONDS = 40.0
PASSWORD = "a-long-trial-password"


class Receiver:
    """What the local HTTP server saw, per path, and how it answers each attempt."""

    def __init__(self, answers: dict[str, list[int]]) -> None:
        self.answers = answers
        self.seen: dict[str, list[Request]] = defaultdict(list)
        self.bodies: dict[str, list[bytes]] = defaultdict(list)
        self._lock = threading.Lock()

    def __call__(self, request: Request) -> Response:
        with self._lock:
            attempts = self.seen[request.path]
            attempts.append(request)
            self.bodies[request.path].append(request.get_data())
            plan = self.answers[request.path]
            status = plan[min(len(attempts), len(plan)) - 1]
        return Response("ok" if status < 300 else "no", status=status)

    def count(self, path: str) -> int:
        with self._lock:
            return len(self.seen[path])


class Embedded:
    """The embedded default's processes, started with no DATABASE_URL or REDIS_URL."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.var_dir = directory / "var"
        self.env = service_env(
            database_url=None,
            redis_url=None,
            var_dir=self.var_dir,
            DEBUG="true",  # as bin/serve runs
        )
        self.services: list[Service] = []

    def manage(self, *args: str) -> subprocess.CompletedProcess:
        done = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=BASE_DIR,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, f"manage.py {' '.join(args)}:\n{done.stdout}{done.stderr}"
        return done

    def start(self, name: str, argv: list[str], ready: str) -> Service:
        service = Service(name, argv, env=self.env, log_dir=self.directory, ready=ready)
        self.services.append(service)
        return service

    def stop(self) -> None:
        for service in reversed(self.services):
            service.stop()

    def logs(self) -> str:
        return "\n".join(f"--- {s.name}\n{s.output()[-3000:]}" for s in self.services)

    def statuses(self) -> dict[str, tuple[str, int]]:
        """(status, attempts) of each delivery by recipient, read from the SQLite file."""
        path = self.var_dir / "conduit.sqlite3"
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as db:
            rows = db.execute(
                f'SELECT w."address", d."status", d."attempts" '
                f'FROM "{Delivery._meta.db_table}" d '
                f'JOIN "{Delivery.webhook.field.related_model._meta.db_table}" w '
                f'ON w."id" = d."webhook_id"'
            ).fetchall()
        return {address: (status, attempts) for address, status, attempts in rows}


@pytest.fixture
def embedded(tmp_path: Path):
    stack = Embedded(tmp_path)
    yield stack
    stack.stop()


def _wait_until(condition, *, what: str, stack: Embedded) -> None:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen:\n{stack.logs()}"
        time.sleep(0.1)


def _send(port: int, to: str, subject: str) -> None:
    message = EmailMessage()
    message["From"] = "bob@example.net"
    message["To"] = to
    message["Subject"] = subject
    message.set_content(f"Sent to {to}.")
    with smtplib.SMTP("127.0.0.1", port, timeout=20) as smtp:
        assert smtp.send_message(message) == {}


@pytest.mark.timeout(180)
def test_the_embedded_default_delivers_signed_retries_and_fails(embedded, httpserver):
    receiver = Receiver({"/ok": [200], "/retry": [500, 200], "/fail": [422]})
    for path in receiver.answers:
        httpserver.expect_request(path, method="POST").respond_with_handler(receiver)

    embedded.manage("migrate", "--noinput", "-v", "0")
    web_port = free_port()
    web = embedded.start(
        "web",
        [
            sys.executable,
            "-m",
            "gunicorn",
            "conduit.wsgi",
            "--bind",
            f"127.0.0.1:{web_port}",
            "--workers",
            "1",
        ],
        ready=r"Booting worker",
    )
    ingress = embedded.start("ingress", ingress_argv(port=0), ready=INGRESS_READY)
    # The worker as bin/serve starts it: the default pool and concurrency.
    worker = embedded.start("worker", worker_argv("worker", pool=None), ready=WORKER_READY)
    web.wait_ready(timeout=60)
    smtp_port = int(ingress.wait_ready(timeout=60).group(1))
    worker.wait_ready(timeout=60)

    api = f"http://127.0.0.1:{web_port}/api/v1"
    credentials = {"email": "alice@example.com", "password": PASSWORD}
    assert requests.post(f"{api}/accounts", json=credentials, timeout=20).status_code == 201
    signed_in = requests.post(f"{api}/sessions", json=credentials, timeout=20)
    assert signed_in.status_code == 200, signed_in.text
    auth = {"Authorization": f"Bearer {signed_in.json()['access_token']}"}
    embedded.manage("domain_verify_dev", "example.test", "--account", "alice@example.com")
    webhooks = {}
    for local, path in (("inbox", "/ok"), ("flaky", "/retry"), ("bounce", "/fail")):
        created = requests.post(
            f"{api}/webhooks",
            json={"address": f"{local}@example.test", "target_url": httpserver.url_for(path)},
            headers=auth,
            timeout=20,
        )
        assert created.status_code == 201, created.text
        webhooks[path] = created.json()

    for local in ("inbox", "flaky", "bounce"):
        _send(smtp_port, f"{local}@example.test", f"Hello, {local}")

    def settled() -> bool:
        statuses = embedded.statuses()
        return len(statuses) == 3 and all(
            s in {"delivered", "failed"} for s, _ in statuses.values()
        )

    _wait_until(settled, what="all three deliveries settling", stack=embedded)

    assert embedded.statuses() == {
        "inbox@example.test": ("delivered", 1),
        "flaky@example.test": ("delivered", 2),
        "bounce@example.test": ("failed", 1),
    }
    assert {path: receiver.count(path) for path in receiver.answers} == {
        "/ok": 1,
        "/retry": 2,
        "/fail": 1,
    }
    # Signed with the webhook's secret, as any Standard Webhooks receiver checks it.
    [request] = receiver.seen["/ok"]
    payload = StandardWebhook(webhooks["/ok"]["secret"]).verify(
        receiver.bodies["/ok"][0], dict(request.headers)
    )
    assert payload["subject"] == "Hello, inbox"
    assert payload["from"]["address"] == "bob@example.net"
    # A retry is the same message again: same webhook-id, signed anew.
    first, second = receiver.seen["/retry"]
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    for body, request in zip(receiver.bodies["/retry"], receiver.seen["/retry"], strict=True):
        StandardWebhook(webhooks["/retry"]["secret"]).verify(body, dict(request.headers))

    def log_of(path: str) -> list[tuple[int | None, str]]:
        url = f"{api}/webhooks/{webhooks[path]['id']}/logs"
        listed = requests.get(url, headers=auth, timeout=20)
        assert listed.status_code == 200, listed.text
        return [(entry["http_status"], entry["sender"]) for entry in listed.json()]

    assert log_of("/ok") == [(200, "bob@example.net")]
    assert log_of("/retry") == [(200, "bob@example.net"), (500, "bob@example.net")]
    assert log_of("/fail") == [(422, "bob@example.net")]
