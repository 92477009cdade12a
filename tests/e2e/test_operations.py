"""The operator's side, on real processes: each kind's /metrics, /healthz and /readyz.

gunicorn (two workers), the ingress (two processes) and the worker run as the
Procfile starts them, configured from environment variables, against the test
database and a redis-server of the test's own. Every scrape is a real HTTP
request parsed with prometheus-client's own parser; the counts must be exact
across processes (multiprocess mode). Readiness fails when the test stops the
broker it owns or points a process at a database port nothing listens on.
"""

from __future__ import annotations

import json
import smtplib
import subprocess
import sys
import time
from datetime import timedelta
from email.message import EmailMessage
from pathlib import Path

import pytest
import requests
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from tests.delivery_fixtures import accept, wait_for
from tests.ingress.conftest import hook
from tests.ingress.processes import BASE_DIR, free_port, service_database_url
from webhooks.models import Delivery

pytestmark = pytest.mark.django_db(transaction=True)

TOKEN = "metrics-token-for-tests"


def scrape(url: str, *, token: str | None = None) -> dict[tuple, float]:
    """Every sample of a /metrics answer: (name, sorted labels) -> value."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = requests.get(url, headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict[tuple, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def wait_http(url: str, *, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            requests.get(url, timeout=5)
            return
        except (requests.ConnectionError, requests.Timeout):
            assert time.monotonic() < deadline, f"nothing answered at {url}"
            time.sleep(0.1)


def gunicorn(stack, name: str = "web", **env: str) -> str:
    """gunicorn with two workers, as the Procfile starts it; its base URL."""
    port = free_port()
    argv = [sys.executable, "-m", "gunicorn", "conduit.wsgi"]
    argv += ["--bind", f"127.0.0.1:{port}", "--workers", "2"]
    stack.spawn(name, argv, ready=r"Booting worker", **{"ALLOWED_HOSTS": "127.0.0.1", **env})
    base = f"http://127.0.0.1:{port}"
    wait_http(f"{base}/healthz")
    return base


def closed_port_database_url() -> str:
    return service_database_url(port=free_port())  # nothing listens there


def send_mail(port: int, *, to: str, subject: str) -> None:
    message = EmailMessage()
    message["From"] = "sender@sender.example"
    message["To"] = to
    message["Subject"] = subject
    message.set_content("Counted.")
    with smtplib.SMTP("127.0.0.1", port, local_hostname="sender.example", timeout=20) as smtp:
        smtp.send_message(message)


def manage(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


# --- web ------------------------------------------------------------------------------


def test_it_counts_api_requests_across_gunicorn_workers_and_reads_the_queue(
    stack, alice, alice_domain
):
    webhook = hook(alice, alice_domain, "http://127.0.0.1:9/hook", "inbox@alice.example")
    accepted = accept(webhook)
    # One delivery failed once and is due again for 30 s: due, retrying, its webhook failing.
    Delivery.objects.filter(id__in=accepted.delivery_ids).update(
        attempts=1, next_attempt_at=timezone.now() - timedelta(seconds=30)
    )
    base = gunicorn(stack, CONDUIT_METRICS_TOKEN=TOKEN)
    for _ in range(12):
        assert requests.get(f"{base}/api/v1/ping", timeout=5).status_code == 200
    assert requests.get(f"{base}/api/v1/nowhere", timeout=5).status_code == 404

    # Whichever worker answers a scrape, it reads every worker's counts.
    for _ in range(4):
        samples = scrape(f"{base}/metrics", token=TOKEN)
        assert value(samples, "conduit_api_requests_total", method="GET", status="200") == 12
        assert value(samples, "conduit_api_requests_total", method="GET", status="404") == 1
        assert value(samples, "conduit_api_request_seconds_count") == 13
    assert value(samples, "conduit_deliveries_due") == 1
    assert value(samples, "conduit_retries_pending") == 1
    assert value(samples, "conduit_webhooks_failing") == 1
    assert 29 <= value(samples, "conduit_oldest_due_delivery_age_seconds") < 120


def test_a_metrics_scrape_without_the_token_is_401(stack):
    base = gunicorn(stack, CONDUIT_METRICS_TOKEN=TOKEN)
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        response = requests.get(f"{base}/metrics", headers=headers, timeout=5)
        assert response.status_code == 401
        assert response.json()["code"] == "metrics_token_required"
        assert "CONDUIT_METRICS_TOKEN" in response.json()["error"]
        assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_web_readiness_fails_when_its_broker_stops(stack):
    base = gunicorn(stack)
    assert requests.get(f"{base}/healthz", timeout=5).json() == {"status": "alive"}
    ready = requests.get(f"{base}/readyz", timeout=10)
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"] == {"database": "ok", "broker": "ok"}

    stack.redis.stop()
    ready = requests.get(f"{base}/readyz", timeout=10)
    assert ready.status_code == 503
    assert ready.json()["code"] == "not_ready"
    assert ready.json()["failed"] == ["broker"]
    assert requests.get(f"{base}/healthz", timeout=5).status_code == 200  # still alive


def test_web_readiness_fails_when_its_database_is_down(stack):
    base = gunicorn(stack, DATABASE_URL=closed_port_database_url())
    ready = requests.get(f"{base}/readyz", timeout=10)
    assert ready.status_code == 503
    assert ready.json()["failed"] == ["database"]
    assert "database" in ready.json()["error"]
    assert requests.get(f"{base}/healthz", timeout=5).status_code == 200


# --- ingress and worker ----------------------------------------------------------------


def test_a_real_session_and_delivery_show_in_the_ingress_and_worker_metrics(
    stack, alice, alice_domain, httpserver
):
    httpserver.expect_request("/hook").respond_with_data("ok")
    hook(alice, alice_domain, httpserver.url_for("/hook"), "inbox@alice.example")
    ingress_port, worker_port = free_port(), free_port()
    ingress = stack.ingress(
        CONDUIT_INGRESS_PROCESSES="2", CONDUIT_INGRESS_METRICS_PORT=str(ingress_port)
    )
    worker = stack.worker(CONDUIT_WORKER_METRICS_PORT=str(worker_port))
    smtp_port = stack.ingress_port(ingress)
    stack.wait_ready(worker)
    wait_http(f"http://127.0.0.1:{worker_port}/healthz")

    for n in range(3):
        send_mail(smtp_port, to="inbox@alice.example", subject=f"Message {n}")
    wait_for(lambda: Delivery.objects.filter(status="delivered").count() == 3, timeout=30)

    ingress_samples = scrape(f"http://127.0.0.1:{ingress_port}/metrics")
    assert value(ingress_samples, "conduit_smtp_sessions_total") == 3
    assert (
        value(ingress_samples, "conduit_smtp_messages_total", outcome="accepted", code="250") == 3
    )
    assert value(ingress_samples, "conduit_smtp_accepted_bytes_total") > 3 * 100
    assert value(ingress_samples, "conduit_smtp_accept_seconds_count") == 3
    assert value(ingress_samples, "conduit_smtp_group_commit_size_sum") == 3

    # Counted when the attempt is recorded, a moment after the receiver saw it.
    def delivered() -> bool:
        samples = scrape(f"http://127.0.0.1:{worker_port}/metrics")
        return value(samples, "conduit_deliveries_total", outcome="delivered") == 3

    wait_for(delivered, timeout=10)
    worker_samples = scrape(f"http://127.0.0.1:{worker_port}/metrics")
    assert value(worker_samples, "conduit_delivery_attempt_seconds_count") == 3
    assert value(worker_samples, "conduit_smtp_messages_total", outcome="accepted", code="250") == 0

    for port in (ingress_port, worker_port):
        assert requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
        ready = requests.get(f"http://127.0.0.1:{port}/readyz", timeout=10)
        assert ready.status_code == 200, ready.text
    assert manage("worker_health", env=stack.env()).returncode == 0
    health = manage("ingress_health", "--port", str(smtp_port), env=stack.env())
    assert health.returncode == 0, health.stderr

    # The broker stops: the worker is no longer ready, and says why.
    stack.redis.stop()
    ready = requests.get(f"http://127.0.0.1:{worker_port}/readyz", timeout=10)
    assert ready.status_code == 503
    assert ready.json()["failed"] == ["broker"]
    unhealthy = manage("worker_health", env=stack.env())
    assert unhealthy.returncode == 1
    assert "broker" in unhealthy.stderr


def test_ingress_readiness_fails_when_its_database_is_down(stack):
    ingress_port = free_port()
    # The ingress starts without a database (it answers 451 until one is there).
    ingress = stack.ingress(
        DATABASE_URL=closed_port_database_url(),
        CONDUIT_INGRESS_METRICS_PORT=str(ingress_port),
        CONDUIT_INGRESS_STORE_TIMEOUT="2",
    )
    smtp_port = stack.ingress_port(ingress)
    ready = requests.get(f"http://127.0.0.1:{ingress_port}/readyz", timeout=10)
    assert ready.status_code == 503
    assert ready.json()["failed"] == ["database"]
    assert ready.json()["checks"]["smtp"] == "ok"
    health = manage("ingress_health", "--port", str(smtp_port), env=ingress_env(stack))
    assert health.returncode == 1
    assert "database" in health.stderr


def ingress_env(stack) -> dict:
    return stack.env(DATABASE_URL=closed_port_database_url())


def test_worker_health_fails_on_a_stale_heartbeat(stack, tmp_path: Path):
    heartbeat = tmp_path / "heartbeat"
    env = stack.env(CONDUIT_WORKER_HEARTBEAT_FILE=str(heartbeat))

    missing = manage("worker_health", env=env)
    assert missing.returncode == 1
    assert "no heartbeat" in missing.stderr

    heartbeat.write_text(f"{time.time() - 120:.3f}\n")
    stale = manage("worker_health", env=env)
    assert stale.returncode == 1
    assert "heartbeat: last heartbeat 12" in stale.stderr
    assert "(at most 60 s allowed)" in stale.stderr

    heartbeat.write_text(f"{time.time():.3f}\n")
    assert manage("worker_health", env=env).returncode == 0


def test_json_logs_carry_the_ids_of_a_failed_delivery(stack, alice, alice_domain, httpserver):
    httpserver.expect_request("/hook").respond_with_data("no", status=422)  # final: no retry
    webhook = hook(alice, alice_domain, httpserver.url_for("/hook"), "inbox@alice.example")
    ingress = stack.ingress(CONDUIT_LOG_FORMAT="json")
    worker = stack.worker(CONDUIT_LOG_FORMAT="json")
    smtp_port = stack.ingress_port(ingress)
    stack.wait_ready(worker)
    send_mail(smtp_port, to="inbox@alice.example", subject="Refused")
    wait_for(lambda: Delivery.objects.filter(status="failed").exists(), timeout=30)
    delivery = Delivery.objects.get()

    # Every line the ingress writes is a JSON object; its session line names the message.
    ingress_lines = [json.loads(line) for line in ingress.output().splitlines() if line]
    session = next(line for line in ingress_lines if line["message"].startswith("session "))
    assert session["message_id"] == str(delivery.message_id)
    assert {"time", "level", "logger", "message"} <= session.keys()

    def failed_line() -> dict | None:
        # Celery's start banner is printed, not logged: the log lines are the JSON ones.
        for line in worker.output().splitlines():
            if line.startswith("{") and "failed" in (entry := json.loads(line))["message"]:
                return entry
        return None

    wait_for(lambda: failed_line() is not None, timeout=10)
    line = failed_line()
    assert line["level"] == "WARNING"
    assert (line["delivery_id"], line["webhook_id"], line["message_id"]) == (
        str(delivery.id),
        str(webhook.id),
        str(delivery.message_id),
    )
    assert "HTTP 422" in line["message"]
