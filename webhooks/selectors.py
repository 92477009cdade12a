"""Reads of the webhooks app: ownership checks and recipient resolution live here, once."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, fields
from datetime import datetime

from django.db.models import (
    Case,
    CharField,
    Count,
    Exists,
    F,
    Max,
    Min,
    OuterRef,
    Prefetch,
    Q,
    QuerySet,
    Subquery,
    UUIDField,
    Value,
    When,
)
from django.db.models.functions import Coalesce, TruncHour

from accounts.models import Account
from conduit.errors import NotFound
from webhooks.models import AccountMessage, Delivery, DeliveryLog, RecoveryJob, Webhook
from webhooks.validation import CATCH_ALL


def webhook_list(*, account: Account) -> QuerySet[Webhook]:
    return Webhook.objects.filter(account=account).order_by("created_at", "id")


def get_webhook_for_account(*, account: Account, webhook_id: uuid.UUID) -> Webhook:
    webhook = Webhook.objects.filter(account=account, id=webhook_id).first()
    if webhook is None:
        raise NotFound("No webhook with this id.")
    return webhook


def delivery_log_list(*, webhook: Webhook) -> QuerySet[DeliveryLog]:
    # Served by the (webhook, -attempted_at, -id) index: page 1 reads a few rows.
    # The kept response bodies (up to 20 KB each) are not part of the API's view.
    return (
        DeliveryLog.objects.filter(webhook=webhook)
        .defer("response_body")
        .order_by("-attempted_at", "-id")
    )


def get_delivery_log_for_webhook(*, webhook: Webhook, log_id: uuid.UUID) -> DeliveryLog:
    log = DeliveryLog.objects.filter(webhook=webhook, id=log_id).first()
    if log is None:
        raise NotFound("No delivery log with this id for this webhook.")
    return log


def recipient_candidates(address: str) -> list[str]:
    """The webhook addresses that may serve a recipient, best first.

    Exact address, then ``local+tag@domain`` without its tag, then the
    domain's catch-all ``*@domain``.
    """
    local, _, domain = address.strip().lower().rpartition("@")
    if not local or not domain:
        return []
    candidates = [f"{local}@{domain}"]
    base, plus, _tag = local.partition("+")
    if plus and base:
        candidates.append(f"{base}@{domain}")
    candidates.append(f"{CATCH_ALL}@{domain}")
    return candidates


def webhook_for_recipient(address: str) -> Webhook | None:
    """The webhook an envelope recipient belongs to, or None.

    Matching is on the most specific registered address; an inactive webhook
    at that address does not fall through to a broader one.
    """
    candidates = recipient_candidates(address)
    if not candidates:
        return None
    found = {
        webhook.address: webhook
        for webhook in Webhook.objects.filter(address__in=candidates).select_related(
            "smtp_security_policy"
        )
    }
    for candidate in candidates:
        webhook = found.get(candidate)
        if webhook is not None:
            return webhook if webhook.active else None
    return None


def webhooks_active_by_id(*, ids: set[uuid.UUID]) -> dict[uuid.UUID, Webhook]:
    """The active webhooks among ``ids``, with their policies, by id (one query, none for no ids).

    What the ingress reads again after DATA: a webhook deactivated or deleted
    since RCPT gets no delivery.
    """
    if not ids:
        return {}
    return {
        webhook.id: webhook
        for webhook in Webhook.objects.filter(id__in=ids, active=True).select_related(
            "smtp_security_policy"
        )
    }


def delivery_outcomes_since(*, since: datetime) -> list[dict]:
    """Deliveries created since ``since``, counted per hour and outcome, in one query.

    Each row has ``hour``, ``outcome`` (a status, or ``retrying`` for a pending
    delivery that already failed at least once), ``count`` and ``last_at`` (the
    newest ``updated_at``). Failed and retrying rows are also split per webhook
    (``troubled_webhook_id``, ``address``); the others have both empty, so the result stays
    a few dozen rows however many webhooks there are.
    """
    retrying = Q(status=Delivery.Status.PENDING, attempts__gt=0)
    troubled = retrying | Q(status=Delivery.Status.FAILED)
    return list(
        # Naming every status lets PostgreSQL read the (status, -created_at) index
        # once per status instead of scanning the whole table.
        Delivery.objects.filter(status__in=Delivery.Status.values, created_at__gte=since)
        .annotate(
            hour=TruncHour("created_at"),
            outcome=Case(
                When(retrying, then=Value("retrying")),
                default=F("status"),
                output_field=CharField(),
            ),
            troubled_webhook_id=Case(
                When(troubled, then=F("webhook_id")), default=None, output_field=UUIDField()
            ),
            address=Case(
                When(troubled, then=F("webhook__address")),
                default=Value(""),
                output_field=CharField(),
            ),
        )
        .values("hour", "outcome", "troubled_webhook_id", "address")
        .annotate(count=Count("id"), last_at=Max("updated_at"))
        .order_by()
    )


@dataclass(frozen=True)
class DeliveryBacklog:
    """The delivery queue as the metrics show it (conduit.metrics)."""

    due: int
    oldest_due_age: float  # seconds past its due time; 0 with nothing due
    retries: int
    failing_webhooks: int


def delivery_backlog(*, now: datetime) -> DeliveryBacklog:
    """Pending deliveries due now, the oldest one's wait, those waiting for a retry and
    their webhooks, in one query over the pending rows (the partial index on
    unfinished rows: a healthy queue is small whatever the table's size)."""
    due = Q(next_attempt_at__lte=now)
    retrying = Q(attempts__gt=0)
    row = Delivery.objects.filter(status=Delivery.Status.PENDING).aggregate(
        due=Count("id", filter=due),
        oldest=Min("next_attempt_at", filter=due),
        retries=Count("id", filter=retrying),
        failing=Count("webhook_id", filter=retrying, distinct=True),
    )
    oldest = row["oldest"]
    return DeliveryBacklog(
        due=row["due"],
        oldest_due_age=max((now - oldest).total_seconds(), 0.0) if oldest else 0.0,
        retries=row["retries"],
        failing_webhooks=row["failing"],
    )


# --- Messages ------------------------------------------------------------------------

# A filtered message list is counted up to this many matches: an exact count of a
# filter over a large account would read every match (its X-Total-Count then
# says "at least this many").
MESSAGE_COUNT_CAP = 10_000


@dataclass(frozen=True)
class MessageFilters:
    """What listMessages narrows the account's messages by; None: no filter."""

    webhook: Webhook | None = None
    status: str | None = None
    sender: str | None = None
    recipient: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    message_id: str | None = None
    q: str | None = None

    @property
    def any(self) -> bool:
        return any(getattr(self, f.name) is not None for f in fields(self))


def own_deliveries(*, account: Account) -> QuerySet[Delivery]:
    """The deliveries an account may see: those to its own webhooks."""
    return Delivery.objects.filter(webhook__account=account)


def _matching_messages(*, account: Account, filters: MessageFilters) -> QuerySet[AccountMessage]:
    """The account's views of the messages that pass the filters; those on
    deliveries are an EXISTS over the account's deliveries of each message."""
    views = AccountMessage.objects.filter(account=account)
    if filters.since is not None:
        views = views.filter(received_at__gte=filters.since)
    if filters.until is not None:
        views = views.filter(received_at__lt=filters.until)
    deliveries = own_deliveries(account=account).filter(message_id=OuterRef("message_id"))
    if filters.webhook is not None:
        deliveries = deliveries.filter(webhook=filters.webhook)
    if filters.status is not None:
        deliveries = deliveries.filter(status=filters.status)
    if filters.recipient is not None:
        # rcpt_to is a JSON list of strings: match one element whole, any case.
        deliveries = deliveries.filter(rcpt_to__icontains=json.dumps(filters.recipient))
    if filters.webhook or filters.status or filters.recipient:
        views = views.filter(Exists(deliveries))
    if filters.sender is not None:
        views = views.filter(message__mail_from__iexact=filters.sender)
    if filters.message_id is not None:
        bare = filters.message_id.strip().removeprefix("<").removesuffix(">")
        views = views.filter(message__message_id_header__in=[f"<{bare}>", bare])
    if filters.q is not None:
        views = views.filter(
            Q(message__subject__icontains=filters.q) | Q(message__mail_from__icontains=filters.q)
        )
    return views


# What a page of the message list shows, read as plain values: building model
# instances (and Django's prefetch machinery) was most of that request's time.
MESSAGE_ROW = (
    "message_id",
    "received_at",
    "message__mail_from",
    "message__subject",
    "message__message_id_header",
    "message__size",
    "message__raw_purged_at",
)
DELIVERY_STATE = (
    "id",
    "message_id",
    "webhook_id",
    "rcpt_to",
    "status",
    "attempts",
    "next_attempt_at",
)


def message_list(*, account: Account, filters: MessageFilters) -> QuerySet:
    """The account's messages, newest first, as rows of MESSAGE_ROW's fields
    (their deliveries: ``deliveries_of_messages``). Unfiltered, page 1 is read
    from the (account, -received_at, -message) index."""
    return (
        _matching_messages(account=account, filters=filters)
        .order_by("-received_at", "-message_id")
        .values(*MESSAGE_ROW)
    )


def deliveries_of_messages(
    *, account: Account, message_ids: list[uuid.UUID]
) -> dict[uuid.UUID, list[dict]]:
    """The account's deliveries of those messages (DELIVERY_STATE's fields),
    oldest first, by message: one query for a page."""
    found: dict[uuid.UUID, list[dict]] = {}
    rows = (
        own_deliveries(account=account)
        .filter(message_id__in=message_ids)
        .order_by("created_at", "id")
        .values(*DELIVERY_STATE)
    )
    for row in rows:
        found.setdefault(row["message_id"], []).append(row)
    return found


def message_list_total(*, account: Account, filters: MessageFilters) -> int:
    """The list's X-Total-Count: the account's kept count when unfiltered, else
    the matches counted up to MESSAGE_COUNT_CAP."""
    if not filters.any:
        return account.message_count
    matching = _matching_messages(account=account, filters=filters)
    return matching.values("id")[:MESSAGE_COUNT_CAP].count()


def get_message_for_account(*, account: Account, message_id: uuid.UUID) -> AccountMessage:
    """The account's view of a message; 404 for a message it never received."""
    view = (
        AccountMessage.objects.filter(account=account, message_id=message_id)
        .select_related("message")
        .defer("message__raw")
        .first()
    )
    if view is None:
        raise NotFound("No message with this id in this account.")
    return view


def message_deliveries(*, view: AccountMessage) -> list[Delivery]:
    """The account's deliveries of the message, oldest first, each with its
    webhook and every attempt (``attempt_logs``, oldest first)."""
    logs = DeliveryLog.objects.order_by("attempted_at", "id")
    return list(
        own_deliveries(account=view.account)
        .filter(message_id=view.message_id)
        .select_related("webhook")
        .prefetch_related(Prefetch("logs", queryset=logs, to_attr="attempt_logs"))
        .order_by("created_at", "id")
    )


# --- Recoveries ----------------------------------------------------------------------

# A recovered delivery is done once its new attempts came to an end.
_DONE = [Delivery.Status.DELIVERED, Delivery.Status.FAILED]


def with_progress(jobs: QuerySet[RecoveryJob]) -> QuerySet[RecoveryJob]:
    """Each job with ``done``: the deliveries it sent again that were
    delivered or failed since (not those it still holds), counted in the same
    query (the delivery_recovery_idx index)."""
    done = (
        Delivery.objects.filter(recovery=OuterRef("pk"), held=False, status__in=_DONE)
        .order_by()
        .values("recovery")
        .annotate(n=Count("id"))
        .values("n")
    )
    return jobs.annotate(done=Coalesce(Subquery(done), 0))


def recovery_list(*, webhook: Webhook) -> QuerySet[RecoveryJob]:
    """The webhook's recoveries, newest first, each with ``done``."""
    return with_progress(RecoveryJob.objects.filter(webhook=webhook)).order_by("-created_at", "-id")


def get_recovery_for_webhook(*, webhook: Webhook, recovery_id: uuid.UUID) -> RecoveryJob:
    job = with_progress(RecoveryJob.objects.filter(webhook=webhook, id=recovery_id)).first()
    if job is None:
        raise NotFound("No recovery with this id for this webhook.")
    return job
