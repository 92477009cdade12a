"""End-to-end latency on the embedded default: SQLite and the file-system broker.

    .venv/bin/python bench/embedded.py [--tiny]

What `bin/serve` runs on a bare machine (no DATABASE_URL, no REDIS_URL): the
ingress, a Celery worker and beat on a SQLite file and the file-system broker
queue, all under a scratch CONDUIT_VAR_DIR, and a local HTTP sink. An open-loop
client sends one 10 KB message per SMTP session at a steady 5 messages/s; the
figure is the time from the 250 after DATA to the webhook request at the sink.
Needs neither PostgreSQL nor Redis.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

# Run as a script, bench/ would come first on sys.path and could shadow the apps.
sys.path[0] = str(Path(__file__).resolve().parent.parent)

from bench import harness  # noqa: E402

RATE = 5
SECONDS = 120.0
TARGET_P50_MS = 100
TARGET_P99_MS = 500


def embedded(bench: harness.Bench) -> None:
    """Point the benchmark's services (and this process) at the embedded default."""
    bench.database_url = ""
    bench.redis_url = ""


def main() -> None:
    args = harness.arguments(__doc__.splitlines()[0])
    bench = harness.Bench("embedded", tiny=args.tiny, out=args.out, keep_logs=args.keep_logs)
    embedded(bench)
    seconds = 2.0 if args.tiny else SECONDS

    harness.setup_django(bench)
    from django.core.management import call_command
    from django.db.models import Count

    from accounts.models import Account
    from domains.models import Domain
    from webhooks.models import Delivery, Webhook

    call_command("migrate", "--noinput", verbosity=0)
    arrivals = harness.Arrivals()
    with harness.terminate_cleanly(), harness.Services(bench) as services:
        sink = services.start("sink", [harness.PYTHON, "bench/sink.py"], on_line=arrivals.on_line)
        sink_port = int(sink.wait_for(r"listening on [\d.]+:(\d+)").group(1))
        account = Account.objects.create_user(email="bench@bench.example", password=None)
        domain = Domain.objects.create(account=account, name="bench.example", verified=True)
        Webhook.objects.create(
            account=account,
            domain=domain,
            address=harness.PIPELINE_RCPT,
            target_url=f"http://127.0.0.1:{sink_port}/hook",
            secret="whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        )
        ingress, port = services.ingress()
        worker = services.worker()
        services.beat()
        meter = harness.CpuMeter(
            {"ingress": ingress.pid, "worker": worker.pid, "sink": sink.pid}, {}
        )
        stack = harness.Stack(port, arrivals, meter)
        stack.offer(RATE, 1.0, "warmup")
        run = stack.offer(RATE, seconds, "steady")
        print(stack.describe(run, f"{RATE}/s for {seconds:g} s"), flush=True)
        everything = [tag for each in stack.runs for tag in each.sent]
        harness.wait_for_arrivals(everything, arrivals)
        lost_total = sum(1 for tag in everything if tag not in arrivals.first)
        # Read while the worker is still up: the broker folder it polls.
        idle_cpu = idle_cpu_percent(meter)

    statuses = dict(Delivery.objects.values_list("status").annotate(n=Count("id")))
    summary = run.summary(arrivals)
    report(summary, lost_total, idle_cpu)
    print(f"\nDelivery rows by status: {statuses}; duplicates at the sink: {arrivals.duplicates}")
    path = harness.write_results(
        bench,
        {
            "database": "sqlite",
            "broker": "filesystem",
            "steady": summary,
            "lost_total": lost_total,
            "duplicates": arrivals.duplicates,
            "idle_worker_cpu_percent": idle_cpu,
            "delivery_statuses": statuses,
            "targets": {"p50_ms_at_5": TARGET_P50_MS, "p99_ms_at_5": TARGET_P99_MS},
        },
    )
    chart(bench, summary)
    print(f"Wrote {path}")
    if lost_total:
        raise SystemExit(f"{lost_total} messages never reached the sink")


def idle_cpu_percent(meter: harness.CpuMeter, seconds: float = 2.0) -> float:
    """CPU the idle worker spends polling the broker folder, in % of one core."""
    before = meter.mark()
    time.sleep(seconds)
    after = meter.mark()
    used = sum(cpu - before["worker"].get(pid, 0.0) for pid, cpu in after["worker"].items())
    return 100 * used / seconds


def report(summary: dict, lost_total: int, idle_cpu: float) -> None:
    lat, cpu = summary["latency_ms"], summary["cpu_ms_per_msg"]
    print()
    print(
        harness.table(
            ["rate", "accepted", "lost", "p50 ms", "p95 ms", "p99 ms", "max ms", "CPU ms/msg"],
            [
                [
                    f"{summary['rate']:g}/s",
                    summary["accepted"],
                    summary["lost"],
                    lat["p50"],
                    lat["p95"],
                    lat["p99"],
                    lat["max"],
                    " / ".join(f"{k} {cpu.get(k, 0):.1f}" for k in ("ingress", "worker")),
                ]
            ],
        )
    )
    print()
    print(
        harness.table(
            ["", "measured", "target", ""],
            [
                [
                    f"p50 at {RATE}/s",
                    f"{lat['p50']:.1f} ms",
                    f"<= {TARGET_P50_MS} ms",
                    harness.verdict(lat["p50"] <= TARGET_P50_MS),
                ],
                [
                    f"p99 at {RATE}/s",
                    f"{lat['p99']:.1f} ms",
                    f"<= {TARGET_P99_MS} ms",
                    harness.verdict(lat["p99"] <= TARGET_P99_MS),
                ],
                ["messages lost", str(lost_total), "0", harness.verdict(lost_total == 0)],
                ["idle worker CPU", f"{idle_cpu:.1f} % of a core", "-", ""],
            ],
        )
    )


def chart(bench: harness.Bench, summary: dict) -> None:
    plt = harness.pyplot()
    if plt is None:
        return
    fig, ax = plt.subplots(figsize=(5, 4))
    keys = ("p50", "p95", "p99", "max")
    ax.bar(keys, [summary["latency_ms"][k] for k in keys])
    ax.axhline(TARGET_P99_MS, color="grey", linestyle="--", linewidth=1, label="p99 target")
    ax.axhline(TARGET_P50_MS, color="grey", linestyle=":", linewidth=1, label="p50 target")
    ax.set_ylabel("250 -> webhook at the sink (ms)")
    ax.set_title(f"Embedded default (SQLite + file broker), {RATE}/s")
    ax.legend()
    fig.tight_layout()
    fig.savefig(harness.chart_path(bench), dpi=110)
    print(f"Wrote {harness.chart_path(bench)}")


if __name__ == "__main__":
    main()
