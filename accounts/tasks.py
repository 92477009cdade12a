from celery import shared_task
from django.conf import settings

from accounts import services


@shared_task(name="accounts.tasks.purge_audit_log")
def purge_audit_log() -> int:
    """Audit entries are kept CONDUIT_AUDIT_RETENTION_DAYS (180) days."""
    return services.audit_purge(older_than_days=settings.CONDUIT_AUDIT_RETENTION_DAYS)
