"""A recovery of 100,000 failed deliveries while live mail keeps arriving.

    .venv/bin/python bench/recover.py [--tiny]

The issue's target: recover 100,000 failed deliveries, all queued within 60 s,
while mail arriving at 50/s keeps its end-to-end p99 within 2x of the idle
figure.

Set-up: 100,000 failed deliveries (10 attempts, last error HTTP 503) to one
webhook, COPY-inserted with their messages (raw MIME kept in the database, 2 KB
each, Subject ``rec-<n>``) and the account's rows, created over the last ~1.5
hours. Then the pipeline of bench/e2e.py (the sink, ingress, `celery -A
conduit worker` as it starts by default, beat) and gunicorn (one worker) for
the API. Live mail (10 KB, one SMTP session per message) goes to the same
webhook as the recovered deliveries: the receiver that was down is back.

1. No recovery: 50 messages/s for 60 s, open loop; the 250 -> webhook times.
2. createRecovery for the webhook (``since`` the oldest, failed by default) over
   the API, then the same 50/s for 60 s while it runs, getRecovery polled every
   second for ``queued`` and ``done``. The polling goes on (without mail) until
   every delivery is done or 300 s have passed since the recovery started.

Reported: the p99 of each mail run, the time until all matched deliveries
were queued and until all were done, and what the sink received.
"""

from __future__ import annotations

import http.client
import json
import os
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

# Run as a script, bench/ would come first on sys.path and could shadow the apps.
sys.path[0] = str(Path(__file__).resolve().parent.parent)

from bench import harness  # noqa: E402
from bench.smtpload import make_message  # noqa: E402

FAILED = 100_000
RAW_SIZE = 2 * 1024
RATE = 50
MAIL_SECONDS = 60.0
CAP_SECONDS = 300.0  # from the recovery's start; how long the polling may go on
POLL_SECONDS = 1.0
TARGET_QUEUED_S = 60.0
TARGET_P99_RATIO = 2.0
TAG = "rec"


def insert_failed(webhook: object, count: int) -> datetime:
    """``count`` failed deliveries to ``webhook``, oldest first, one every
    50 ms up to a minute ago, each with its message (raw kept) and the
    account's row; the time of the oldest."""
    from accounts.models import Account
    from webhooks.models import AccountMessage, Delivery, InboundMessage

    now = datetime.now(UTC) - timedelta(minutes=1)
    ids = [uuid.uuid4() for _ in range(count)]
    times = [now - timedelta(milliseconds=50 * (count - i)) for i in range(count)]
    rcpt = json.dumps([harness.PIPELINE_RCPT])
    raws = (
        make_message(tag=f"{TAG}-{i}", rcpt=harness.PIPELINE_RCPT, size=RAW_SIZE)
        for i in range(count)
    )
    harness.copy_rows(
        InboundMessage,
        (
            {
                "id": ids[i],
                "received_at": times[i],
                "mail_from": "sender@bench.example",
                "rcpt_to": rcpt,
                "raw": raw,
                "size": len(raw),
                "message_id_header": f"<{TAG}-{i}@bench.example>",
                "subject": f"{TAG}-{i}",
                "dkim_domains": "[]",
            }
            for i, raw in enumerate(raws)
        ),
    )
    harness.copy_rows(
        Delivery,
        (
            {
                "id": uuid.uuid4(),
                "message_id": ids[i],
                "webhook_id": webhook.id,
                "rcpt_to": rcpt,
                "status": "failed",
                "attempts": 10,
                "last_error": "HTTP 503",
                "created_at": times[i],
                "updated_at": times[i],
            }
            for i in range(count)
        ),
    )
    harness.copy_rows(
        AccountMessage,
        (
            {
                "id": uuid.uuid4(),
                "account_id": webhook.account_id,
                "message_id": ids[i],
                "received_at": times[i],
            }
            for i in range(count)
        ),
    )
    Account.objects.filter(id=webhook.account_id).update(message_count=count)
    return times[0]


