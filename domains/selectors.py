"""Reads of the domains app; ownership is checked here, once."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import F, Q, QuerySet

from accounts.models import Account
from conduit.errors import NotFound
from domains.models import Domain


def domain_list(*, account: Account) -> QuerySet[Domain]:
    """The account's own domains and every public one."""
    return Domain.objects.filter(Q(account=account) | Q(is_public=True))


def get_domain_for_account(
    *, account: Account, domain_id: uuid.UUID, include_public: bool = False
) -> Domain:
    """The account's domain (or, with ``include_public``, a public one); 404 otherwise.

    Reads may include public domains; changes never do: another account's
    domain is a 404 even when it is public.
    """
    visible = Q(account=account) | Q(is_public=True) if include_public else Q(account=account)
    domain = Domain.objects.select_related("account").filter(visible, id=domain_id).first()
    if domain is None:
        raise NotFound("No domain with this id.")
    return domain


def domains_due_for_recheck(*, now: datetime, limit: int) -> list[Domain]:
    """Verified domains whose DNS was not checked for CONDUIT_DNS_RECHECK_HOURS,
    never-checked first, at most ``limit``: what bounds the queries sent to DNS."""
    stale = now - timedelta(hours=settings.CONDUIT_DNS_RECHECK_HOURS)
    return list(
        Domain.objects.filter(verified=True)
        .filter(Q(dns_checked_at__isnull=True) | Q(dns_checked_at__lte=stale))
        .select_related("account")
        .order_by(F("dns_checked_at").asc(nulls_first=True), "id")[:limit]
    )
