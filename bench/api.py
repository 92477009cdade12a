"""API throughput and latency under gunicorn, 8 concurrent clients.

    .venv/bin/python bench/api.py [--tiny]

gunicorn runs as in the Procfile (sync workers, WEB_CONCURRENCY=3, access log
on). Measured in interleaved rounds: `GET /api/v1/ping` (no auth, no database:
the framework's floor, the reference), listWebhooks (an account with 12
webhooks), listDeliveryLogs page 1 of a webhook with 100,000 logs and of one
with 100 logs, and listMessages page 1 of an account with 1,000,000 messages
and of one with 100. Every response is checked (status, X-Total-Count, page
length).
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

# Run as a script, bench/ would come first on sys.path and could shadow the apps.
sys.path[0] = str(Path(__file__).resolve().parent.parent)

from bench import harness  # noqa: E402

CLIENTS = 8
WORKERS = 3  # the Procfile's WEB_CONCURRENCY default
BIG_LOGS = 100_000
SMALL_LOGS = 100
BIG_MESSAGES = 1_000_000
SMALL_MESSAGES = 100
OTHER_WEBHOOKS = 10
TARGET_P99_MS = 50


class HttpError(Exception):
    pass


async def get(port: int, path: str, token: str | None) -> tuple[int, dict[str, str], bytes]:
    """One GET on a fresh connection (gunicorn's sync workers close after each response)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        auth = f"Authorization: Bearer {token}\r\n" if token else ""
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}"
            "Accept: application/json\r\nConnection: close\r\n\r\n".encode()
        )
        raw = await reader.read()
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body


def check(
    name: str, status: int, headers: dict[str, str], body: bytes, expect: dict, *, parse: bool
) -> None:
    """Status and total always; the JSON body when ``parse`` (a sample: parsing every
    body would make the client, on the same two cores, a noticeable load)."""
    if status != 200:
        raise HttpError(f"{name}: HTTP {status}: {body[:200]!r}")
    if "total" in expect and headers.get("x-total-count") != str(expect["total"]):
        raise HttpError(f"{name}: X-Total-Count {headers.get('x-total-count')}")
    if parse and "items" in expect and len(json.loads(body)) != expect["items"]:
        raise HttpError(f"{name}: {len(json.loads(body))} items, expected {expect['items']}")


async def _measure(
    port: int, name: str, path: str, token: str | None, expect: dict, seconds: float
) -> tuple[int, float, list[float]]:
    """Closed loop with CLIENTS concurrent clients for ``seconds``."""
    latencies: list[float] = []
    stop_at = time.monotonic() + seconds

    async def client() -> None:
        sent = 0
        while time.monotonic() < stop_at:
            started = time.monotonic()
            status, headers, body = await get(port, path, token)
            latencies.append(time.monotonic() - started)
            check(name, status, headers, body, expect, parse=sent % 20 == 0)
            sent += 1

    started = time.monotonic()
    await asyncio.gather(*(client() for _ in range(CLIENTS)))
    return len(latencies), time.monotonic() - started, latencies


def insert_logs(webhook_id: uuid.UUID, count: int) -> None:
    """COPY ``count`` delivery logs, spread over the last days, and set the counter."""
    from django.db import connection

    from webhooks.models import Webhook

    now = datetime.now(UTC)
    columns = (
        "id, webhook_id, delivery_id, attempt, attempted_at, duration_ms, http_status, "
        "error, response_body, sender, smtp_message_id, simulated"
    )
    with connection.cursor() as cursor:
        with cursor.cursor.copy(f"COPY webhooks_deliverylog ({columns}) FROM STDIN") as copy:
            for i in range(count):
                copy.write_row(
                    (
                        uuid.uuid4(),
                        webhook_id,
                        None,
                        1,
                        now - timedelta(seconds=i * 3),
                        12 + i % 40,
                        200 if i % 10 else 500,
                        "" if i % 10 else "HTTP 500",
                        "ok",
                        "sender@bench.example",
                        f"<{i}@bench.example>",
                        False,
                    )
                )
        cursor.execute("ANALYZE webhooks_deliverylog")
    Webhook.objects.filter(id=webhook_id).update(log_count=count)


