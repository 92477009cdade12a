"""The two ways a notice goes out: a mail to the account's address, and the
account's operational webhook (the same notice as JSON, signed the Standard
Webhooks way with the account's own secret, through the one outbound HTTP
helper and its SSRF guard). Each reports what happened as a short text kept
on the notice: "sent", or "failed: <why>"."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.core.mail import EmailMessage
from django.template.loader import render_to_string

from notifications.models import Notification
from webhooks import outbound
from webhooks.signing import signature_headers

logger = logging.getLogger(__name__)

SENT = "sent"
OFF = "off"
SUBJECT_PREFIX = "[Conduit] "
# The type of the event a new operational webhook URL is tested with.
TEST_EVENT = "notification.test"


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z") if value else None


def _context(notice: Notification) -> dict[str, Any]:
    fixes = [
        (call, json.dumps(call["body"]) if call.get("body") else "")
        for call in notice.details.get("fix", [])
    ]
    return {
        "notice": notice,
        "details": notice.details,
        "fixes": fixes,
        "created_at": _iso(notice.created_at),
        "public_url": settings.CONDUIT_PUBLIC_URL,
    }


def render_body(notice: Notification) -> str:
    """A notice's mail text, from templates/notifications/<event>.txt."""
    return render_to_string(f"notifications/{notice.event}.txt", _context(notice)).strip() + "\n"


def email_send(*, to: str, notices: Sequence[Notification]) -> str:
    """One mail for one notice, one digest for several."""
    if len(notices) == 1:
        subject = SUBJECT_PREFIX + notices[0].summary
        body = render_to_string("notifications/single.txt", {"body": render_body(notices[0])})
    else:
        subject = f"{SUBJECT_PREFIX}{len(notices)} notices about your webhooks and domains"
        body = render_to_string(
            "notifications/digest.txt",
            {"parts": [(notice, render_body(notice)) for notice in notices]},
        )
    try:
        EmailMessage(subject=subject, body=body, to=[to]).send()
    except Exception as exc:  # the mail server's problem, kept on the notice
        logger.warning("Notification mail to %s not sent: %s", to, exc)
        return f"failed: {exc.__class__.__name__}: {exc}"[:300]
    return SENT


def event_json(notice: Notification) -> dict[str, Any]:
    """A notice as the operational webhook receives it (Standard Webhooks' shape)."""
    return {
        "type": notice.event,
        "timestamp": _iso(notice.created_at),
        "data": {
            "id": str(notice.id),
            "summary": notice.summary,
            "webhook_id": str(notice.webhook_id) if notice.webhook_id else None,
            "domain_id": str(notice.domain_id) if notice.domain_id else None,
            **notice.details,
        },
    }


def webhook_post(*, url: str, secret: str, msg_id: str, event: dict[str, Any]) -> str:
    """POST one signed event; "sent" on a 2xx, else what went wrong."""
    body = json.dumps(event, separators=(",", ":")).encode()
    headers = signature_headers(secret=secret, msg_id=msg_id, timestamp=int(time.time()), body=body)
    headers["Content-Type"] = "application/json"
    result = outbound.post(
        url=url,
        body=body,
        headers=headers,
        connect_timeout=settings.CONDUIT_DELIVERY_CONNECT_TIMEOUT,
        total_timeout=settings.CONDUIT_DELIVERY_TIMEOUT,
        allow_private=settings.CONDUIT_ALLOW_PRIVATE_TARGETS,
        max_body_bytes=1024,
        name_private_setting=settings.DEBUG,
    )
    if result.http_status is not None and 200 <= result.http_status < 300:
        return SENT
    if result.error:
        return f"failed: {result.error}"[:300]
    return f"failed: HTTP {result.http_status}"


def notice_post(*, url: str, secret: str, notice: Notification) -> str:
    # webhook-id is the notice's: a receiver that sees it twice drops the second.
    return webhook_post(
        url=url, secret=secret, msg_id=f"ntf_{notice.id.hex}", event=event_json(notice)
    )


def probe_post(*, url: str, secret: str, now: datetime) -> str:
    """The signed test event a new operational webhook URL must accept (2xx)."""
    event = {
        "type": TEST_EVENT,
        "timestamp": _iso(now),
        "data": {"summary": "Conduit checks that this URL receives its notifications."},
    }
    return webhook_post(
        url=url, secret=secret, msg_id=f"ntf_test_{int(now.timestamp())}", event=event
    )
