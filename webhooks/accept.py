"""Accepting mail: what the SMTP ingress hands to the webhooks app, and all it uses of it.

The ingress imports nothing else from ``webhooks``: it looks recipients up
(webhook_for_recipient, the Webhook model), stores what it accepted
(messages_accept) and puts the new deliveries on the queue (publish).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.db import transaction
from django.utils import timezone

from webhooks import delivery, storage
from webhooks.delivery import TASK_BATCH
from webhooks.delivery import enqueue_many as publish
from webhooks.models import Webhook
from webhooks.selectors import webhook_for_recipient
from webhooks.storage import BINARY_RAW_BYTES, AcceptedMessage, NewMessage

__all__ = [
    "BINARY_RAW_BYTES",
    "TASK_BATCH",
    "AcceptedMessage",
    "NewMessage",
    "Webhook",
    "message_accept",
    "messages_accept",
    "publish",
    "webhook_for_recipient",
]


def message_accept(**fields: Any) -> AcceptedMessage:
    """Store one message (see messages_accept); keyword arguments as NewMessage."""
    return messages_accept([NewMessage(**fields)])[0]


def messages_accept(
    new_messages: Sequence[NewMessage], *, enqueue: bool = True
) -> list[AcceptedMessage]:
    """Store messages and one pending delivery per webhook each, then enqueue them.

    One transaction: either every message and all its deliveries exist (and
    the senders get 250) or nothing does (and they retry). Several messages
    share it when the ingress groups concurrent sessions (a group commit):
    one statement and one commit for all of them (storage.insert_messages).
    Tasks go on the queue only after the commit, so a worker never looks for
    an unwritten row; with ``enqueue=False`` the caller does that (publish).
    """
    if not new_messages:
        return []
    accepted = storage.insert_messages(new_messages, timezone.now())
    if enqueue:
        # After the commit: now, or when the caller's transaction commits.
        ids = [i for item in accepted for i in item.delivery_ids]
        transaction.on_commit(lambda: delivery.enqueue_many(ids), robust=True)
    return accepted
