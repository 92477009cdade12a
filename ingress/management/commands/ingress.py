"""``manage.py ingress``: run the SMTP server that turns mail into webhook deliveries."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from ingress.protocol import UnsupportedAiosmtpd
from ingress.server import process_count, run


class Command(BaseCommand):
    help = "Run the SMTP ingress (aiosmtpd). Stops gracefully on SIGTERM."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default=settings.CONDUIT_INGRESS_HOST)
        parser.add_argument("--port", type=int, default=settings.CONDUIT_INGRESS_PORT)
        parser.add_argument(
            "--processes",
            type=int,
            default=None,
            help="Processes sharing the port (default: CONDUIT_INGRESS_PROCESSES; "
            "0 = one per CPU core; always 1 on SQLite).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        processes = process_count(options["processes"])
        try:
            run(host=options["host"], port=options["port"], processes=processes)
        except UnsupportedAiosmtpd as error:
            raise CommandError(str(error)) from error
