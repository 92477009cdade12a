"""Where a raw message lives, and the one way to read it back (raw_bytes).

``CONDUIT_RAW_STORAGE`` chooses where newly accepted messages go: the
database (unset, the default: the ``raw`` column, no other server needed) or
an S3-compatible object store (``s3://bucket/prefix``, see
webhooks/objectstore.py). Each message row records where its raw went
(``InboundMessage.raw_store``: empty for the database, else the location), so
messages written before a change of setting stay readable where they are.

The durability rule is the same for both: the ingress answers 250 only once
the object is written (write_objects, before the rows' transaction) and the
rows are committed. Everything that needs the bytes (the payload, a download,
an attachment link) reads them through raw_bytes.
"""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver

from webhooks.models import InboundMessage
from webhooks.objectstore import (
    Location,
    ObjectMissing,
    ObjectStore,
    ObjectStoreError,
    WritesFailed,
)

logger = logging.getLogger(__name__)

__all__ = [
    "RawMessageGone",
    "RawStoreUnavailable",
    "discard",
    "discard_unused",
    "raw_bytes",
    "write_location",
    "write_objects",
]


class RawStoreUnavailable(Exception):
    """The object store could not write or read a raw message now (down, slow, refusing)."""


class RawMessageGone(Exception):
    """The raw message is no longer kept: purged after retention (``purged_at``) or lost."""

    def __init__(self, purged_at: datetime | None) -> None:
        self.purged_at = purged_at
        super().__init__(
            f"The raw message was purged at {purged_at:%Y-%m-%d %H:%M:%S} UTC"
            if purged_at
            else "The raw message is no longer stored"
        )


DATABASE = ("", "database")


def write_location() -> str:
    """Where messages accepted now go: '' for the database, else ``s3://bucket/prefix``."""
    return _location(settings.CONDUIT_RAW_STORAGE)


@functools.cache
def _location(setting: str) -> str:
    if setting.lower() in DATABASE:
        return ""
    try:
        return str(Location.parse(setting))
    except ValueError as exc:
        raise ImproperlyConfigured(
            f"CONDUIT_RAW_STORAGE={setting!r} is neither 'database' nor s3://bucket/prefix: {exc}"
        ) from None


@functools.cache
def _store(location: str) -> ObjectStore:
    return ObjectStore(Location.parse(location), timeout=settings.CONDUIT_RAW_STORAGE_TIMEOUT)


@receiver(setting_changed)
def _forget_stores(*, setting: str, **kwargs: Any) -> None:
    # A client is made once per location and process; a changed endpoint or
    # timeout (tests, override_settings) needs a new one.
    if setting in ("CONDUIT_RAW_STORAGE", "CONDUIT_RAW_STORAGE_TIMEOUT"):
        _store.cache_clear()


def _name(message_id: uuid.UUID) -> str:
    return f"{message_id.hex}.eml"


def write_objects(location: str, messages: Sequence[tuple[uuid.UUID, bytes]]) -> None:
    """Write the raw messages to the object store at ``location``, in parallel.

    Called before the rows are inserted: a message whose row commits always
    has its object. RawStoreUnavailable when any write failed: then none of
    them may be acknowledged, and the objects that were written are removed
    (as far as the store lets us).
    """
    store = _store(location)
    try:
        store.put_many([(_name(message_id), raw) for message_id, raw in messages])
    except WritesFailed as exc:
        logger.error("The raw message store failed: %s", exc)
        if exc.written:
            _discard_names(location, exc.written)
        raise RawStoreUnavailable(str(exc)) from exc


def discard_unused(location: str, message_ids: Sequence[uuid.UUID]) -> None:
    """Best effort: remove the objects of messages whose rows were not committed."""
    _discard_names(location, [_name(message_id) for message_id in message_ids])


def _discard_names(location: str, names: list[str]) -> None:
    try:
        _store(location).delete_many(names)
    except ObjectStoreError as exc:
        logger.warning("Could not remove %d unused raw objects: %s", len(names), exc)


def raw_bytes(message: InboundMessage) -> bytes:
    """The message's raw MIME, wherever it is kept: the one reader of raw content.

    RawMessageGone once it is purged (or its object vanished);
    RawStoreUnavailable when the object store cannot be read now.
    """
    if message.raw_purged_at is not None:
        raise RawMessageGone(message.raw_purged_at)
    if not message.raw_store:
        if message.raw is None:
            raise RawMessageGone(None)
        return bytes(message.raw)
    try:
        return _store(message.raw_store).get(_name(message.id))
    except ObjectMissing as exc:
        raise RawMessageGone(None) from exc
    except ObjectStoreError as exc:
        raise RawStoreUnavailable(str(exc)) from exc


def discard(messages: Iterable[tuple[uuid.UUID, str]]) -> None:
    """Delete the stored objects of messages (id, raw_store) whose raw is being dropped
    (purge, deletion). Rows kept in the database need nothing: clearing ``raw`` is
    their deletion. RawStoreUnavailable if the store refused: the caller keeps the
    rows as they are and tries again later, so no object is left behind unseen."""
    by_location: dict[str, list[uuid.UUID]] = {}
    for message_id, location in messages:
        if location:
            by_location.setdefault(location, []).append(message_id)
    for location, ids in by_location.items():
        try:
            _store(location).delete_many([_name(message_id) for message_id in ids])
        except ObjectStoreError as exc:
            raise RawStoreUnavailable(str(exc)) from exc