def insert_messages(account_id: uuid.UUID, webhook_id: uuid.UUID, count: int) -> None:
    """``count`` delivered messages to the webhook, one a few seconds apart,
    each with its delivery and the account's view of it; and the account's count."""
    from accounts.models import Account
    from webhooks.models import AccountMessage, Delivery, InboundMessage

    now = datetime.now(UTC)
    ids = [uuid.uuid4() for _ in range(count)]
    times = [now - timedelta(seconds=i * 3) for i in range(count)]
    raw = b"From: sender@bench.example\r\nSubject: Bench\r\n\r\nHello.\r\n"

    harness.copy_rows(
        InboundMessage,
        (
            {
                "id": ids[i],
                "received_at": times[i],
                "mail_from": "sender@bench.example",
                "rcpt_to": json.dumps(["inbox@bench.example"]),
                "raw": raw,
                "size": len(raw),
                "message_id_header": f"<{i}@bench.example>",
                "subject": f"Bench message {i}",
                "dkim_domains": "[]",
            }
            for i in range(count)
        ),
    )
    harness.copy_rows(
        Delivery,
        (
            {
                "id": uuid.uuid4(),
                "message_id": ids[i],
                "webhook_id": webhook_id,
                "rcpt_to": json.dumps(["inbox@bench.example"]),
                "status": "delivered" if i % 10 else "failed",
                "attempts": 1,
                "delivered_at": times[i],
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
                "account_id": account_id,
                "message_id": ids[i],
                "received_at": times[i],
            }
            for i in range(count)
        ),
    )
    Account.objects.filter(id=account_id).update(message_count=count)


