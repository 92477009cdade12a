"""Deliveries made and attempted one at a time, so each attempt's events can be followed."""

from __future__ import annotations

import json
import uuid

from django.utils import timezone
from standardwebhooks.webhooks import Webhook as StandardWebhook

from tests.delivery_fixtures import RAW
from webhooks import accept as webhook_accept
from webhooks import delivery
from webhooks.models import Delivery, Webhook


def new_delivery(webhook: Webhook, n: int = 0) -> uuid.UUID:
    """A stored message for the webhook with its pending delivery, no task queued."""
    [accepted] = webhook_accept.messages_accept(
        [
            webhook_accept.NewMessage(
                raw=RAW + f"{n}\r\n".encode(),
                mail_from="sender@example.net",
                recipients={webhook.id: [webhook.address]},
                accounts={webhook.id: webhook.account_id},
                client_ip="192.0.2.10",
                helo="mail.example.net",
                message_id_header=f"<m{n}@example.net>",
                subject="Hello there",
            )
        ],
        enqueue=False,
    )
    return accepted.delivery_ids[0]


def attempt(delivery_id: uuid.UUID) -> str:
    """Run the delivery's next attempt now, as the worker would when it is due."""
    Delivery.objects.filter(id=delivery_id).update(next_attempt_at=timezone.now(), enqueued_at=None)
    return delivery.deliver(delivery_id=delivery_id)


class Target:
    """The webhook's receiver: answers with whatever status the test sets."""

    def __init__(self, httpserver, status: int = 200) -> None:
        from werkzeug.wrappers import Response

        self.status = status
        httpserver.expect_request("/hook").respond_with_handler(
            lambda request: Response("answer", status=self.status)
        )


def ops_events(httpserver, secret: str) -> list[dict]:
    """The events the operational webhook received, each signature verified."""
    events = []
    for request, _response in httpserver.log:
        if request.path != "/ops":
            continue
        body = request.get_data()
        StandardWebhook(secret).verify(body, dict(request.headers))
        events.append(json.loads(body))
    return events
