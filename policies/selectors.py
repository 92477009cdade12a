"""Reads of the policies app; ownership is checked here, once."""

from __future__ import annotations

import uuid

from django.db.models import QuerySet

from accounts.models import Account
from conduit.errors import NotFound
from policies.models import SmtpSecurityPolicy


def smtp_policy_list(*, account: Account) -> QuerySet[SmtpSecurityPolicy]:
    return SmtpSecurityPolicy.objects.filter(account=account).prefetch_related("credentials")


def get_smtp_policy_for_account(*, account: Account, policy_id: uuid.UUID) -> SmtpSecurityPolicy:
    # No prefetch: an update replaces the credentials, and the response must show the new ones.
    policy = (
        SmtpSecurityPolicy.objects.select_related("account")
        .filter(account=account, id=policy_id)
        .first()
    )
    if policy is None:
        raise NotFound("No SMTP security policy with this id.")
    return policy
