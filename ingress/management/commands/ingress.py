"""``manage.py ingress``: run the SMTP server that turns mail into webhook deliveries."""

from __future__ import annotations

import asyncio
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from ingress.server import serve


class Command(BaseCommand):
    help = "Run the SMTP ingress (aiosmtpd). Stops gracefully on SIGTERM."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default=settings.CONDUIT_INGRESS_HOST)
        parser.add_argument("--port", type=int, default=settings.CONDUIT_INGRESS_PORT)

    def handle(self, *args: Any, **options: Any) -> None:
        asyncio.run(serve(host=options["host"], port=options["port"]))
