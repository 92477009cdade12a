"""The ingress's SMTP sessions in one process, for CPU and instruction counts.

    .venv/bin/python bench/session_profile.py [--messages N] [--connections C] [--root TREE]

Serves the ingress in this process as `manage.py ingress` serves it in each of
its processes (ingress.server.serve: the route cache kept live by its
listener, the group commit, tasks published to Redis), and sends N 10 KB
messages to a registered webhook over C parallel connections, one message
per connection (bench/smtpload.send_one), from a subprocess, so that this
process's CPU is the ingress's alone. Prints this process's CPU and that of
its PostgreSQL backends (from /proc) per message, after a warm-up. The
database is the benchmark's (DATABASE_URL's name + ``_bench``, migrated and
emptied), Redis BENCH_REDIS_URL's db (flushed).

Meant, like bench/accept_profile.py, to run under a counting tool twice with
different N, so that startup cancels out:

    valgrind --tool=callgrind --callgrind-out-file=cg.%p .venv/bin/python \\
        bench/session_profile.py --messages 100    # then --messages 300

It uses only what the ingress itself calls, so it runs the same on older trees:
``--root`` names the tree to serve (its bench/harness.py, its ingress).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

RCPT = "inbox@profile.example"
MESSAGE_SIZE = 10 * 1024

# The load, run in a subprocess: C connections, each sending one message per
# session until N are accepted.
CLIENT = """
import asyncio, sys
from bench.smtpload import make_message, send_one

port, count, connections, size = (int(v) for v in sys.argv[1:5])
message = make_message(tag="profile", rcpt=sys.argv[5], size=size)
left = count

async def client():
    global left
    while left > 0:
        left -= 1
        await send_one("127.0.0.1", port, mail_from="sender@sender.example",
                       rcpt=sys.argv[5], message=message)

async def main():
    await asyncio.gather(*(client() for _ in range(connections)))

asyncio.run(main())
"""


def _proc_cpu(pid: int) -> float:
    """User + system CPU seconds of a process (any user's: /proc/PID/stat is readable)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _webhook() -> None:
    from accounts.models import Account
    from domains.models import Domain
    from webhooks.models import Webhook

    account = Account.objects.create_user(email="profile@profile.example", password=None)
    domain = Domain.objects.create(account=account, name="profile.example", verified=True)
    Webhook.objects.create(
        account=account,
        domain=domain,
        address=RCPT,
        target_url="http://127.0.0.1:9/never-delivered",
        secret="whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    )


def _backends() -> list[int]:
    """The PostgreSQL backends of this database other than the asking one."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid()"
        )
        return [row[0] for row in cursor.fetchall()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="a few messages (used by tests)")
    parser.add_argument("--out", type=Path, default=None, help="default: the tree's bench/results/")
    parser.add_argument("--keep-logs", action="store_true", help="(no services; accepted)")
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=100, help="messages sent before measuring")
    args = parser.parse_args()
    if args.tiny:
        args.messages, args.warmup = 20, 4
    root = args.root.resolve()
    sys.path[0] = str(root)
    os.chdir(root)

    from bench import harness

    bench = harness.Bench("session_profile", tiny=args.tiny, out=args.out or harness.RESULTS_DIR)
    harness.prepare_database(bench)
    harness.claim_redis(bench)
    harness.setup_django(bench)
    _webhook()

    from ingress.server import serve

    ready = threading.Event()
    state: dict = {}

    def run() -> None:
        async def serving() -> None:
            state["loop"] = asyncio.get_running_loop()
            state["stop"] = asyncio.Event()
            await serve(
                host="127.0.0.1",
                port=0,
                stop=state["stop"],
                on_ready=lambda port: (state.update(port=port), ready.set()),
                grace=5,
                announce=False,
            )

        asyncio.run(serving())

    server = threading.Thread(target=run, daemon=True)
    server.start()
    if not ready.wait(60):
        raise SystemExit("the ingress did not start")

    def send(count: int) -> None:
        argv = [sys.executable, "-c", CLIENT, str(state["port"]), str(count)]
        argv += [str(args.connections), str(MESSAGE_SIZE), RCPT]
        subprocess.run(argv, cwd=root, check=True)

    send(args.warmup)
    time.sleep(1)  # the route listener is up and the last tasks are published
    backends = _backends()
    ours, system = time.process_time(), os.times().system
    theirs = sum(_proc_cpu(pid) for pid in backends)
    wall = time.perf_counter()
    send(args.messages)
    time.sleep(0.2)  # the last publish
    ours, system = time.process_time() - ours, os.times().system - system
    theirs = sum(_proc_cpu(pid) for pid in backends) - theirs
    wall = time.perf_counter() - wall
    new_backends = set(_backends()) - set(backends)
    state["loop"].call_soon_threadsafe(state["stop"].set)
    server.join(30)
    count = args.messages
    figures = {
        "messages": count,
        "connections": args.connections,
        "ingress_cpu_ms_per_msg": ours / count * 1e3,
        "ingress_system_cpu_ms_per_msg": system / count * 1e3,
        "postgresql_cpu_ms_per_msg": theirs / count * 1e3,
        "wall_ms_per_msg": wall / count * 1e3,
        "backends_opened_meanwhile": len(new_backends),
    }
    print(
        f"{count} messages over {args.connections} connections: "
        f"ingress {figures['ingress_cpu_ms_per_msg']:.3f} ms CPU/msg "
        f"({figures['ingress_system_cpu_ms_per_msg']:.3f} in the kernel), "
        f"PostgreSQL backends {figures['postgresql_cpu_ms_per_msg']:.3f} ms CPU/msg, "
        f"wall {figures['wall_ms_per_msg']:.3f} ms/msg"
        + (f" ({len(new_backends)} backends opened meanwhile)" if new_backends else "")
    )
    harness.write_results(bench, figures)


if __name__ == "__main__":
    main()
