"""The operator's surface in the test process: who may scrape the web's /metrics, the
probes' shapes, the counters the hot paths call, the JSON log lines and Sentry.

The same endpoints on real gunicorn, ingress and worker processes are in
tests/e2e/test_operations.py."""

from __future__ import annotations

import gzip
import json
import logging
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from conduit import health, metrics
from conduit.logs import JsonFormatter, log_ids
from conduit.opsserver import OpsServer
from tests.ingress.processes import BASE_DIR, service_env


@pytest.mark.parametrize(
    ("argv", "kind"),
    [
        (["/app/.venv/bin/gunicorn", "conduit.wsgi"], "web"),
        (["/usr/lib/python3/site-packages/gunicorn/__main__.py", "conduit.wsgi"], "web"),
        (["/app/.venv/bin/celery", "-A", "conduit", "worker", "--loglevel=INFO"], "worker"),
        (["/app/celery/__main__.py", "-A", "conduit", "worker"], "worker"),
        (["/app/.venv/bin/celery", "-A", "conduit", "beat"], None),
        (["/app/.venv/bin/celery", "-A", "conduit", "inspect", "ping"], None),
        (["manage.py", "ingress", "--port", "2525"], "ingress"),
        (["manage.py", "ingress_health"], None),
        (["manage.py", "shell"], None),
        (["/app/.venv/bin/pytest", "tests"], None),
    ],
)
def test_it_knows_each_process_kind_from_its_command_line(argv, kind):
    assert metrics.process_kind(argv) == kind


def test_it_removes_the_files_of_dead_processes_only(tmp_path: Path):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    dead_pid = int(dead.stdout)
    live_pid = 1  # init: always running
    for name in (f"counter_{dead_pid}.db", f"histogram_{live_pid}.db", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    metrics.remove_dead_files(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"histogram_{live_pid}.db", "notes.txt"]


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_the_ingress_counts_a_reply_by_outcome_and_code_and_times_an_acceptance():
    before = (
        sample("conduit_smtp_messages_total", outcome="accepted", code="250"),
        sample("conduit_smtp_messages_total", outcome="deferred", code="451"),
        sample("conduit_smtp_accepted_bytes_total"),
        sample("conduit_smtp_accept_seconds_count"),
    )
    started = time.perf_counter()
    metrics.smtp_message_answered("250 2.0.0 Ok: queued as abc", size=1234, started=started)
    metrics.smtp_message_answered("451 4.3.0 Try again later", size=99, started=started)
    after = (
        sample("conduit_smtp_messages_total", outcome="accepted", code="250"),
        sample("conduit_smtp_messages_total", outcome="deferred", code="451"),
        sample("conduit_smtp_accepted_bytes_total"),
        sample("conduit_smtp_accept_seconds_count"),
    )
    assert [b - a for a, b in zip(before, after, strict=True)] == [1, 1, 1234, 1]


def test_a_delivery_attempt_is_counted_by_what_it_led_to():
    before = sample("conduit_deliveries_total", outcome="retrying")
    metrics.delivery_attempted(status="pending", duration_ms=250)
    assert sample("conduit_deliveries_total", outcome="retrying") == before + 1


# --- the web's endpoints ------------------------------------------------------------


def test_metrics_answers_loopback_without_a_token(client, db):
    client.get("/api/v1/ping")
    response = client.get("/metrics", REMOTE_ADDR="127.0.0.1")
    assert response.status_code == 200
    names = {family.name for family in text_string_to_metric_families(response.text)}
    assert {"conduit_api_requests", "conduit_deliveries_due", "conduit_smtp_messages"} <= names


def test_a_metrics_scrape_from_elsewhere_without_the_token_is_401(client, db):
    response = client.get("/metrics", REMOTE_ADDR="203.0.113.9")
    assert response.status_code == 401
    assert response.json()["code"] == "metrics_token_required"
    assert "CONDUIT_METRICS_TOKEN" in response.json()["error"]


def test_with_a_token_set_even_loopback_needs_it(client, db, settings):
    settings.CONDUIT_METRICS_TOKEN = "s3cret"
    assert client.get("/metrics").status_code == 401
    wrong = client.get("/metrics", headers={"Authorization": "Bearer s3cre"})
    assert wrong.status_code == 401
    assert wrong.json()["code"] == "metrics_token_required"
    good = client.get("/metrics", headers={"Authorization": "Bearer s3cret"})
    assert good.status_code == 200


def test_the_probes_answer_before_host_checks_and_only_to_get(client, db):
    response = client.get("/healthz", HTTP_HOST="10.1.2.3:8000")  # a pod's address
    assert response.status_code == 200
    assert response.json() == {"status": "alive"}
    refused = client.post("/healthz")
    assert refused.status_code == 405
    assert refused.json()["code"] == "method_not_allowed"


def test_readiness_names_the_checks(client, db):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "checks": {"database": "ok", "broker": "ok"}}


# --- checks ---------------------------------------------------------------------------


