"""Reads of the accounts app; ownership is checked here, once."""

from __future__ import annotations

import uuid

from django.db.models import QuerySet

from accounts.models import Account, ApiToken, AuditLogEntry
from conduit.errors import NotFound


def api_token_list(*, account: Account) -> QuerySet[ApiToken]:
    return ApiToken.objects.filter(account=account).order_by("-created_at")


def get_api_token_for_account(*, account: Account, token_id: uuid.UUID) -> ApiToken:
    api_token = ApiToken.objects.filter(account=account, id=token_id).first()
    if api_token is None:
        raise NotFound("No API token with this id.")
    return api_token


def audit_log_list(*, account: Account) -> QuerySet[AuditLogEntry]:
    return AuditLogEntry.objects.filter(account=account).order_by("-created_at", "-id")
