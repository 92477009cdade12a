"""Background work of the accounts app: thin tasks that call the services."""

from __future__ import annotations

import logging

from celery import shared_task
from django.conf import settings
from kombu.exceptions import OperationalError as BrokerUnavailable

from accounts import services

logger = logging.getLogger(__name__)


@shared_task(name="accounts.tasks.purge_audit_log")
def purge_audit_log() -> int:
    """Audit entries are kept CONDUIT_AUDIT_RETENTION_DAYS (180) days."""
    return services.audit_purge(older_than_days=settings.CONDUIT_AUDIT_RETENTION_DAYS)


@shared_task(name="accounts.tasks.send_password_reset")
def send_password_reset(email: str, ip: str | None) -> None:
    services.password_reset_request(email=email, ip=ip)


def enqueue_password_reset(*, email: str, ip: str | None) -> None:
    """Hand a reset request to the worker; with the broker down it is logged and dropped.

    The caller answers 202 either way, so the user simply asks again later;
    failing the request instead would not send the mail either.
    """
    try:
        send_password_reset.delay(email=email, ip=ip)
    except BrokerUnavailable as exc:
        logger.warning("Password reset request not queued, the broker is unreachable: %s", exc)
