"""CPU time and memory of building the webhook payload (webhooks.payload.build_payload).

    .venv/bin/python bench/payload.py [--tiny]

No services: the payload is built in this process, as the worker builds it for every
delivery. Three typical messages of about 10 KB (plain text; text and HTML alternatives
with an encoded Subject and a few Received lines; text with a small PDF attachment) are
built over and over and the median of several rounds is reported as microseconds per
build. Then one 25 MB message (a short text and a 25 MB base64 attachment) is built once
under tracemalloc: the peak of Python's allocations, as a multiple of the message size.
``--tiny`` runs a few builds and a 5 MB message, so the test suite can check it runs.
"""

from __future__ import annotations

import base64
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

# Run as a script, bench/ would come first on sys.path and this file would shadow webhooks/.
sys.path[0] = str(Path(__file__).resolve().parent.parent)

from bench import harness  # noqa: E402
from webhooks.payload import AuthResults, Envelope, build_payload  # noqa: E402

MESSAGE_SIZE = 10 * 1024
BIG_MESSAGE_SIZE = 25 * 1000 * 1000
TINY_BIG_MESSAGE_SIZE = 5 * 1000 * 1000
ENVELOPE = Envelope(
    mail_from="sender@bench.example",
    rcpt_to=["inbox@hooks.example"],
    client_ip="192.0.2.10",
    helo="mail.bench.example",
)
AUTH = AuthResults(spf="pass", dkim=["bench.example"])
LINE = "The quarterly figures are attached; let me know what you think of them.\r\n"

HEAD = (
    "Received: from mail.bench.example (mail.bench.example [192.0.2.10])\r\n"
    "\tby mx.hooks.example with ESMTPS id 4Hx2; Thu, 02 Apr 2026 12:00:01 +0000\r\n"
    "Received: from [10.0.0.7] by mail.bench.example with ESMTPSA;\r\n"
    "\tThu, 02 Apr 2026 12:00:00 +0000\r\n"
    "From: =?utf-8?q?Zo=C3=AB_Sender?= <sender@bench.example>\r\n"
    "To: Inbox <inbox@hooks.example>, other@hooks.example\r\n"
    'Cc: "Doe, John" <john@bench.example>\r\n'
    "Subject: =?utf-8?q?Quarterly_figures_=E2=80=93_Q1?=\r\n"
    "Date: Thu, 02 Apr 2026 12:00:00 +0000\r\n"
    "Message-ID: <bench-payload@bench.example>\r\n"
    "MIME-Version: 1.0\r\n"
)


def _lines(size: int) -> str:
    return LINE * max(1, size // len(LINE))


def plain_message() -> bytes:
    head = HEAD + "Content-Type: text/plain; charset=utf-8\r\n\r\n"
    return (head + _lines(MESSAGE_SIZE - len(head))).encode()


def alternative_message() -> bytes:
    text = _lines(MESSAGE_SIZE // 3)
    html = "<html><body>" + "".join(
        f"<p>{line.strip()}</p>\r\n" for line in _lines(MESSAGE_SIZE // 2).splitlines()
    )
    return (
        HEAD + 'Content-Type: multipart/alternative; boundary="alt"\r\n\r\n'
        "--alt\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" + text + "--alt\r\n"
        "Content-Type: text/html; charset=utf-8\r\n\r\n" + html + "</body></html>\r\n"
        "--alt--\r\n"
    ).encode()


def attachment_message(attachment_size: int) -> bytes:
    data = bytes(range(256)) * (attachment_size // 256 + 1)
    encoded = base64.encodebytes(data[:attachment_size]).decode().replace("\n", "\r\n")
    return (
        HEAD + 'Content-Type: multipart/mixed; boundary="mix"\r\n\r\n'
        "--mix\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" + _lines(1500) + "--mix\r\n"
        'Content-Type: application/pdf; name="figures.pdf"\r\n'
        'Content-Disposition: attachment; filename="figures.pdf"\r\n'
        "Content-Transfer-Encoding: base64\r\n\r\n" + encoded + "--mix--\r\n"
    ).encode()


def build(raw: bytes) -> dict:
    return build_payload(raw, envelope=ENVELOPE, auth=AUTH)


def microseconds_per_build(raw: bytes, *, builds: int, rounds: int) -> float:
    build(raw)  # warm the caches (charset lookups, compiled patterns)
    timings = []
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(builds):
            build(raw)
        timings.append((time.perf_counter() - started) / builds)
    return statistics.median(timings) * 1e6


def peak_memory(raw: bytes) -> dict[str, float]:
    tracemalloc.start()
    payload = build(raw)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    size = payload["attachments"][0]["size"]
    assert size > 0.7 * len(raw), "the big attachment was not decoded"
    return {
        "message_mb": len(raw) / 1e6,
        "peak_mb": peak / 1e6,
        "peak_x_message": peak / len(raw),
    }


def main() -> None:
    args = harness.arguments(__doc__.splitlines()[0])
    bench = harness.Bench(name="payload", tiny=args.tiny, out=args.out)
    builds, rounds = (20, 3) if args.tiny else (400, 7)
    messages = {
        "plain text": plain_message(),
        "text + html alternative": alternative_message(),
        "text + small PDF": attachment_message(MESSAGE_SIZE - 3000),
    }
    rows = []
    for name, raw in messages.items():
        rows.append(
            {
                "message": name,
                "bytes": len(raw),
                "us_per_build": microseconds_per_build(raw, builds=builds, rounds=rounds),
            }
        )
    big = attachment_message((TINY_BIG_MESSAGE_SIZE if args.tiny else BIG_MESSAGE_SIZE) * 3 // 4)
    memory = peak_memory(big)
    print(
        harness.table(
            ["message", "bytes", "µs per build"],
            [[r["message"], r["bytes"], r["us_per_build"]] for r in rows],
        )
    )
    print(
        f"\n{memory['message_mb']:.1f} MB message: peak {memory['peak_mb']:.0f} MB of Python "
        f"allocations = {memory['peak_x_message']:.1f}x the message"
    )
    harness.write_results(bench, {"builds": rows, "big_message": memory})
    plt = harness.pyplot()
    if plt is not None:
        figure, axis = plt.subplots(figsize=(7, 3))
        axis.barh([r["message"] for r in rows], [r["us_per_build"] for r in rows])
        axis.set_xlabel("µs per build_payload")
        figure.tight_layout()
        figure.savefig(harness.chart_path(bench), dpi=100)
    harness.shutil.rmtree(bench.scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