class Api:
    """The few calls made: createRecovery, getRecovery, cancelRecovery."""

    def __init__(self, port: int, token: str, webhook_id: uuid.UUID) -> None:
        self.port = port
        self.token = token
        self.base = f"/api/v1/webhooks/{webhook_id}/recoveries"

    def call(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
            data = None
            if body is not None:
                data = json.dumps(body).encode()
                headers["Content-Type"] = "application/json"
            conn.request(method, path, body=data, headers=headers)
            response = conn.getresponse()
            return response.status, json.loads(response.read() or b"{}")
        finally:
            conn.close()

    def create(self, since: datetime) -> dict:
        status, body = self.call("POST", self.base, {"since": since.isoformat()})
        if status != 201:
            raise RuntimeError(f"createRecovery: HTTP {status}: {body}")
        return body

    def get(self, recovery_id: str) -> dict:
        status, body = self.call("GET", f"{self.base}/{recovery_id}")
        if status != 200:
            raise RuntimeError(f"getRecovery: HTTP {status}: {body}")
        return body

    def cancel(self, recovery_id: str) -> None:
        self.call("POST", f"{self.base}/{recovery_id}/cancel")


class Progress(threading.Thread):
    """getRecovery every POLL_SECONDS from the start: (seconds, state, queued, done)."""

    def __init__(self, api: Api, recovery_id: str, started: float, matched: int) -> None:
        super().__init__(name="recovery-progress", daemon=True)
        self.api = api
        self.recovery_id = recovery_id
        self.started = started
        self.matched = matched
        self.samples: list[tuple[float, str, int, int]] = []
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                body = self.api.get(self.recovery_id)
                at = time.monotonic() - self.started
                self.samples.append((at, body["state"], body["queued"], body["done"]))
                if body["done"] >= self.matched or body["state"] == "cancelled":
                    return
                self.stop.wait(POLL_SECONDS)
        except BaseException as exc:  # reported by the main thread
            self.error = exc

    def first(self, reached: int, index: int) -> float | None:
        """Seconds until queued (index 2) or done (index 3) first reached ``reached``."""
        return next((s[0] for s in self.samples if s[index] >= reached), None)

    def at(self, seconds: float) -> tuple[float, str, int, int] | None:
        """The last sample taken within ``seconds`` of the start."""
        within = [s for s in self.samples if s[0] <= seconds]
        return within[-1] if within else None


def main() -> None:
    args = harness.arguments(__doc__.splitlines()[0])
    bench = harness.Bench("recover", tiny=args.tiny, out=args.out, keep_logs=args.keep_logs)
    failed = 500 if args.tiny else FAILED
    seconds = 3.0 if args.tiny else MAIL_SECONDS
    cap = 60.0 if args.tiny else CAP_SECONDS

    harness.prepare_database(bench)
    harness.claim_redis(bench)
    harness.setup_django(bench)
    from django.conf import settings
    from django.db.models import Count

    from accounts.services import api_token_create
    from webhooks import recovery
    from webhooks.models import Delivery

    oldest: list[datetime] = []

    def prepare(webhook: object) -> None:
        started = time.monotonic()
        oldest.append(insert_failed(webhook, failed))
        print(f"Inserted {failed:,} failed deliveries in {time.monotonic() - started:.1f} s")

    arrivals = harness.Arrivals()
    loadavg: dict[str, tuple[float, float, float]] = {}
    with harness.terminate_cleanly(), harness.Services(bench) as services:
        stack = harness.start_pipeline(services, arrivals, prepare=prepare)
        webhook = stack.webhook
        _gunicorn, api_port = services.gunicorn(workers=1)
        token = api_token_create(
            account=webhook.account, name="bench", expires_in=None, allowed_ips=[], ip=None
        ).token
        api = Api(api_port, token, webhook.id)

        stack.offer(20, 1.0, "warmup")  # connections, caches
        loadavg["before"] = os.getloadavg()
        idle = stack.offer(RATE, seconds, "idle")
        print(stack.describe(idle, f"no recovery, {RATE}/s for {seconds:g} s"), flush=True)
        time.sleep(1)

        loadavg["recovery_start"] = os.getloadavg()
        started = time.monotonic()
        job = api.create(oldest[0] - timedelta(minutes=1))
        progress = Progress(api, job["id"], started, job["matched"])
        progress.start()
        during = stack.offer(RATE, seconds, "during")
        print(stack.describe(during, f"recovery running, {RATE}/s for {seconds:g} s"), flush=True)
        loadavg["mail_end"] = os.getloadavg()
        progress.join(max(0.0, cap - (time.monotonic() - started)))
        progress.stop.set()
        progress.join(10)
        if progress.error is not None:
            raise progress.error
        final = api.get(job["id"])
        if final["state"] == "running":
            api.cancel(job["id"])
        loadavg["end"] = os.getloadavg()
        harness.wait_for_arrivals(stack.accepted_tags(), arrivals)
        live_lost = sum(1 for tag in stack.accepted_tags() if tag not in arrivals.first)

    recovered_arrived = sum(1 for tag in arrivals.first if tag.startswith(f"{TAG}-"))
    statuses = dict(Delivery.objects.values_list("status").annotate(n=Count("id")))
    matched = job["matched"]
    queued_after = progress.first(matched, 2)
    done_after = progress.first(matched, 3)
    at_target = progress.at(TARGET_QUEUED_S)
    runs = {"idle": idle.summary(arrivals), "during": during.summary(arrivals)}
    p99_idle = runs["idle"]["latency_ms"]["p99"]
    p99_during = runs["during"]["latency_ms"]["p99"]
    result = {
        "failed_deliveries": failed,
        "raw_bytes": RAW_SIZE,
        "live_message_bytes": harness.PIPELINE_MESSAGE_SIZE,
        "rate": RATE,
        "mail_seconds": seconds,
        "cap_seconds": cap,
        "runs": runs,
        "recovery": {
            "matched": matched,
            "final": {k: final[k] for k in ("state", "queued", "done")},
            "seconds_to_all_queued": queued_after,
            "seconds_to_all_done": done_after,
            "at_60s": None
            if at_target is None
            else {"seconds": at_target[0], "queued": at_target[2], "done": at_target[3]},
            "samples": progress.samples,
            "recovered_arrived_at_sink": recovered_arrived,
            "pacing": {
                "QUEUE_BATCH": recovery.QUEUE_BATCH,
                "CONDUIT_RECOVERY_RATE": settings.CONDUIT_RECOVERY_RATE,
                "BACKLOG": recovery.BACKLOG,
                "STEP_PAUSE": recovery.STEP_PAUSE,
                "BACKLOGGED_PAUSE": recovery.BACKLOGGED_PAUSE,
            },
        },
        "live_lost": live_lost,
        "duplicates": arrivals.duplicates,
        "delivery_statuses": statuses,
        "loadavg": loadavg,
        "targets": {"all_queued_s": TARGET_QUEUED_S, "p99_ratio": TARGET_P99_RATIO},
    }
    report(result, p99_idle, p99_during)
    print(f"\nDelivery rows by status: {statuses}; duplicates at the sink: {arrivals.duplicates}")
    path = harness.write_results(bench, result)
    chart(bench, result)
    print(f"Wrote {path}")
    if live_lost:
        raise SystemExit(f"{live_lost} live messages never reached the sink")


def report(result: dict, p99_idle: float, p99_during: float) -> None:
    rows = []
    for label, key in (("no recovery", "idle"), ("recovery running", "during")):
        r = result["runs"][key]
        lat, cpu = r["latency_ms"], r["cpu_ms_per_msg"]
        rows.append(
            [
                label,
                r["accepted"],
                r["lost"],
                lat["p50"],
                lat["p95"],
                lat["p99"],
                lat["max"],
                r["smtp_session_ms"]["p99"],
                " / ".join(
                    f"{cpu.get(k, 0):.1f}"
                    for k in ("ingress", "worker", "sink", "postgres", "client")
                ),
            ]
        )
    print()
    print(
        harness.table(
            [
                f"mail at {result['rate']}/s, {result['mail_seconds']:g} s",
                "accepted",
                "lost",
                "p50 ms",
                "p95 ms",
                "p99 ms",
                "max ms",
                "SMTP session p99 ms",
                "CPU ms/msg: ingress / worker / sink / postgres / client",
            ],
            rows,
        )
    )
    rec = result["recovery"]

    def seconds(value: float | None) -> str:
        return f"{value:.1f} s" if value is not None else f"not within {result['cap_seconds']:g} s"

    at60 = rec["at_60s"] or {"queued": 0, "done": 0}
    print()
    print(
        harness.table(
            ["recovery", "value"],
            [
                ["failed deliveries matched", f"{rec['matched']:,}"],
                ["queued after 60 s", f"{at60['queued']:,}"],
                ["done after 60 s", f"{at60['done']:,}"],
                ["all queued after", seconds(rec["seconds_to_all_queued"])],
                ["all done after", seconds(rec["seconds_to_all_done"])],
                [
                    "at the end",
                    f"{rec['final']['state']}: {rec['final']['queued']:,} queued, "
                    f"{rec['final']['done']:,} done",
                ],
                ["recovered deliveries at the sink", f"{rec['recovered_arrived_at_sink']:,}"],
            ],
        )
    )
    queued_after = rec["seconds_to_all_queued"]
    ratio = p99_during / p99_idle if p99_idle else float("inf")
    print()
    print(
        harness.table(
            ["", "measured", "target", ""],
            [
                [
                    f"all {rec['matched']:,} queued",
                    seconds(queued_after),
                    f"<= {TARGET_QUEUED_S:g} s",
                    harness.verdict(queued_after is not None and queued_after <= TARGET_QUEUED_S),
                ],
                [
                    f"p99 at {result['rate']}/s, recovery running / none",
                    f"{p99_during:.1f} / {p99_idle:.1f} ms = {ratio:.1f}x",
                    f"<= {TARGET_P99_RATIO:g}x",
                    harness.verdict(ratio <= TARGET_P99_RATIO),
                ],
                [
                    "live messages lost",
                    str(result["live_lost"]),
                    "0",
                    harness.verdict(result["live_lost"] == 0),
                ],
            ],
        )
    )
    load = result["loadavg"]
    print(
        "\nLoad average (1 min) before / at the recovery's start / end of mail / end: "
        + " / ".join(f"{load[k][0]:.2f}" for k in ("before", "recovery_start", "mail_end", "end"))
    )


def chart(bench: harness.Bench, result: dict) -> None:
    plt = harness.pyplot()
    if plt is None:
        return
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    samples = result["recovery"]["samples"]
    left.plot([s[0] for s in samples], [s[2] for s in samples], label="queued")
    left.plot([s[0] for s in samples], [s[3] for s in samples], label="done")
    left.axhline(result["recovery"]["matched"], color="grey", linewidth=1)
    left.axvline(TARGET_QUEUED_S, color="grey", linestyle="--", linewidth=1, label="60 s")
    left.set_xlabel("seconds since createRecovery")
    left.set_ylabel("deliveries")
    left.legend()
    runs = result["runs"]
    labels = ["no recovery", "recovery running"]
    xs = range(len(labels))
    for k, key in enumerate(("p50", "p99")):
        right.bar(
            [x + (k - 0.5) * 0.35 for x in xs],
            [runs[name]["latency_ms"][key] for name in ("idle", "during")],
            0.35,
            label=key,
        )
    right.set_xticks(list(xs), labels)
    right.set_yscale("log")
    right.set_ylabel(f"250 -> webhook at {result['rate']}/s (ms, log)")
    right.legend()
    fig.suptitle("Recovering failed deliveries while mail arrives")
    fig.tight_layout()
    fig.savefig(harness.chart_path(bench), dpi=110)
    print(f"Wrote {harness.chart_path(bench)}")


if __name__ == "__main__":
    main()