def page_one_sql_ms(querysets: dict, repeats: int) -> dict[str, float]:
    """Median execution time of each page-1 query (EXPLAIN ANALYZE), interleaved."""
    from django.db import connection

    times: dict[str, list[float]] = {name: [] for name in querysets}
    with connection.cursor() as cursor:
        for _ in range(repeats):
            for name, queryset in querysets.items():
                query = queryset[:50].query
                sql, params = query.sql_with_params()
                cursor.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + sql, params)
                plan = cursor.fetchone()[0]
                plan = json.loads(plan) if isinstance(plan, str) else plan
                times[name].append(plan[0]["Execution Time"])
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    args = harness.arguments(__doc__.splitlines()[0])
    bench = harness.Bench("api", tiny=args.tiny, out=args.out, keep_logs=args.keep_logs)
    rounds, seconds = (1, 0.6) if args.tiny else (3, 5.0)
    big_logs = 10_000 if args.tiny else BIG_LOGS
    big_messages = 10_000 if args.tiny else BIG_MESSAGES

    harness.prepare_database(bench)
    harness.claim_redis(bench)
    harness.setup_django(bench)
    from django.db import connection

    from accounts.models import Account
    from accounts.services import api_token_create
    from domains.models import Domain
    from webhooks import selectors
    from webhooks.models import Webhook

    account = Account.objects.create_user(email="bench@bench.example", password=None)
    domain = Domain.objects.create(account=account, name="bench.example", verified=True)

    def webhook(address: str) -> Webhook:
        return Webhook.objects.create(
            account=account,
            domain=domain,
            name=f"Bench {address}",
            address=f"{address}@bench.example",
            target_url="https://hooks.bench.example/inbound",
            secret="whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            custom_headers={"X-Bench": "1"},
        )

    for i in range(OTHER_WEBHOOKS):
        webhook(f"other{i}")
    big, small = webhook("big"), webhook("small")
    started = time.monotonic()
    insert_logs(big.id, big_logs)
    insert_logs(small.id, SMALL_LOGS)
    print(f"Inserted {big_logs + SMALL_LOGS:,} logs in {time.monotonic() - started:.1f} s")
    plan = selectors.delivery_log_list(webhook=big)[:50].explain()
    sql_ms = page_one_sql_ms(
        {
            "big": selectors.delivery_log_list(webhook=big),
            "small": selectors.delivery_log_list(webhook=small),
        },
        repeats=20 if args.tiny else 200,
    )
    token = api_token_create(
        account=account, name="bench", expires_in=None, allowed_ips=[], ip=None
    ).token

    # listMessages: an account with many messages (the one above) and one with few.
    few = Account.objects.create_user(email="few@bench.example", password=None)
    few_domain = Domain.objects.create(account=few, name="few.bench.example", verified=True)
    few_hook = Webhook.objects.create(
        account=few,
        domain=few_domain,
        address="inbox@few.bench.example",
        target_url="https://hooks.bench.example/inbound",
        secret="whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    )
    started = time.monotonic()
    insert_messages(account.id, big.id, big_messages)
    insert_messages(few.id, few_hook.id, SMALL_MESSAGES)
    print(
        f"Inserted {big_messages + SMALL_MESSAGES:,} messages in {time.monotonic() - started:.1f} s"
    )
    account.refresh_from_db()
    few.refresh_from_db()
    unfiltered = selectors.MessageFilters()
    message_plan = selectors.message_list(account=account, filters=unfiltered)[:50].explain()
    message_sql_ms = page_one_sql_ms(
        {
            "big": selectors.message_list(account=account, filters=unfiltered),
            "small": selectors.message_list(account=few, filters=unfiltered),
        },
        repeats=20 if args.tiny else 200,
    )
    few_token = api_token_create(
        account=few, name="bench", expires_in=None, allowed_ips=[], ip=None
    ).token

    endpoints = [
        ("ping (reference)", "/api/v1/ping", None, {}),
        ("listWebhooks", "/api/v1/webhooks", token, {"items": OTHER_WEBHOOKS + 2}),
        (
            f"listDeliveryLogs, {big_logs:,} logs",
            f"/api/v1/webhooks/{big.id}/logs",
            token,
            {"items": 50, "total": big_logs},
        ),
        (
            f"listDeliveryLogs, {SMALL_LOGS} logs",
            f"/api/v1/webhooks/{small.id}/logs",
            token,
            {"items": 50, "total": SMALL_LOGS},
        ),
        (
            f"listMessages, {big_messages:,} messages",
            "/api/v1/messages",
            token,
            {"items": 50, "total": big_messages},
        ),
        (
            f"listMessages, {SMALL_MESSAGES} messages",
            "/api/v1/messages",
            few_token,
            {"items": 50, "total": SMALL_MESSAGES},
        ),
    ]

    def postgres_backends() -> list[int]:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pid FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            return [row[0] for row in cursor.fetchall()]

    totals = {name: [0, 0.0, [], {}] for name, *_ in endpoints}
    with harness.terminate_cleanly(), harness.Services(bench) as services:
        gunicorn, port = services.gunicorn(workers=WORKERS)
        meter = harness.CpuMeter(
            {"gunicorn": gunicorn.pid},
            {"postgres": postgres_backends, "client": lambda: [os.getpid()]},
        )
        for name, path, auth, expect in endpoints:  # warm every worker's caches
            asyncio.run(_measure(port, name, path, auth, expect, 0.3))
        for round_ in range(rounds):
            order = endpoints if round_ % 2 == 0 else endpoints[::-1]
            for name, path, auth, expect in order:
                before = meter.mark()
                count, elapsed, latencies = asyncio.run(
                    _measure(port, name, path, auth, expect, seconds)
                )
                after = meter.mark()
                total = totals[name]
                total[0] += count
                total[1] += elapsed
                total[2] += latencies
                for key, ms in meter.ms_per(before, after, 1).items():
                    total[3][key] = total[3].get(key, 0.0) + ms
                print(f"  {name:<34} {count / elapsed:7.1f} req/s", flush=True)
        memory = {
            "gunicorn_worker_peak_mb": max(
                (harness.peak_rss_mb(p) for p in harness.children(gunicorn.pid)), default=0.0
            )
        }

    results = []
    for name, path, _auth, _expect in endpoints:
        count, elapsed, latencies, cpu_ms = totals[name]
        results.append(
            {
                "endpoint": name,
                "path": path,
                "requests": count,
                "req_per_s": count / elapsed,
                "latency_ms": harness.summary_ms(latencies),
                "cpu_ms_per_request": {key: ms / count for key, ms in cpu_ms.items()},
            }
        )
    by_name = {r["endpoint"]: r for r in results}
    big_r = by_name[f"listDeliveryLogs, {big_logs:,} logs"]
    small_r = by_name[f"listDeliveryLogs, {SMALL_LOGS} logs"]

    rows = [
        [
            r["endpoint"],
            r["req_per_s"],
            r["latency_ms"]["p50"],
            r["latency_ms"]["p99"],
            r["latency_ms"]["max"],
            "-"
            if r["endpoint"].startswith("ping")
            else harness.verdict(r["latency_ms"]["p99"] <= TARGET_P99_MS),
            " / ".join(
                f"{r['cpu_ms_per_request'].get(k, 0):.1f}"
                for k in ("gunicorn", "postgres", "client")
            ),
        ]
        for r in results
    ]
    print()
    print(
        harness.table(
            [
                "endpoint",
                "req/s",
                "p50 ms",
                "p99 ms",
                "max ms",
                f"p99 <= {TARGET_P99_MS} ms",
                "CPU ms/request: gunicorn / postgres / client",
            ],
            rows,
        )
    )

    # "No slower" is judged on what the server spends per request (CPU in gunicorn
    # and PostgreSQL, and the page-1 query's own time), which other load on the
    # machine barely moves; HTTP latencies are shown alongside.
    def server_cpu(r: dict) -> float:
        return r["cpu_ms_per_request"].get("gunicorn", 0) + r["cpu_ms_per_request"].get(
            "postgres", 0
        )

    def no_slower_with_many(big_r: dict, small_r: dict, sql_ms: dict) -> bool:
        return server_cpu(big_r) <= server_cpu(small_r) * 1.15 and sql_ms["big"] <= max(
            2 * sql_ms["small"], sql_ms["small"] + 0.5
        )

    def compare(title: str, big_name: str, small_name: str, big_r, small_r, sql_ms) -> None:
        print()
        print(
            harness.table(
                [f"page 1 of {title}", big_name, small_name],
                [
                    ["HTTP p50 ms", big_r["latency_ms"]["p50"], small_r["latency_ms"]["p50"]],
                    ["HTTP p99 ms", big_r["latency_ms"]["p99"], small_r["latency_ms"]["p99"]],
                    ["req/s", big_r["req_per_s"], small_r["req_per_s"]],
                    ["server CPU ms/request", server_cpu(big_r), server_cpu(small_r)],
                    [
                        "SQL execution ms (median)",
                        f"{sql_ms['big']:.3f}",
                        f"{sql_ms['small']:.3f}",
                    ],
                ],
            )
        )
        verdict = harness.verdict(no_slower_with_many(big_r, small_r, sql_ms))
        print(f"No slower with {big_name}: {verdict}")

    no_slower = no_slower_with_many(big_r, small_r, sql_ms)
    compare("listDeliveryLogs", f"{big_logs:,} logs", f"{SMALL_LOGS} logs", big_r, small_r, sql_ms)
    print("Page 1 plan:", " / ".join(line.strip() for line in plan.splitlines()[:2]))
    big_m = by_name[f"listMessages, {big_messages:,} messages"]
    small_m = by_name[f"listMessages, {SMALL_MESSAGES} messages"]
    messages_no_slower = no_slower_with_many(big_m, small_m, message_sql_ms)
    compare(
        "listMessages",
        f"{big_messages:,} messages",
        f"{SMALL_MESSAGES} messages",
        big_m,
        small_m,
        message_sql_ms,
    )
    print(
        "Page 1 plan (messages):",
        " / ".join(line.strip() for line in message_plan.splitlines()[:3]),
    )

    path = harness.write_results(
        bench,
        {
            "clients": CLIENTS,
            "gunicorn_workers": WORKERS,
            "rounds": rounds,
            "seconds_per_round": seconds,
            "endpoints": results,
            "page1_no_slower_with_many_logs": no_slower,
            "page1_sql_ms": sql_ms,
            "page1_plan": plan,
            "messages_page1_no_slower_with_many_messages": messages_no_slower,
            "messages_page1_sql_ms": message_sql_ms,
            "messages_page1_plan": message_plan,
            "memory": memory,
            "targets": {"p99_ms": TARGET_P99_MS},
        },
    )
    chart(bench, results)
    print(f"Wrote {path}")


def chart(bench: harness.Bench, results: list[dict]) -> None:
    plt = harness.pyplot()
    if plt is None:
        return
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    names = [r["endpoint"].replace(", ", "\n") for r in results]
    left.barh(names, [r["req_per_s"] for r in results])
    left.set_xlabel(f"requests/s ({CLIENTS} clients)")
    left.invert_yaxis()
    right.barh(names, [r["latency_ms"]["p99"] for r in results], color="tab:orange")
    right.axvline(TARGET_P99_MS, color="grey", linestyle="--", linewidth=1)
    right.set_xlabel("p99 latency (ms); dashed: target")
    right.invert_yaxis()
    right.set_yticklabels([])
    fig.suptitle("API under gunicorn")
    fig.tight_layout()
    fig.savefig(harness.chart_path(bench), dpi=110)
    print(f"Wrote {harness.chart_path(bench)}")


if __name__ == "__main__":
    main()
