"""Reads of the webhooks app: ownership checks and recipient resolution live here, once."""

from __future__ import annotations

import uuid

from django.db.models import QuerySet

from accounts.models import Account
from conduit.errors import NotFound
from webhooks.models import DeliveryLog, Webhook
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
