"""Real parts for the notifications: an SMTP server on loopback that keeps what
it receives, the operational webhook as a local HTTP server, tasks run in the
test's process (eager) so that each event's path can be followed step by step."""

from __future__ import annotations

import email
import email.policy
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from aiosmtpd.controller import Controller

from conduit.celery import app as celery_app
from notifications import tasks  # noqa: F401  (registers the tasks, as a worker does)
from notifications.models import NotificationSettings
from tests.ingress.processes import free_port
from webhooks import tasks as webhook_tasks  # noqa: F401

OPS_SECRET_KEY = "webhook_secret"


@dataclass
class MailServer:
    """What the SMTP server received: one parsed message per DATA."""

    messages: list[email.message.EmailMessage] = field(default_factory=list)
    arrived: threading.Event = field(default_factory=threading.Event)

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        parsed = email.message_from_bytes(
            envelope.content,  # type: ignore[attr-defined]
            policy=email.policy.default,
        )
        parsed["X-Envelope-To"] = ", ".join(envelope.rcpt_tos)  # type: ignore[attr-defined]
        self.messages.append(parsed)  # type: ignore[arg-type]
        self.arrived.set()
        return "250 OK"

    def bodies(self) -> list[str]:
        return [m.get_body(("plain",)).get_content() for m in self.messages]


@pytest.fixture
def smtp_server(settings) -> Iterator[MailServer]:
    """A real SMTP server on loopback; Django's SMTP backend sends to it."""
    handler = MailServer()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST = "127.0.0.1"
    settings.EMAIL_PORT = controller.port
    settings.EMAIL_USE_TLS = False
    settings.EMAIL_HOST_USER = ""
    settings.EMAIL_HOST_PASSWORD = ""
    yield handler
    controller.stop()


@pytest.fixture
def eager_tasks() -> Iterator[None]:
    """Tasks published by the code under test run at once, in this process."""
    celery_app.conf.update(task_always_eager=True)
    yield
    celery_app.conf.update(task_always_eager=False)


@pytest.fixture
def notify_settings(settings, delivery_settings):
    settings.CONDUIT_NOTIFY_FAILING_AFTER = 3
    settings.CONDUIT_NOTIFY_DIGEST_SECONDS = 60.0
    settings.CONDUIT_DEACTIVATE_FAILING_AFTER_HOURS = 120
    return settings


@pytest.fixture
def ops_webhook(alice, httpserver) -> NotificationSettings:
    """Alice's operational webhook: the local HTTP server's /ops, answering 204."""
    httpserver.expect_request("/ops", method="POST").respond_with_data("", status=204)
    return NotificationSettings.objects.create(
        account=alice,
        webhook_url=httpserver.url_for("/ops"),
        webhook_secret="whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0NTY3ODk=",
    )
