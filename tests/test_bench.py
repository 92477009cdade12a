"""The benchmarks (bench/) run in tiny mode, so they don't rot.

Each script runs as a subprocess with this test run's DATABASE_URL/REDIS_URL;
it derives its own database (``<name>_bench``) and Redis db from them, starts
its own services and must stop them all. The numbers are not checked here
(they depend on the machine), only that every message and request was
accounted for.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import connection

from tests.delivery_fixtures import make_webhook
from webhooks import accept
from webhooks.models import InboundMessage

ROOT = Path(__file__).resolve().parent.parent
HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None


def run_bench(name: str, out: Path, *extra: str, chart: bool = True) -> dict:
    env = dict(os.environ)
    env.pop("BENCH_DATABASE_URL", None)
    env.pop("BENCH_REDIS_URL", None)
    proc = subprocess.run(
        [sys.executable, f"bench/{name}.py", "--tiny", "--out", str(out), *extra],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert proc.returncode == 0, f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    result = json.loads((out / f"{name}.json").read_text())
    assert result["benchmark"] == name
    assert result["mode"] == "tiny"
    if chart and HAS_MATPLOTLIB:
        assert (out / f"{name}.png").stat().st_size > 1000
    return result


def test_it_measures_the_ingress_against_a_bare_server(tmp_path: Path) -> None:
    # This very tree as the baseline checkout: another tree's ingress, its own
    # database, in the same rounds (one: each round's ratio is then the ratio).
    result = run_bench("ingress", tmp_path, "--baseline", str(ROOT), "--rounds", "1")
    levels = {row["connections"]: row for row in result["throughput"]}
    assert set(levels) == {1, 8, 32}
    for row in levels.values():
        assert row["bare_msgs_per_s"] > 0
        assert row["lean_msgs_per_s"] > 0
        assert row["conduit_msgs_per_s"] > 0
        assert row["baseline_msgs_per_s"] > 0
        assert row["ratio_baseline_rounds"] == pytest.approx([row["ratio_baseline"]] * 2)
        assert row["errors"] == 0
    assert result["baseline"] == str(ROOT)
    assert result["rounds"] == 1
    assert result["stored_messages"] > 0
    assert result["stored_messages"] == result["stored_deliveries"]
    assert result["memory"]["big_message"]["message_mb"] > 20
    assert result["memory"]["peak_rss_mb"] > 0


def test_it_counts_the_cpu_of_smtp_sessions_per_message(tmp_path: Path) -> None:
    result = run_bench("session_profile", tmp_path, chart=False)
    assert result["messages"] == 20
    assert result["ingress_cpu_ms_per_msg"] > 0
    assert result["backends_opened_meanwhile"] == 0


def test_it_measures_end_to_end_latency_and_loses_nothing(tmp_path: Path) -> None:
    result = run_bench("e2e", tmp_path)
    assert [run["rate"] for run in result["steady"]] == [20, 50]
    for run in result["steady"]:
        assert run["accepted"] > 0
        assert run["errors"] == 0
        assert run["delivered"] == run["accepted"]
        assert run["latency_ms"]["p50"] > 0
    assert result["lost_total"] == 0
    assert result["memory"]["worker"]["main_peak_mb"] > 0


def test_it_measures_the_embedded_default_and_loses_nothing(tmp_path: Path) -> None:
    result = run_bench("embedded", tmp_path)
    assert (result["database"], result["broker"]) == ("sqlite", "filesystem")
    run = result["steady"]
    assert run["rate"] == 5
    assert run["accepted"] > 0
    assert run["errors"] == 0
    assert run["delivered"] == run["accepted"]
    assert run["latency_ms"]["p50"] > 0
    assert result["lost_total"] == 0


def test_it_measures_the_api_under_gunicorn(tmp_path: Path) -> None:
    result = run_bench("api", tmp_path)
    names = [row["endpoint"] for row in result["endpoints"]]
    assert names[0] == "ping (reference)"
    assert any(name.startswith("listWebhooks") for name in names)
    assert sum(name.startswith("listDeliveryLogs") for name in names) == 2
    assert sum(name.startswith("listMessages") for name in names) == 2
    for row in result["endpoints"]:
        assert row["requests"] > 0
        assert row["latency_ms"]["p99"] > 0
    assert "Index" in result["page1_plan"]
    # Page 1 of an account's messages is read from its index, not sorted from a scan.
    assert "account_message_page_idx" in result["messages_page1_plan"]
    assert set(result["messages_page1_sql_ms"]) == {"big", "small"}


def test_it_measures_a_recovery_beside_live_mail(tmp_path: Path) -> None:
    result = run_bench("recover", tmp_path)
    recovery = result["recovery"]
    assert recovery["matched"] == result["failed_deliveries"] == 500
    assert recovery["seconds_to_all_queued"] is not None
    assert recovery["seconds_to_all_done"] is not None
    assert recovery["recovered_arrived_at_sink"] == 500
    for run in result["runs"].values():
        assert run["accepted"] > 0
        assert run["errors"] == 0
        assert run["delivered"] == run["accepted"]
    assert result["live_lost"] == 0


def test_it_measures_the_payload_build(tmp_path: Path) -> None:
    result = run_bench("payload", tmp_path)
    assert len(result["builds"]) == 3
    for row in result["builds"]:
        assert row["us_per_build"] > 0
    assert result["big_message"]["message_mb"] > 4
    assert result["big_message"]["peak_mb"] > 0


@pytest.mark.parametrize(
    ("database_url", "redis_url", "bench_database", "bench_redis"),
    [
        (
            "postgres://postgres@127.0.0.1:5432/conduit",
            "redis://127.0.0.1:6379/15",
            "postgres://postgres@127.0.0.1:5432/conduit_bench",
            "redis://127.0.0.1:6379/14",
        ),
        (
            "postgres://u:p@db:5433/ci?sslmode=disable",
            "redis://cache:6379/3",
            "postgres://u:p@db:5433/ci_bench?sslmode=disable",
            "redis://cache:6379/4",
        ),
    ],
)
def test_it_derives_its_own_database_and_redis_db(
    monkeypatch: pytest.MonkeyPatch,
    database_url: str,
    redis_url: str,
    bench_database: str,
    bench_redis: str,
) -> None:
    from bench import harness

    monkeypatch.delenv("BENCH_DATABASE_URL", raising=False)
    monkeypatch.delenv("BENCH_REDIS_URL", raising=False)
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("REDIS_URL", redis_url)
    assert harness.bench_database_url() == bench_database
    assert harness.bench_redis_url() == bench_redis


def test_its_own_connections_leave_out_what_only_django_reads() -> None:
    from bench import harness

    url = "postgres://postgres@127.0.0.1:5432/x_bench?prepare_threshold=5&sslmode=prefer"
    assert harness._libpq_url(url) == "postgres://postgres@127.0.0.1:5432/x_bench?sslmode=prefer"


# --- What the benchmarks led to ---------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"Subject: a\r\nMessage-ID: <m1@x>\r\n\r\nbody\r\n", "<m1@x>"),
        (b"Message-ID: <m2@x>\n\nbody\n", "<m2@x>"),
        (b"Message-ID: <m3@x>\r\n", "<m3@x>"),
        # A Message-ID line in the body is not a header.
        (b"Subject: a\r\n\r\nMessage-ID: <body@x>\r\n", ""),
        (b"Subject: a\n\nMessage-ID: <body@x>\r\n\r\n", ""),
    ],
)
def test_it_reads_the_message_id_from_the_header_block_only(raw: bytes, expected: str) -> None:
    assert accept.message_id_and_subject(raw)[0] == expected


@pytest.mark.django_db
def test_it_stores_a_large_message_byte_for_byte(alice, alice_domain) -> None:
    webhook = make_webhook(alice, alice_domain, "http://127.0.0.1:9/")
    raw = b"Subject: big\r\n\r\n" + bytes(range(256)) * (accept.BINARY_RAW_BYTES // 200)
    assert len(raw) > accept.BINARY_RAW_BYTES
    accepted = accept.message_accept(
        raw=raw,
        mail_from="sender@example.net",
        recipients={webhook.id: [webhook.address]},
        accounts={webhook.id: webhook.account_id},
        client_ip="192.0.2.10",
        helo="mail.example.net",
        message_id_header="",
    )
    stored = InboundMessage.objects.get(id=accepted.message_id)
    assert bytes(stored.raw) == raw
    assert stored.size == len(raw)


@pytest.mark.django_db(transaction=True)
def test_it_keeps_the_worker_database_connection_between_tasks() -> None:
    """Celery's Django fixup used to close it around every task (see CELERY_DB_REUSE_MAX)."""
    from celery.fixups.django import DjangoWorkerFixup

    from conduit.celery import app
    from webhooks.tasks import deliver_task

    fixup = DjangoWorkerFixup(app)
    connection.ensure_connection()
    before = connection.connection
    for _ in range(3):  # before and after a task, three times
        fixup.on_task_prerun(sender=deliver_task)
        fixup.on_task_postrun(sender=deliver_task)
    assert connection.connection is before
