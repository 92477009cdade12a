"""``manage.py webhook_receiver``: a local endpoint to point a first webhook at.

Prints every request it gets (the signature check, envelope, subject and the
JSON payload) and answers 200, or 401 when ``--secret`` is given and the
signature does not verify, so a failed check shows in the delivery log too.
For trying Conduit out on one machine (loopback targets are allowed with
DEBUG, see CONDUIT_ALLOW_PRIVATE_TARGETS); not a production receiver.
"""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from django.core.management.base import BaseCommand, CommandParser, OutputWrapper

from webhooks.signing import SignatureProblem, mask_secret, verify

MAX_SHOWN = 20_000  # characters of payload printed; the rest is elided


def describe(*, path: str, headers: dict[str, str], body: bytes, secret: str) -> tuple[int, str]:
    """The status to answer and the lines to print for one POST."""
    now = datetime.now(UTC).strftime("%H:%M:%S")
    lines = [f"--> POST {path} at {now} UTC, webhook-id {headers.get('webhook-id', '-')}"]
    status = 200
    if not secret:
        lines.append("    signature: not checked (start the receiver with --secret to check it)")
    else:
        try:
            verify(secret=secret, headers=headers, body=body)
        except SignatureProblem as problem:
            status = 401
            lines.append(f"    signature: INVALID: {problem}")
        else:
            lines.append(f"    signature: valid (secret {mask_secret(secret)})")
    try:
        payload = json.loads(body)
    except ValueError:
        shown = body.decode("utf-8", "replace")
    else:
        if isinstance(payload, dict):
            envelope = payload.get("envelope") or {}
            lines.append(
                f"    from {envelope.get('mail_from', '-')} to "
                f"{', '.join(envelope.get('rcpt_to') or []) or '-'}: "
                f"{payload.get('subject', '')!r}"
            )
        shown = json.dumps(payload, indent=2, ensure_ascii=False)
    if len(shown) > MAX_SHOWN:
        shown = shown[:MAX_SHOWN] + f"\n... ({len(shown) - MAX_SHOWN} more characters)"
    lines.extend("    " + line for line in shown.splitlines())
    lines.append(f"<-- {status}")
    return status, "\n".join(lines)


def make_handler(*, secret: str, out: OutputWrapper) -> type[BaseHTTPRequestHandler]:
    printing = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        server_version = "ConduitWebhookReceiver"

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            headers = {name.lower(): value for name, value in self.headers.items()}
            status, text = describe(path=self.path, headers=headers, body=body, secret=secret)
            with printing:
                out.write(text)
                out.flush()
            self._answer(status, b"ok\n" if status == 200 else b"signature does not verify\n")

        def do_GET(self) -> None:
            self._answer(200, b"Conduit webhook receiver: POST deliveries here.\n")

        def _answer(self, status: int, text: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(text)))
            self.end_headers()
            self.wfile.write(text)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # describe() prints each request

    return Handler


class Command(BaseCommand):
    help = "Run a local webhook receiver that prints each delivery and checks its signature."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=9100, help="0 picks a free port")
        parser.add_argument(
            "--secret",
            default="",
            help="the webhook's secret (whsec_...), to check each delivery's signature",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        handler = make_handler(secret=options["secret"], out=self.stdout)
        server = ThreadingHTTPServer((options["host"], options["port"]), handler)
        host, port = server.server_address[:2]
        self.stdout.write(
            f"Listening on http://{host}:{port}/ (a webhook's target_url may use any path); "
            "Ctrl-C to stop."
        )
        self.stdout.flush()
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
