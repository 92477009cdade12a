"""Large attachments delivered as links: the signed, expiring URL and what it serves.

A webhook with ``attachment_link_threshold`` gets every attachment larger than
that many bytes as ``content_url`` instead of base64 ``content`` (so a 20 MB
message is a payload of a few kilobytes, and receivers behind a 1 MB body
limit stop answering 413). The URL is served by the web process
(``GET /api/v1/attachments/<token>``): the token is Django's signing of
(message id, attachment position, expiry) with SECRET_KEY, so it needs no
table and cannot be altered or extended; the bytes are read again from the
stored raw message (webhooks.rawstore.raw_bytes, wherever it lives) and the
same MIME walk as the payload's, so the link works while the message is
retained and answers 410 once it is purged.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.core import signing
from django.urls import reverse
from django.utils import timezone

from webhooks import rawstore
from webhooks.models import InboundMessage, Webhook
from webhooks.payload import AttachmentLinks, attachment_file

SALT = "conduit.attachment-link"


class LinkInvalid(Exception):
    """The token was not made by this service, or was altered."""


class LinkExpired(Exception):
    def __init__(self, expired_at: datetime) -> None:
        self.expired_at = expired_at
        super().__init__(f"The link expired at {expired_at:%Y-%m-%d %H:%M:%S} UTC")


class MessageDeleted(Exception):
    """The link was good but its message has been deleted."""


@dataclass(frozen=True)
class LinkedAttachment:
    filename: str | None
    content_type: str
    data: bytes
    expires_at: datetime


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def link_for(*, message_id: uuid.UUID, index: int, now: datetime) -> tuple[str, str]:
    """The URL of one attachment of a message, and when it expires (ISO 8601)."""
    expires = int(now.timestamp()) + settings.CONDUIT_ATTACHMENT_LINK_TTL
    token = signing.dumps([message_id.hex, index, expires], salt=SALT)
    url = settings.CONDUIT_PUBLIC_URL + reverse("attachment", args=[token])
    return url, _iso(datetime.fromtimestamp(expires, UTC))


def links_for(*, webhook: Webhook, message: InboundMessage) -> AttachmentLinks | None:
    """How this webhook's payload of this message links large attachments, if it does."""
    if webhook.attachment_link_threshold is None:
        return None
    now = timezone.now()
    return AttachmentLinks(
        over=webhook.attachment_link_threshold,
        link=lambda index: link_for(message_id=message.id, index=index, now=now),
    )


def _read_token(token: str, *, now: datetime) -> tuple[uuid.UUID, int, datetime]:
    try:
        message_hex, index, expires = signing.loads(token, salt=SALT)
        message_id = uuid.UUID(hex=message_hex)
        expires_at = datetime.fromtimestamp(int(expires), UTC)
    except (signing.BadSignature, ValueError, TypeError) as exc:
        raise LinkInvalid(str(exc)) from None
    if not isinstance(index, int) or index < 0:
        raise LinkInvalid("no attachment position")
    if now >= expires_at:
        raise LinkExpired(expires_at)
    return message_id, index, expires_at


def attachment_for_link(token: str) -> LinkedAttachment | None:
    """The attachment a link points at. LinkInvalid, LinkExpired, MessageDeleted,
    rawstore.RawMessageGone (purged) or RawStoreUnavailable say why not; None when
    the message has no attachment at that position."""
    message_id, index, expires_at = _read_token(token, now=timezone.now())
    message = InboundMessage.objects.filter(id=message_id).first()
    if message is None:
        raise MessageDeleted()
    found = attachment_file(rawstore.raw_bytes(message), index)
    if found is None:
        return None
    entry, data = found
    return LinkedAttachment(
        filename=entry["filename"],
        content_type=entry["content_type"],
        data=data,
        expires_at=expires_at,
    )


def seconds_left(expires_at: datetime) -> int:
    return max(0, int((expires_at - timezone.now()) / timedelta(seconds=1)))
