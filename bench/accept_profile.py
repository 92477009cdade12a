"""The ingress's accept path in one process, for instruction counts and profiles.

    .venv/bin/python bench/accept_profile.py [--messages N] [--group G] [--profile]

Stores N 10 KB messages, G at a time, through ingress.decisions.accept_messages
(the group commit's call: the webhooks re-read or not, the Message-ID and
Subject read, the single statement) against PostgreSQL (the benchmark
database, as every script here takes it: DATABASE_URL's name + ``_bench``,
migrated and emptied), without SMTP, threads or the broker. Prints this process's CPU and that of
its PostgreSQL backend (from /proc, so the server's share is seen too) per
message. Meant to run under a counting tool, twice with different N, so that
startup cancels out:

    valgrind --tool=callgrind --callgrind-out-file=cg.%p .venv/bin/python \
        bench/accept_profile.py --messages 100    # then --messages 300

Runs the same on older trees (it uses only what the ingress itself calls).
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import os
import pstats
import sys
import time
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parent.parent)

from bench import harness  # noqa: E402
from bench.smtpload import make_message  # noqa: E402

RCPT = "inbox@profile.example"


def _proc_cpu(pid: int) -> float:
    """User + system CPU seconds of a process (any user's: /proc/PID/stat is readable)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _webhook():
    from accounts.models import Account
    from domains.models import Domain
    from webhooks.models import Webhook

    account = Account.objects.filter(email="profile@profile.example").first()
    if account is None:
        account = Account.objects.create_user(email="profile@profile.example", password=None)
    domain, _ = Domain.objects.get_or_create(
        account=account, name="profile.example", defaults={"verified": True}
    )
    webhook = Webhook.objects.filter(address=RCPT).first()
    if webhook is None:
        webhook = Webhook.objects.create(
            account=account,
            domain=domain,
            address=RCPT,
            target_url="http://127.0.0.1:9/never-delivered",
            secret="whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        )
    return webhook


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="a few messages (used by tests)")
    parser.add_argument("--out", type=Path, default=harness.RESULTS_DIR)
    parser.add_argument("--keep-logs", action="store_true", help="(no services; accepted)")
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--group", type=int, default=2, help="messages per group commit")
    parser.add_argument("--warmup", type=int, default=20, help="groups stored before measuring")
    parser.add_argument("--reread", action="store_true", help="routes not current: re-read")
    parser.add_argument("--profile", action="store_true", help="cProfile (CPU time), top 40")
    args = parser.parse_args()
    if args.tiny:
        args.messages, args.warmup = 20, 2

    bench = harness.Bench("accept_profile", tiny=args.tiny, out=args.out)
    harness.prepare_database(bench)
    harness.setup_django(bench)
    from django.db import connection

    from ingress import decisions

    webhook = _webhook()
    known = {f.name for f in dataclasses.fields(decisions.Route)}
    # Older trees' routes carry no account.
    account = {"account_id": webhook.account_id} if "account_id" in known else {}
    route = decisions.Route(webhook_id=webhook.id, policy_id=None, **account)

    def group(start: int) -> list:
        return [
            decisions.MessageInput(
                raw=make_message(tag=f"profile-{start + i}", rcpt=RCPT, size=10 * 1024),
                mail_from="sender@sender.example",
                helo="mx.sender.example",
                client_ip="192.0.2.1",
                routes={RCPT: route},
                routes_current=not args.reread,
            )
            for i in range(args.group)
        ]

    def store(groups: list) -> None:
        for messages in groups:
            replies = decisions.accept_messages(messages).replies
            if not all(reply and reply.startswith("250") for reply in replies):
                raise SystemExit(f"not accepted: {replies}")

    store([group(-args.group * (n + 1)) for n in range(args.warmup)])
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        backend = cursor.fetchone()[0]
    groups = [group(start) for start in range(0, args.messages, args.group)]
    count = len(groups) * args.group
    profiler = cProfile.Profile(time.process_time) if args.profile else None  # CPU, not wall
    ours, theirs, wall = time.process_time(), _proc_cpu(backend), time.perf_counter()
    if profiler:
        profiler.enable()
    store(groups)
    if profiler:
        profiler.disable()
    ours, theirs = time.process_time() - ours, _proc_cpu(backend) - theirs
    wall = time.perf_counter() - wall
    figures = {
        "messages": count,
        "group": args.group,
        "ingress_cpu_ms_per_msg": ours / count * 1e3,
        "postgresql_cpu_ms_per_msg": theirs / count * 1e3,
        "wall_ms_per_msg": wall / count * 1e3,
    }
    print(
        f"{count} messages in groups of {args.group}: "
        f"ingress {figures['ingress_cpu_ms_per_msg']:.3f} ms CPU/msg, "
        f"PostgreSQL backend {figures['postgresql_cpu_ms_per_msg']:.3f} ms CPU/msg, "
        f"wall {figures['wall_ms_per_msg']:.3f} ms/msg"
    )
    harness.write_results(bench, figures)
    if profiler:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(40)


if __name__ == "__main__":
    main()
