"""Accepting mail: what the SMTP ingress hands to the webhooks app, and all it uses of it.

The ingress imports nothing else from ``webhooks`` (tests/test_import_cycles.py
holds it to that): it looks recipients up at RCPT (webhook_for_recipient) and
again after DATA (active_webhooks; the Webhook model only as their type),
stores what it accepted (messages_accept) with its Message-ID and Subject read
as the payload reads them (message_id_and_subject), puts the new deliveries on the
queue (publish), and asks whether the database is PostgreSQL (on_postgresql:
only there does it hear of route changes, and run more than one process).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from django.utils import timezone

from webhooks import delivery, rawstore, storage
from webhooks.delivery import TASK_BATCH
from webhooks.delivery import enqueue_many as publish
from webhooks.mail.headers import message_id_and_subject
from webhooks.models import Webhook
from webhooks.rawstore import RawStoreUnavailable
from webhooks.selectors import webhook_for_recipient
from webhooks.selectors import webhooks_active_by_id as active_webhooks
from webhooks.storage import BINARY_RAW_BYTES, AcceptedMessage, NewMessage, on_postgresql

__all__ = [
    "BINARY_RAW_BYTES",
    "TASK_BATCH",
    "AcceptedMessage",
    "NewMessage",
    "RawStoreUnavailable",
    "Webhook",
    "active_webhooks",
    "message_accept",
    "message_id_and_subject",
    "messages_accept",
    "on_postgresql",
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

    With an object store for raw messages (CONDUIT_RAW_STORAGE), each
    message's object is written before the rows, the group's in parallel;
    if any write fails, RawStoreUnavailable and nothing is stored.
    """
    if not new_messages:
        return []
    message_ids = [uuid.uuid4() for _ in new_messages]
    location = rawstore.write_location()
    if not location:
        accepted = storage.insert_messages(new_messages, timezone.now(), message_ids=message_ids)
    else:
        # The objects first, then the rows: a committed row always has its
        # object. RawStoreUnavailable (the store is down or too slow) fails
        # the whole call, so no session is told 250.
        raws = [(i, new.raw) for i, new in zip(message_ids, new_messages, strict=True)]
        rawstore.write_objects(location, raws)
        try:
            accepted = storage.insert_messages(
                new_messages, timezone.now(), message_ids=message_ids, raw_store=location
            )
        except Exception:
            rawstore.discard_unused(location, message_ids)
            raise
    if enqueue:
        # After the commit: now, or when the caller's transaction commits.
        ids = [i for item in accepted for i in item.delivery_ids]
        storage.after_commit(lambda: delivery.enqueue_many(ids))
    return accepted
