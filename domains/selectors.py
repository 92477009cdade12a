"""Reads of the domains app; ownership is checked here, once."""

from __future__ import annotations

import uuid

from django.db.models import Q, QuerySet

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