def test_a_heartbeat_is_recent_stale_or_missing(tmp_path: Path):
    beat = tmp_path / "heartbeat"
    assert not health.check_heartbeat(beat, max_age=60).ok
    health.write_heartbeat(beat)
    assert health.check_heartbeat(beat, max_age=60).ok
    stale = health.check_heartbeat(beat, max_age=60, now=time.time() + 90)
    assert not stale.ok
    assert "at most 60 s" in stale.detail


def test_a_check_that_hangs_is_given_up_on():
    started = time.monotonic()
    check = health._bounded("slow", lambda: time.sleep(5) or "ok", 0.2)
    assert time.monotonic() - started < 1
    assert (check.ok, check.detail) == (False, "no answer in 0.2 s")


# --- logs -----------------------------------------------------------------------------


def test_a_json_log_line_carries_the_ids_it_was_given():
    record = logging.LogRecord(
        "conduit.delivery", logging.WARNING, __file__, 1, "Attempt %d failed", (2,), None
    )
    record.__dict__.update(log_ids(delivery_id="d1", webhook_id="w1", message_id=None))
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "Attempt 2 failed"
    assert line["level"] == "WARNING"
    assert line["logger"] == "conduit.delivery"
    assert line["time"].endswith("Z")
    assert (line["delivery_id"], line["webhook_id"]) == ("d1", "w1")
    assert "message_id" not in line


def run_manage(args: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=BASE_DIR,
        env=service_env(database_url=None, redis_url=None, var_dir=tmp_path, **env),
        capture_output=True,
        text=True,
        timeout=60,
    )


LOG_AN_ERROR = (
    "import logging; logging.getLogger('conduit.delivery').error('boom', "
    "extra={'delivery_id': 'd-42'})"
)


def test_with_the_json_format_every_line_is_a_json_object(tmp_path: Path):
    result = run_manage(["shell", "-c", LOG_AN_ERROR], tmp_path, CONDUIT_LOG_FORMAT="json")
    lines = [json.loads(line) for line in result.stderr.splitlines() if line.strip()]
    assert {"level": "ERROR", "message": "boom", "delivery_id": "d-42"}.items() <= lines[-1].items()


def test_errors_go_to_sentry_when_a_dsn_is_set(tmp_path: Path, httpserver):
    httpserver.expect_request("/api/1/envelope/", method="POST").respond_with_data("{}")
    dsn = f"http://public@127.0.0.1:{httpserver.port}/1"
    result = run_manage(["shell", "-c", LOG_AN_ERROR], tmp_path, SENTRY_DSN=dsn)
    assert result.returncode == 0, result.stderr
    events = [request.get_data() for request, _ in httpserver.log]
    assert events, result.stderr
    assert any(b"boom" in gzip.decompress(event) for event in events)


def test_a_dsn_without_the_sdk_stops_the_start_saying_how_to_install_it(tmp_path: Path):
    # A sentry_sdk that cannot be imported, ahead of the installed one.
    shadow = tmp_path / "shadow" / "sentry_sdk"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('No module named sentry_sdk')\n")
    result = run_manage(
        ["check"],
        tmp_path,
        SENTRY_DSN="http://public@127.0.0.1:9/1",
        PYTHONPATH=str(tmp_path / "shadow"),
    )
    assert result.returncode != 0
    assert "SENTRY_DSN is set but the Sentry SDK cannot be imported" in result.stderr
    assert "pip install 'conduit[sentry]'" in result.stderr


# --- the ingress's and worker's port ---------------------------------------------------


@pytest.fixture
def ops_server():
    server = OpsServer(
        host="127.0.0.1",
        port=0,
        ready=lambda: [health.Check("smtp", True), health.Check("database", False, "refused")],
        token="s3cret",
    ).start()
    yield f"http://127.0.0.1:{server.port}"
    server.stop()


def test_the_ops_port_needs_the_token_for_metrics_when_one_is_set(ops_server):
    refused = requests.get(f"{ops_server}/metrics", timeout=5)
    assert refused.status_code == 401
    assert refused.json()["code"] == "metrics_token_required"
    scraped = requests.get(
        f"{ops_server}/metrics", headers={"Authorization": "Bearer s3cret"}, timeout=5
    )
    assert scraped.status_code == 200
    names = {family.name for family in text_string_to_metric_families(scraped.text)}
    assert "conduit_deliveries" in names


def test_the_ops_port_probes_need_no_token_and_name_what_failed(ops_server):
    assert requests.get(f"{ops_server}/healthz", timeout=5).json() == {"status": "alive"}
    assert requests.head(f"{ops_server}/healthz", timeout=5).status_code == 200
    ready = requests.get(f"{ops_server}/readyz", timeout=5)
    assert ready.status_code == 503
    assert ready.json()["failed"] == ["database"]
    assert ready.json()["checks"] == {"smtp": "ok", "database": "refused"}
    missing = requests.get(f"{ops_server}/nothing", timeout=5)
    assert (missing.status_code, missing.json()["code"]) == (404, "not_found")
