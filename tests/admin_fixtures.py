"""Messages, deliveries and attempts as the pipeline leaves them, written directly so
that the admin's tests choose every time and outcome."""

from __future__ import annotations

from datetime import datetime, timedelta

from webhooks.models import Delivery, DeliveryLog, InboundMessage, Webhook


def make_delivery(
    webhook: Webhook,
    *,
    at: datetime,
    status: str = Delivery.Status.DELIVERED,
    attempts: list[tuple[int | None, str]] = ((200, ""),),
    mail_from: str = "sender@example.net",
    message_id: str = "<abc123@example.net>",
) -> Delivery:
    """One message to ``webhook`` received at ``at``, with one log per (status, error)."""
    message = InboundMessage.objects.create(
        mail_from=mail_from,
        rcpt_to=[webhook.address],
        client_ip="192.0.2.10",
        raw=b"Subject: hi\r\n\r\nbody\r\n",
        size=22,
        message_id_header=message_id,
        spf_result="pass",
    )
    InboundMessage.objects.filter(id=message.id).update(received_at=at)
    item = Delivery.objects.create(
        message=message,
        webhook=webhook,
        rcpt_to=[webhook.address],
        status=status,
        attempts=len(attempts),
        last_error=attempts[-1][1] if attempts else "",
    )
    for n, (http_status, error) in enumerate(attempts, start=1):
        DeliveryLog.objects.create(
            webhook=webhook,
            delivery=item,
            attempt=n,
            attempted_at=at + timedelta(seconds=n),
            duration_ms=10 * n,
            http_status=http_status,
            error=error,
            sender=mail_from,
            smtp_message_id=message_id,
        )
    # updated_at is when the delivery last changed: its last attempt.
    last = at + timedelta(seconds=len(attempts))
    Delivery.objects.filter(id=item.id).update(created_at=at, updated_at=last)
    item.refresh_from_db()
    return item
