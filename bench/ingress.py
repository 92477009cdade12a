"""SMTP acceptance throughput of the ingress against a bare aiosmtpd server.

    .venv/bin/python bench/ingress.py [--tiny] [--baseline TREE [--rounds N]]

The servers get the same load in the same run, in alternating rounds: 1, 8
and 32 parallel connections, each sending one 10 KB message per connection (as
MX traffic arrives). Every message to the ingress goes to a registered webhook
and is committed with its delivery before the 250; the worker is not running,
so deliveries only queue. The ingress runs as `manage.py ingress` starts it (one
process per core) and, for reference, held to one process. A second reference
serves Conduit's own protocol class (ingress.protocol.LeanSMTP) with the same
discarding handler: the ingress's ratio to it is what storing costs, apart from
what the protocol costs. Then memory: the ingress's peak RSS over those runs,
and its RSS before and after one 25 MB message (the bare server alongside).

With ``--baseline TREE`` another checkout's ingress (its own database, as
many processes) takes its turn in the same rounds: a change is measured against
the code before it on the same machine in the same minutes.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

# Run as a script, bench/ would come first on sys.path and this file would shadow ingress/.
sys.path[0] = str(Path(__file__).resolve().parent.parent)

from bench import harness  # noqa: E402
from bench.smtpload import SmtpReplyError, make_message, send_one  # noqa: E402

CONCURRENCY = (1, 8, 32)
MESSAGE_SIZE = 10 * 1024
BIG_MESSAGE_SIZE = 25 * 1000 * 1000
RCPT = "inbox@bench.example"
TARGET_RATIO = 0.60  # of the bare server, at 8 and 32 connections
TARGET_PEAK_MB = 150
TARGET_BIG_GROWTH = 3.0  # x the message size


# The one webhook every message goes to, created the same way in this tree
# and in a baseline's (as source, so it runs against that tree's models).
SETUP = f"""
from accounts.models import Account
from domains.models import Domain
from webhooks.models import Webhook

