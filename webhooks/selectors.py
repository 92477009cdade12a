"""Reads of the webhooks app: ownership checks and recipient resolution live here, once."""

from __future__ import annotations

import uuid
from datetime import datetime

from django.db.models import Case, CharField, Count, F, Max, Q, QuerySet, UUIDField, Value, When
from django.db.models.functions import TruncHour

from accounts.models import Account
from conduit.errors import NotFound
from webhooks.models import Delivery, DeliveryLog, Webhook
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
