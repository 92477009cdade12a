"""``manage.py worker_health``: the worker's health check, for compose, Kubernetes or cron."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from conduit.celery import app as celery_app
from conduit.opsserver import worker_checks


class Command(BaseCommand):
    help = (
        "Exit 0 if a worker on this machine wrote its heartbeat recently "
        "(CONDUIT_WORKER_HEARTBEAT_FILE, CONDUIT_WORKER_HEARTBEAT_MAX_AGE) and the broker "
        "answers; exit 1 saying which is not so."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        checks = worker_checks(celery_app)
        failed = [check for check in checks if not check.ok]
        if failed:
            raise CommandError(
                "Worker unhealthy: " + "; ".join(f"{c.name}: {c.detail}" for c in failed),
                returncode=1,
            )
        self.stdout.write("Worker healthy: " + ", ".join(f"{c.name} {c.detail}" for c in checks))