account = Account.objects.create_user(email="bench@bench.example", password=None)
domain = Domain.objects.create(account=account, name="bench.example", verified=True)
Webhook.objects.create(
    account=account,
    domain=domain,
    address={RCPT!r},
    target_url="http://127.0.0.1:9/never-delivered",
    secret="whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
)
"""


@dataclass
class Load:
    messages: int
    seconds: float
    errors: int
    client_cores: float  # CPU used by this load generator
    server_cpu: float  # CPU seconds used by the server while measured

    @property
    def rate(self) -> float:
        return self.messages / self.seconds if self.seconds else 0.0


async def _load(
    port: int, server_pid: int, *, connections: int, warmup: float, duration: float
) -> Load:
    """Closed loop: each connection sends one message, closes, and starts again."""
    message = make_message(tag="bench-ingress", rcpt=RCPT, size=MESSAGE_SIZE)
    counted = errors = 0
    measuring = stop = False
    first_error: BaseException | None = None

    async def client() -> None:
        nonlocal counted, errors, first_error
        while not stop:
            try:
                await send_one(
                    "127.0.0.1", port, mail_from="sender@bench.example", rcpt=RCPT, message=message
                )
            except (SmtpReplyError, OSError) as exc:
                errors += 1
                first_error = first_error or exc
                await asyncio.sleep(0.05)
                continue
            if measuring:
                counted += 1

    tasks = [asyncio.create_task(client()) for _ in range(connections)]
    await asyncio.sleep(warmup)
    measuring = True
    own0, server0, t0 = _own_cpu(), harness.tree_cpu_seconds(server_pid), time.monotonic()
    await asyncio.sleep(duration)
    measuring = False
    own1, server1, t1 = _own_cpu(), harness.tree_cpu_seconds(server_pid), time.monotonic()
    stop = True
    await asyncio.gather(*tasks)
    if first_error is not None:
        print(f"  {errors} failed sessions, e.g.: {first_error}", file=sys.stderr)
    seconds = t1 - t0
    return Load(
        messages=counted,
        seconds=seconds,
        errors=errors,
        client_cores=(own1 - own0) / seconds,
        server_cpu=server1 - server0,
    )


def _own_cpu() -> float:
    times = os.times()
    return times.user + times.system


def load(port: int, server_pid: int, **kwargs: float) -> Load:
    return asyncio.run(_load(port, server_pid, **kwargs))  # type: ignore[arg-type]


def send(port: int, message: bytes) -> None:
    asyncio.run(
        send_one("127.0.0.1", port, mail_from="sender@bench.example", rcpt=RCPT, message=message)
    )


def big_message_growth(pid: int, port: int, message: bytes) -> dict[str, float]:
    """RSS before and after the server accepts one big message, and the peak meanwhile.

    Over the server's process tree: the message lands in one of the ingress
    processes, so growth is the tree's total after minus before, and the peak
    is that of the process that took it.
    """
    time.sleep(0.5)
    pids = [pid, *harness.children(pid)]
    before = {p: harness.rss_mb(p) for p in pids}
    peak_is_this_message = all([harness.reset_peak_rss(p) for p in pids])
    started = time.monotonic()
    send(port, message)
    seconds = time.monotonic() - started
    time.sleep(0.5)
    after = {p: harness.rss_mb(p) for p in pids}
    size_mb = len(message) / 2**20
    taker = max(pids, key=lambda p: after[p] - before[p])
    peak = harness.peak_rss_mb(taker) if peak_is_this_message else float("nan")
    return {
        "message_mb": size_mb,
        "rss_before_mb": before[taker],
        "rss_after_mb": after[taker],
        "growth_mb": sum(after.values()) - sum(before.values()),
        "growth_x": (sum(after.values()) - sum(before.values())) / size_mb,
        "peak_mb": peak,
        "peak_growth_x": (peak - before[taker]) / size_mb,
        "seconds": seconds,
        "processes": len(pids),
    }


def tree_peaks(pid: int) -> dict[str, float]:
    """Peak RSS of the busiest ingress process, and of all of them together."""
    pids = harness.children(pid) or [pid]
    peaks = [harness.peak_rss_mb(p) for p in pids]
    return {
        "per_process_mb": max(peaks),
        "all_processes_mb": sum(peaks) + (harness.peak_rss_mb(pid) if pids != [pid] else 0.0),
        "processes": len(pids),
    }


def main() -> None:
    args = harness.arguments(__doc__.splitlines()[0], baseline=True)
    bench = harness.Bench("ingress", tiny=args.tiny, out=args.out, keep_logs=args.keep_logs)
    rounds, warmup, duration = (1, 0.3, 1.0) if args.tiny else (2, 1.0, 10.0)
    rounds = args.rounds or rounds
    baseline = harness.Checkout.at(args.baseline, bench) if args.baseline else None

    harness.prepare_database(bench)
    harness.claim_redis(bench)
    harness.setup_django(bench)
    exec(SETUP)  # the same lines run in the baseline's Django below
    if baseline is not None:
        harness.prepare_database(bench, checkout=baseline)
        baseline.run_in_django(bench, SETUP)
    from webhooks.models import Delivery, InboundMessage

    with harness.terminate_cleanly(), harness.Services(bench) as services:
        bare = services.start("bare", [harness.PYTHON, "bench/bare_smtpd.py"])
        bare_port = int(bare.wait_for(r"listening on [\d.]+:(\d+)").group(1))
        # Conduit's protocol class, discarding: what the protocol alone costs.
        lean = services.start("lean", [harness.PYTHON, "bench/bare_smtpd.py", "--lean"])
        lean_port = int(lean.wait_for(r"listening on [\d.]+:(\d+)").group(1))
        ingress, ingress_port = services.ingress()
        # The same ingress held to one process: what one event loop (one core) does.
        single, single_port = services.ingress("ingress-1", CONDUIT_INGRESS_PROCESSES="1")
        servers = {
            "bare": (bare_port, bare.pid),
            "lean": (lean_port, lean.pid),
            "conduit": (ingress_port, ingress.pid),
            "conduit_1": (single_port, single.pid),
        }
        if baseline is not None:
            before, before_port = services.ingress("baseline", checkout=baseline)
            servers["baseline"] = (before_port, before.pid)
        processes = len(harness.children(ingress.pid)) or 1

        results = []
        for connections in CONCURRENCY:
            runs: dict[str, list[Load]] = {name: [] for name in servers}
            for round_ in range(rounds):
                order = list(servers) if round_ % 2 == 0 else list(reversed(servers))
                for name in order:
                    port, pid = servers[name]
                    result = load(
                        port, pid, connections=connections, warmup=warmup, duration=duration
                    )
                    runs[name].append(result)
                    print(
                        f"  {connections:>2} connections, {name:<9} {result.rate:7.1f} msg/s "
                        f"(client {result.client_cores:.2f} cores, {result.errors} errors)",
                        flush=True,
                    )
            row: dict = {"connections": connections}
            for name, loads in runs.items():
                messages = sum(r.messages for r in loads)
                row[f"{name}_msgs_per_s"] = messages / sum(r.seconds for r in loads)
                row[f"{name}_cpu_ms_per_msg"] = (
                    1000 * sum(r.server_cpu for r in loads) / messages if messages else 0.0
                )
            bare_rate = row["bare_msgs_per_s"]
            row["ratio"] = row["conduit_msgs_per_s"] / bare_rate if bare_rate else 0
            row["ratio_1"] = row["conduit_1_msgs_per_s"] / bare_rate if bare_rate else 0
            lean_rate = row["lean_msgs_per_s"]
            row["ratio_lean"] = row["conduit_msgs_per_s"] / lean_rate if lean_rate else 0
            if baseline is not None:
                before_rate = row["baseline_msgs_per_s"]
                row["ratio_baseline"] = row["conduit_msgs_per_s"] / before_rate
                # Each round's own ratio: how far one round can be trusted here.
                each = [
                    now.rate / then.rate
                    for now, then in zip(runs["conduit"], runs["baseline"], strict=True)
                    if then.rate
                ]
                row["ratio_baseline_rounds"] = [min(each), max(each)] if each else [0, 0]
            row["errors"] = sum(r.errors for loads in runs.values() for r in loads)
            row["client_cores"] = max(r.client_cores for loads in runs.values() for r in loads)
            results.append(row)
        peaks = tree_peaks(ingress.pid)
        peak_mb = peaks["per_process_mb"]

        print(f"Memory: one {BIG_MESSAGE_SIZE / 1e6:.0f} MB message to each server ...", flush=True)
        big_message = make_message(tag="bench-big", rcpt=RCPT, size=BIG_MESSAGE_SIZE)
        big = big_message_growth(ingress.pid, ingress_port, big_message)
        big_bare = big_message_growth(bare.pid, bare_port, big_message)

    stored = InboundMessage.objects.count()
    deliveries = Delivery.objects.filter(webhook__address=RCPT).count()

    rows = [
        [
            r["connections"],
            r["bare_msgs_per_s"],
            r["conduit_msgs_per_s"],
            f"{r['ratio']:.0%}",
            "-" if r["connections"] == 1 else harness.verdict(r["ratio"] >= TARGET_RATIO),
            f"{r['conduit_1_msgs_per_s']:.1f} ({r['ratio_1']:.0%})",
            f"{r['lean_msgs_per_s']:.1f} ({r['ratio_lean']:.0%})",
            f"{r['bare_cpu_ms_per_msg']:.1f} / {r['lean_cpu_ms_per_msg']:.1f}"
            f" / {r['conduit_cpu_ms_per_msg']:.1f} / {r['conduit_1_cpu_ms_per_msg']:.1f}",
            f"{r['client_cores']:.2f}",
            r["errors"],
        ]
        + (
            [
                f"{r['baseline_msgs_per_s']:.1f} ({r['ratio_baseline']:.0%}; rounds "
                f"{r['ratio_baseline_rounds'][0]:.0%}-{r['ratio_baseline_rounds'][1]:.0%}), "
                f"{r['baseline_cpu_ms_per_msg']:.1f} ms/msg"
            ]
            if baseline is not None
            else []
        )
        for r in results
    ]
    print()
    print(
        harness.table(
            [
                "connections",
                "bare aiosmtpd msg/s",
                f"Conduit msg/s ({processes} processes)",
                "ratio",
                f">= {TARGET_RATIO:.0%}",
                "Conduit, 1 process: msg/s (ratio)",
                "lean protocol, discarding: msg/s (Conduit's ratio to it)",
                "server CPU ms/msg (bare / lean / Conduit / 1 process)",
                "client cores",
                "errors",
            ]
            + (
                [
                    f"baseline {baseline.root.name}: msg/s (Conduit's ratio to it; "
                    "lowest-highest of a round), CPU"
                ]
                if baseline is not None
                else []
            ),
            rows,
        )
    )
    print()
    memory_rows = [
        [
            f"peak RSS over the throughput runs, per process ({peaks['processes']})",
            f"{peak_mb:.0f} MB",
            f"<= {TARGET_PEAK_MB} MB",
            harness.verdict(peak_mb <= TARGET_PEAK_MB),
        ],
        [
            "  all ingress processes together (shared pages counted in each)",
            f"{peaks['all_processes_mb']:.0f} MB",
            "-",
            "",
        ],
        [
            f"RSS growth from one {big['message_mb']:.0f} MB message",
            f"{big['growth_mb']:.0f} MB = {big['growth_x']:.1f}x "
            f"({big['rss_before_mb']:.0f} -> {big['rss_after_mb']:.0f} MB)",
            f"<= {TARGET_BIG_GROWTH:.0f}x",
            harness.verdict(big["growth_x"] <= TARGET_BIG_GROWTH),
        ],
        [
            "  peak while accepting it",
            f"{big['peak_mb']:.0f} MB = +{big['peak_growth_x']:.1f}x",
            "-",
            "",
        ],
        [
            "  bare aiosmtpd, same message",
            f"{big_bare['growth_x']:+.1f}x after, peak +{big_bare['peak_growth_x']:.1f}x",
            "-",
            "",
        ],
    ]
    print(harness.table(["ingress memory", "measured", "target", ""], memory_rows))
    print(f"\nStored: {stored} messages, {deliveries} deliveries (every accepted message).")

    path = harness.write_results(
        bench,
        {
            "message_bytes": MESSAGE_SIZE,
            "rounds": rounds,
            "seconds_per_run": duration,
            "throughput": results,
            "memory": {
                "peak_rss_mb": peak_mb,
                "peaks": peaks,
                "big_message": big,
                "big_message_bare": big_bare,
            },
            "baseline": str(baseline.root) if baseline is not None else None,
            "stored_messages": stored,
            "stored_deliveries": deliveries,
            "targets": {
                "ratio_at_8_and_32": TARGET_RATIO,
                "peak_rss_mb": TARGET_PEAK_MB,
                "big_message_growth_x": TARGET_BIG_GROWTH,
            },
        },
    )
    chart(bench, results)
    print(f"Wrote {path}")
    if stored != deliveries:
        raise SystemExit("Every stored message must have its delivery")


def chart(bench: harness.Bench, results: list[dict]) -> None:
    plt = harness.pyplot()
    if plt is None:
        return
    fig, ax = plt.subplots(figsize=(7, 4))
    xs = range(len(results))
    width = 0.27
    bare = [r["bare_msgs_per_s"] for r in results]
    lean = [r["lean_msgs_per_s"] for r in results]
    conduit = [r["conduit_msgs_per_s"] for r in results]
    ax.bar([x - width for x in xs], bare, width, label="bare aiosmtpd (discards)")
    ax.bar(list(xs), lean, width, label="Conduit's protocol (discards)")
    bars = ax.bar([x + width for x in xs], conduit, width, label="Conduit ingress (stores)")
    for bar, r in zip(bars, results, strict=True):
        ax.annotate(
            f"{r['ratio']:.0%} of bare",
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center",
            va="bottom",
        )
    ax.set_xticks(list(xs), [f"{r['connections']} conn." for r in results])
    ax.set_ylabel("messages/s (10 KB, one per connection)")
    ax.set_title(f"SMTP acceptance ({os.cpu_count()} cores)")
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(harness.chart_path(bench), dpi=110)
    print(f"Wrote {harness.chart_path(bench)}")


if __name__ == "__main__":
    main()
