"""The password-reset mail leaves from the worker: the request neither waits for the
mail server nor does more work for an address that has an account."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from django.core import mail
from django.db import connection
from django.test.utils import CaptureQueriesContext

from accounts.models import AuditLogEntry
from tests.ingress.processes import BASE_DIR, free_port

RESET = "/api/v1/accounts/me/password-reset"


class SlowMailServer:
    """An SMTP server on loopback that holds every message until the test releases it."""

    def __init__(self) -> None:
        self.received = threading.Event()  # a message's data has arrived
        self.release = threading.Event()  # the test lets the server answer
        self.answered = threading.Event()  # the server has answered 250
        self.messages: list[str] = []

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        self.messages.append(envelope.content.decode())  # type: ignore[attr-defined]
        self.received.set()
        # Blocks this server's loop, which serves only this test's one client.
        self.release.wait(30)
        self.answered.set()
        return "250 OK"


@pytest.fixture
def slow_mail_server(settings):
    handler = SlowMailServer()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST = "127.0.0.1"
    settings.EMAIL_PORT = controller.port
    settings.EMAIL_USE_TLS = False
    yield handler
    handler.release.set()
    controller.stop()


@pytest.mark.django_db(transaction=True)
def test_it_answers_202_while_the_mail_server_still_holds_the_mail(
    api, alice, mail_worker, slow_mail_server
):
    r = api.post(RESET, {"email": "alice@example.com"})
    assert r.status_code == 202
    # Had the request sent the mail itself, it would have waited for the answer.
    assert not slow_mail_server.answered.is_set()
    assert slow_mail_server.received.wait(20), "the worker sent no mail"
    assert not slow_mail_server.answered.is_set()
    slow_mail_server.release.set()
    assert slow_mail_server.answered.wait(20)
    assert re.search(r"cdp_[A-Za-z0-9_-]+", slow_mail_server.messages[0])
    assert "alice@example.com" in slow_mail_server.messages[0]
    assert AuditLogEntry.objects.filter(account=alice, action="password.reset_requested").exists()


@pytest.mark.django_db
def test_it_does_the_same_work_for_known_and_unknown_addresses(api, alice):
    def request(email: str) -> list[str]:
        with CaptureQueriesContext(connection) as queries:
            assert api.post(RESET, {"email": email}).status_code == 202
        return [query["sql"] for query in queries.captured_queries]

    assert request("alice@example.com") == request("nobody@example.com")
    # No mail from the request itself; the worker sends it.
    assert mail.outbox == []


@pytest.mark.django_db(transaction=True)
def test_it_writes_the_mail_with_the_file_backend(api, alice, mail_worker, settings, tmp_path):
    settings.EMAIL_BACKEND = "django.core.mail.backends.filebased.EmailBackend"
    settings.EMAIL_FILE_PATH = str(tmp_path)
    assert api.post(RESET, {"email": "alice@example.com"}).status_code == 202
    assert api.post(RESET, {"email": "nobody@example.com"}).status_code == 202
    # The worker takes tasks in order; wait for alice's entry, then both ran.
    _wait_for(lambda: list(tmp_path.iterdir()))
    [written] = list(tmp_path.iterdir())
    assert "To: alice@example.com" in written.read_text()


def test_it_reads_the_mail_file_path_from_the_environment(tmp_path):
    code = "from django.conf import settings; print(settings.EMAIL_FILE_PATH)"
    env = {
        "PATH": "/usr/bin:/bin",
        "DJANGO_SETTINGS_MODULE": "conduit.settings",
        "SECRET_KEY": "x",
        "EMAIL_FILE_PATH": str(tmp_path / "outbox"),
        "CONDUIT_VAR_DIR": str(tmp_path / "var"),
    }
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=BASE_DIR, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert Path(out.stdout.strip()) == tmp_path / "outbox"


def _wait_for(condition, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the worker did not finish"
        time.sleep(0.02)
