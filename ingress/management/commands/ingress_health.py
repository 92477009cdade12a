"""``manage.py ingress_health``: the ingress's health check, for compose, Kubernetes or cron."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from ingress.server import readiness_checks


class Command(BaseCommand):
    help = (
        "Exit 0 if the SMTP ingress on this machine greets with 220 and the database "
        "answers; exit 1 saying which does not."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=settings.CONDUIT_INGRESS_PORT)

    def handle(self, *args: Any, **options: Any) -> None:
        checks = readiness_checks((options["host"], options["port"]))
        failed = [check for check in checks if not check.ok]
        if failed:
            raise CommandError(
                "Ingress unhealthy: " + "; ".join(f"{c.name}: {c.detail}" for c in failed),
                returncode=1,
            )
        self.stdout.write("Ingress healthy: SMTP greets with 220, the database answers")
