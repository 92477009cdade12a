"""manage.py webhook_receiver, and signing.verify it checks deliveries with."""

from __future__ import annotations

import os
import queue
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests
from standardwebhooks.webhooks import Webhook as StandardWebhook

from tests.delivery_fixtures import SECRET, make_webhook
from webhooks import delivery
from webhooks.compose import build_simulated_message
from webhooks.formats import Source
from webhooks.payload import AuthResults, Envelope
from webhooks.signing import SignatureProblem, generate_secret, signature_headers, verify

ROOT = Path(__file__).resolve().parents[2]
BODY = b'{"subject": "Hello"}'


# --- signing.verify, against the Standard Webhooks library ----------------------


def test_it_accepts_what_the_standard_webhooks_library_signs():
    secret = generate_secret()
    now = datetime.now(UTC)
    signature = StandardWebhook(secret).sign("msg_1", now, BODY.decode())
    headers = {
        "Webhook-Id": "msg_1",
        "Webhook-Timestamp": str(int(now.timestamp())),
        "Webhook-Signature": f"v1,bogus {signature}",  # several signatures: any may match
    }
    verify(secret=secret, headers=headers, body=BODY)


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"body": b'{"subject": "Hellp"}'}, "no v1 signature in webhook-signature matches"),
        ({"secret": generate_secret()}, "no v1 signature in webhook-signature matches"),
        ({"now": 10_000}, "webhook-timestamp is -"),
        ({"drop": "webhook-id"}, "the webhook-id, webhook-timestamp and webhook-signature"),
    ],
)
def test_it_says_why_a_delivery_does_not_verify(change, problem):
    secret = generate_secret()
    headers = signature_headers(secret=secret, msg_id="msg_1", timestamp=20_000, body=BODY)
    headers.pop(change.get("drop", ""), None)
    with pytest.raises(SignatureProblem, match=re.escape(problem)):
        verify(
            secret=change.get("secret", secret),
            headers=headers,
            body=change.get("body", BODY),
            now=change.get("now", 20_000),
        )


# --- The command, run as the quickstart runs it ------------------------------------


class Receiver:
    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "manage.py", "webhook_receiver", "--port", "0", *args],
            cwd=ROOT,
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        first = self.next_line()
        self.url = re.search(r"Listening on (http://\S+/)", first)[1]

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def next_line(self) -> str:
        return self.lines.get(timeout=60)

    def request_lines(self) -> list[str]:
        """The lines printed for one request, up to its answer line."""
        lines = [self.next_line()]
        while not lines[-1].startswith("<-- "):
            lines.append(self.next_line())
        return lines

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


@pytest.fixture
def receiver_factory() -> Iterator:
    started: list[Receiver] = []

    def start(*args: str) -> Receiver:
        started.append(Receiver(*args))
        return started[-1]

    yield start
    for receiver in started:
        receiver.stop()


def post_signed(receiver: Receiver, alice, alice_domain) -> delivery.SendResult:
    """A real delivery from Conduit: rendered, signed and POSTed by the delivery engine."""
    webhook = make_webhook(alice, alice_domain, receiver.url + "hook")
    raw = build_simulated_message(
        mail_from="sender@example.net",
        to=webhook.address,
        subject="Hello from the quickstart",
        text="Hello.",
    )
    envelope = Envelope(
        mail_from="sender@example.net", rcpt_to=[webhook.address], client_ip=None, helo=None
    )
    source = Source(raw=raw, envelope=envelope, auth=AuthResults())
    return delivery.send(webhook=webhook, source=source, webhook_message_id="msg_quickstart")


@pytest.mark.django_db
def test_it_prints_a_delivery_and_verifies_its_signature(
    receiver_factory, alice, alice_domain, delivery_settings
):
    receiver = receiver_factory("--secret", SECRET)
    sent = post_signed(receiver, alice, alice_domain)
    assert sent.attempt.http_status == 200
    lines = receiver.request_lines()
    assert lines[0].startswith("--> POST /hook at ")
    assert lines[0].endswith("webhook-id msg_quickstart")
    assert lines[1] == "    signature: valid (secret whsec_****LaSw)"
    assert lines[2] == (
        "    from sender@example.net to inbox@alice.example: 'Hello from the quickstart'"
    )
    assert '      "subject": "Hello from the quickstart",' in lines
    assert lines[-1] == "<-- 200"


@pytest.mark.django_db
def test_it_answers_401_to_a_signature_made_with_another_secret(
    receiver_factory, alice, alice_domain, delivery_settings
):
    receiver = receiver_factory("--secret", generate_secret())
    sent = post_signed(receiver, alice, alice_domain)
    assert sent.attempt.http_status == 401
    lines = receiver.request_lines()
    assert lines[1] == (
        "    signature: INVALID: no v1 signature in webhook-signature matches the secret"
    )
    assert lines[-1] == "<-- 401"


def test_without_a_secret_it_prints_and_accepts(receiver_factory):
    receiver = receiver_factory()
    headers = signature_headers(
        secret=SECRET, msg_id="msg_x", timestamp=int(time.time()), body=b"not json"
    )
    answer = requests.post(receiver.url, data=b"not json", headers=headers, timeout=10)
    assert answer.status_code == 200
    lines = receiver.request_lines()
    assert lines[1] == ("    signature: not checked (start the receiver with --secret to check it)")
    assert lines[2] == "    not json"
