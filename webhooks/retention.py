"""How long raw messages are kept, and the purge that drops them.

Each webhook chooses (``Webhook.raw_retention_days``, null = the service's
CONDUIT_RAW_MESSAGE_RETENTION_DAYS, at most CONDUIT_RAW_MESSAGE_MAX_RETENTION_DAYS)
and may ask for the raw message to go as soon as it was delivered
(``delete_raw_when_delivered``). A message belongs to every webhook it has a
delivery for, so:

- it keeps its raw content for the *longest* retention among those webhooks
  (a message whose webhooks are all gone: the service default);
- it goes as soon as it was delivered only when *every* one of its deliveries
  succeeded and *every* one of its webhooks asks for that; otherwise its
  retention in days applies (a failed delivery stays recoverable);
- while any delivery is still pending or being sent, it is kept whatever the
  retention says: it cannot be delivered without it.

Purging clears the row's ``raw`` and sets ``raw_purged_at``; an object-store
copy is deleted first (webhooks.rawstore.discard), so a row is never marked
purged while its object lingers. The logs and the message's metadata stay.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.utils import timezone

from conduit.logs import log_ids
from webhooks import rawstore
from webhooks.models import Delivery, InboundMessage, Webhook

logger = logging.getLogger(__name__)

# Rows purged per statement (and objects per delete request).
PURGE_BATCH = 1000

_UNFINISHED = [Delivery.Status.PENDING, Delivery.Status.DELIVERING]


def retention_problem(days: int | None) -> str | None:
    """Why ``days`` is not a retention a webhook may choose, or None when it may."""
    if days is None:
        return None
    longest = settings.CONDUIT_RAW_MESSAGE_MAX_RETENTION_DAYS
    if days < 0 or days > longest:
        return (
            f"Raw messages are kept 0 to {longest} days on this service (null for its "
            f"default of {settings.CONDUIT_RAW_MESSAGE_RETENTION_DAYS}); {days} is outside that."
        )
    return None


def retention_days(webhook: Webhook) -> int:
    """How many days this webhook's messages keep their raw content."""
    if webhook.raw_retention_days is None:
        return settings.CONDUIT_RAW_MESSAGE_RETENTION_DAYS
    return webhook.raw_retention_days


def _deliveries() -> QuerySet[Delivery]:
    return Delivery.objects.filter(message=OuterRef("pk"))


def _kept() -> QuerySet[InboundMessage]:
    """Messages that still have their raw content and no delivery in progress."""
    return InboundMessage.objects.filter(raw_purged_at__isnull=True).filter(
        ~Exists(_deliveries().filter(status__in=_UNFINISHED))
    )


def _past_retention(days: int, *, now: datetime) -> QuerySet[InboundMessage]:
    """Kept messages older than ``days`` whose webhooks keep nothing longer."""
    default = settings.CONDUIT_RAW_MESSAGE_RETENTION_DAYS
    longer = Q(webhook__raw_retention_days__gt=days)
    if default > days:
        longer |= Q(webhook__raw_retention_days__isnull=True)
    due = _kept().filter(received_at__lt=now - timedelta(days=days))
    due = due.filter(~Exists(_deliveries().filter(longer)))
    if days < default:
        # A message without deliveries (its webhooks deleted) keeps the default.
        due = due.filter(Exists(_deliveries()))
    return due


def _delivered_everywhere() -> QuerySet[InboundMessage]:
    """Kept messages delivered to every webhook, each of which asks to drop them then."""
    deliveries = _deliveries()
    return _kept().filter(
        Exists(deliveries),
        ~Exists(deliveries.exclude(status=Delivery.Status.DELIVERED)),
        ~Exists(deliveries.filter(webhook__delete_raw_when_delivered=False)),
    )


def _purge(due: QuerySet[InboundMessage], *, now: datetime) -> int:
    """Purge ``due`` in batches: objects first, then the rows (again only if
    still due, so a delivery queued again meanwhile keeps its row's content)."""
    purged = 0
    while True:
        rows = list(due.values_list("id", "raw_store")[:PURGE_BATCH])
        if not rows:
            return purged
        # RawStoreUnavailable stops the purge; the rows stay as they are and
        # the next run tries again.
        rawstore.discard(rows)
        ids = [message_id for message_id, _ in rows]
        done = due.filter(id__in=ids).update(raw=None, raw_purged_at=now)
        purged += done
        if done < len(rows):
            return purged  # the rest changed under us: the next run sees them


def purge_raw_messages(*, now: datetime | None = None) -> int:
    """The periodic purge: every message past the retention of all its webhooks
    (and any delivered everywhere that asked for that but was not dropped at
    delivery: its store was down then). Returns how many were purged."""
    now = now or timezone.now()
    in_use = set(
        Webhook.objects.filter(raw_retention_days__isnull=False)
        .values_list("raw_retention_days", flat=True)
        .distinct()
    )
    in_use.add(settings.CONDUIT_RAW_MESSAGE_RETENTION_DAYS)
    # Older than the longest retention allowed, a message is due in the passes above.
    recent = now - timedelta(days=settings.CONDUIT_RAW_MESSAGE_MAX_RETENTION_DAYS)
    purged = 0
    try:
        for days in sorted(in_use):
            purged += _purge(_past_retention(days, now=now), now=now)
        purged += _purge(_delivered_everywhere().filter(received_at__gte=recent), now=now)
    except rawstore.RawStoreUnavailable as exc:
        logger.warning("Raw messages not purged: the object store failed (%s)", exc)
    return purged


def purge_if_delivered(*, message_id: uuid.UUID) -> bool:
    """Right after a delivery succeeded for a webhook that drops raw messages
    once delivered: purge this message if that holds for all its webhooks."""
    due = _delivered_everywhere().filter(id=message_id)
    try:
        return _purge(due, now=timezone.now()) > 0
    except rawstore.RawStoreUnavailable as exc:
        # Kept for now; its retention in days purges it later.
        logger.warning(
            "Raw message %s not purged: the object store failed (%s)",
            message_id,
            exc,
            extra=log_ids(message_id=message_id),
        )
        return False
