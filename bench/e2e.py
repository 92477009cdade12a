"""End-to-end latency: from the 250 after DATA to the webhook request at an HTTP sink.

    .venv/bin/python bench/e2e.py [--tiny]

Runs the ingress, a Celery worker with the default configuration (`celery -A
conduit worker`: one process, a pool of threads, acks late), beat
(the sweep) and a local HTTP sink. An open-loop client starts one SMTP session
per message (10 KB, one per connection) at a steady 20, 50 and 100 messages/s;
each message's Subject is its tag, which the sink reports with its arrival
time. Every message is counted: one that never reaches the sink is lost. The
full mode also searches for the highest rate held for 60 s with p99 under 1 s.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

# Run as a script, bench/ would come first on sys.path and could shadow the apps.
sys.path[0] = str(Path(__file__).resolve().parent.parent)

from bench import harness  # noqa: E402
from bench.smtpload import SmtpReplyError, make_message, send_one  # noqa: E402

RCPT = "inbox@bench.example"
MESSAGE_SIZE = 10 * 1024
STEADY_RATES = (20, 50, 100)
STEADY_SECONDS = 30.0
SUSTAIN_SECONDS = 60.0
SUSTAIN_P99_S = 1.0
TARGET_P50_MS = 50
TARGET_P99_MS = 250
TARGET_SUSTAINED = 200


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

    def held(self, arrivals: Arrivals) -> bool:
        return (
            not self.gave_up
            and self.errors == 0
            and self.lost(arrivals) == 0
            and self.achieved_rate >= 0.95 * self.rate
            and harness.percentile(self.latencies(arrivals), 99) < SUSTAIN_P99_S
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
            "latency_ms": harness.summary_ms(latencies),
            "smtp_session_ms": harness.summary_ms(self.smtp_seconds),
            "cpu_ms_per_msg": self.cpu_ms_per_msg,
        }


async def _offer(
    port: int, run: Run, prefix: str, arrivals: Arrivals, give_up_after: float | None
) -> None:
    """Open loop: message i starts at t0 + i/rate, whatever the server's pace.

    With ``give_up_after``, stops early once more than 1 % of the run's messages
    took longer than that (a p99 under it is then out of reach).
    """
    loop = asyncio.get_running_loop()
    count = int(run.rate * run.seconds)
    t0 = loop.time() + 0.05
    first_error: list[BaseException] = []

    async def one(i: int) -> None:
        tag = f"{prefix}-{i}"
        message = make_message(tag=tag, rcpt=RCPT, size=MESSAGE_SIZE)
        try:
            sent = await send_one(
                "127.0.0.1", port, mail_from="sender@bench.example", rcpt=RCPT, message=message
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
    """The running stack: where to send, where arrivals come in, what CPU is used."""

    def __init__(self, port: int, arrivals: Arrivals, meter: harness.CpuMeter) -> None:
        self.port = port
        self.arrivals = arrivals
        self.meter = meter
        self.runs: list[Run] = []

    def offer(
        self, rate: float, seconds: float, prefix: str, give_up_after: float | None = None
    ) -> Run:
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
        lat = harness.summary_ms(run.latencies(self.arrivals))
        return (
            f"  {label}: {len(run.sent)} messages, achieved {run.achieved_rate:.1f}/s, "
            f"p50 {lat['p50']:.1f} ms, p99 {lat['p99']:.1f} ms, max {lat['max']:.0f} ms, "
            f"not arrived {run.lost(self.arrivals)}"
        )

    def sustained(self, seconds: float) -> tuple[float, list[Run]]:
        """The highest of a few rates held for ``seconds`` with p99 under 1 s, none lost."""
        tried: list[Run] = []
        best = 0.0

        def attempt(rate: float) -> bool:
            nonlocal best
            run = self.offer(rate, seconds, f"sustain{rate:g}", give_up_after=SUSTAIN_P99_S)
            tried.append(run)
            ok = run.held(self.arrivals)
            verdict = "held" if ok else "not held" + (" (stopped early)" if run.gave_up else "")
            print(self.describe(run, f"sustain {rate:g}/s") + f" -> {verdict}", flush=True)
            if ok:
                best = max(best, rate)
            time.sleep(2)
            return ok

        if attempt(TARGET_SUSTAINED):
            for rate in (250, 300, 400, 500):
                if not attempt(rate):
                    break
        else:
            for rate in (150, 100, 75, 50):
                if attempt(rate):
                    break
        return best, tried


def process_memory(service: harness.Service) -> dict[str, float]:
    pids = harness.children(service.pid)
    return {
        "main_peak_mb": harness.peak_rss_mb(service.pid),
        "pool_process_peak_mb": max((harness.peak_rss_mb(p) for p in pids), default=0.0),
        "pool_processes": len(pids),
    }


def main() -> None:
    args = harness.arguments(__doc__.splitlines()[0])
    bench = harness.Bench("e2e", tiny=args.tiny, out=args.out, keep_logs=args.keep_logs)
    rates, seconds = ((20, 50), 1.5) if args.tiny else (STEADY_RATES, STEADY_SECONDS)

    harness.prepare_database(bench)
    harness.claim_redis(bench)
    harness.setup_django(bench)
    from django.db import connection
    from django.db.models import Count

    from accounts.models import Account
    from domains.models import Domain
    from webhooks.models import Delivery, Webhook

    def postgres_backends() -> list[int]:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pid FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            return [row[0] for row in cursor.fetchall()]

    arrivals = Arrivals()
    with harness.terminate_cleanly(), harness.Services(bench) as services:
        sink = services.start("sink", [harness.PYTHON, "bench/sink.py"], on_line=arrivals.on_line)
        sink_port = int(sink.wait_for(r"listening on [\d.]+:(\d+)").group(1))
        account = Account.objects.create_user(email="bench@bench.example", password=None)
        domain = Domain.objects.create(account=account, name="bench.example", verified=True)
        Webhook.objects.create(
            account=account,
            domain=domain,
            address=RCPT,
            target_url=f"http://127.0.0.1:{sink_port}/hook",
            secret="whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        )
        ingress, port = services.ingress()
        worker = services.worker()
        services.beat()
        meter = harness.CpuMeter(
            {"ingress": ingress.pid, "worker": worker.pid, "sink": sink.pid},
            {"postgres": postgres_backends, "client": lambda: [os.getpid()]},
        )
        stack = Stack(port, arrivals, meter)

        stack.offer(20, 1.0, "warmup")  # connections, caches
        steady = []
        for rate in rates:
            steady.append(stack.offer(rate, seconds, f"steady{rate}"))
            print(stack.describe(steady[-1], f"{rate}/s for {seconds:g} s"), flush=True)
            time.sleep(1)
        best, tried = (0.0, []) if args.tiny else stack.sustained(SUSTAIN_SECONDS)
        # Every message accepted in the whole run must reach the sink.
        everything = [tag for run in stack.runs for tag in run.sent]
        wait_for_arrivals(everything, arrivals)
        lost_total = sum(1 for tag in everything if tag not in arrivals.first)
        memory = {
            "ingress_peak_mb": max(
                harness.peak_rss_mb(p) for p in harness.children(ingress.pid) or [ingress.pid]
            ),
            "worker": process_memory(worker),
        }

    statuses = dict(Delivery.objects.values_list("status").annotate(n=Count("id")))
    runs = [run.summary(arrivals) for run in steady]
    report(runs, best, lost_total, memory, tiny=args.tiny)
    print(f"\nDelivery rows by status: {statuses}; duplicates at the sink: {arrivals.duplicates}")

    path = harness.write_results(
        bench,
        {
            "message_bytes": MESSAGE_SIZE,
            "steady": runs,
            "sustained": {
                "best_rate": best,
                "seconds": SUSTAIN_SECONDS,
                "tried": [run.summary(arrivals) for run in tried],
            },
            "memory": memory,
            "lost_total": lost_total,
            "duplicates": arrivals.duplicates,
            "delivery_statuses": statuses,
            "targets": {
                "p50_ms_at_50": TARGET_P50_MS,
                "p99_ms_at_50": TARGET_P99_MS,
                "sustained_per_s": TARGET_SUSTAINED,
            },
        },
    )
    chart(bench, runs)
    print(f"Wrote {path}")
    if lost_total:
        raise SystemExit(f"{lost_total} messages never reached the sink")


def report(runs: list[dict], best: float, lost_total: int, memory: dict, *, tiny: bool) -> None:
    rows = []
    for r in runs:
        lat, cpu = r["latency_ms"], r["cpu_ms_per_msg"]
        rows.append(
            [
                f"{r['rate']:g}/s",
                r["accepted"],
                r["lost"],
                lat["p50"],
                lat["p95"],
                lat["p99"],
                lat["max"],
                r["smtp_session_ms"]["p99"],
                " / ".join(
                    f"{cpu.get(k, 0):.1f}" for k in ("ingress", "worker", "postgres", "client")
                ),
            ]
        )
    print()
    print(
        harness.table(
            [
                "rate",
                "accepted",
                "lost",
                "p50 ms",
                "p95 ms",
                "p99 ms",
                "max ms",
                "SMTP session p99 ms",
                "CPU ms/msg: ingress / worker / postgres / client",
            ],
            rows,
        )
    )
    targets = []
    at50 = next((r for r in runs if r["rate"] == 50), None)
    if at50:
        p50, p99 = at50["latency_ms"]["p50"], at50["latency_ms"]["p99"]
        targets.append(
            ["p50 at 50/s", f"{p50:.1f} ms", f"<= {TARGET_P50_MS} ms", harness.verdict(p50 <= 50)]
        )
        targets.append(
            ["p99 at 50/s", f"{p99:.1f} ms", f"<= {TARGET_P99_MS} ms", harness.verdict(p99 <= 250)]
        )
    if not tiny:
        targets.append(
            [
                f"sustained {SUSTAIN_SECONDS:g} s, p99 < 1 s",
                f"{best:g} deliveries/s",
                f">= {TARGET_SUSTAINED}/s",
                harness.verdict(best >= TARGET_SUSTAINED),
            ]
        )
    targets.append(["messages lost", str(lost_total), "0", harness.verdict(lost_total == 0)])
    worker = memory["worker"]
    worker_rss = f"{worker['main_peak_mb']:.0f} MB"
    if worker["pool_processes"]:  # CONDUIT_WORKER_POOL=prefork
        worker_rss += (
            f" + {worker['pool_process_peak_mb']:.0f} MB in each of "
            f"{worker['pool_processes']} pool processes"
        )
    targets.append(["worker peak RSS", worker_rss, "-", ""])
    targets.append(
        [
            "ingress peak RSS",
            f"{memory['ingress_peak_mb']:.0f} MB",
            "<= 150 MB",
            harness.verdict(memory["ingress_peak_mb"] <= 150),
        ]
    )
    print()
    print(harness.table(["", "measured", "target", ""], targets))


def chart(bench: harness.Bench, runs: list[dict]) -> None:
    plt = harness.pyplot()
    if plt is None:
        return
    fig, ax = plt.subplots(figsize=(7, 4))
    xs = range(len(runs))
    width = 0.2
    for k, key in enumerate(("p50", "p95", "p99", "max")):
        ax.bar(
            [x + (k - 1.5) * width for x in xs],
            [r["latency_ms"][key] for r in runs],
            width,
            label=key,
        )
    ax.axhline(TARGET_P99_MS, color="grey", linestyle="--", linewidth=1, label="p99 target")
    ax.set_xticks(list(xs), [f"{r['rate']:g}/s" for r in runs])
    ax.set_yscale("log")
    ax.set_ylabel("250 -> webhook at the sink (ms, log)")
    ax.set_title("End-to-end delivery latency")
    ax.legend()
    fig.tight_layout()
    fig.savefig(harness.chart_path(bench), dpi=110)
    print(f"Wrote {harness.chart_path(bench)}")


if __name__ == "__main__":
    main()
