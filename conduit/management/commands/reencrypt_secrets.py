"""Re-encrypt every secret at rest with the first key of CONDUIT_ENCRYPTION_KEYS.

Rotation: put the new key first in CONDUIT_ENCRYPTION_KEYS, keep the old ones
after it, restart the processes, run this command, then remove the old keys.
"""

from __future__ import annotations

from typing import Any

from django.apps import apps
from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser
from django.db import transaction

from conduit import crypto
from conduit.fields import EncryptedTextField


class Command(BaseCommand):
    help = "Re-encrypt webhook secrets and TOTP seeds with the first CONDUIT_ENCRYPTION_KEYS key."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--print-derived-key",
            action="store_true",
            help="Print the key derived from SECRET_KEY (used while CONDUIT_ENCRYPTION_KEYS "
            "is unset), to list it when moving to explicit keys or changing SECRET_KEY.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["print_derived_key"]:
            self.stdout.write(crypto.derived_key(settings.SECRET_KEY))
            return
        for model in apps.get_models():
            fields = [f.name for f in model._meta.fields if isinstance(f, EncryptedTextField)]
            if not fields:
                continue
            count = 0
            for row in model._default_manager.values("pk", *fields).iterator():
                pk = row.pop("pk")
                # Read through the field (any key decrypts), written back
                # through it (the first key encrypts); one row at a time, so a
                # failure leaves every row readable.
                with transaction.atomic():
                    model._default_manager.filter(pk=pk).update(**row)
                count += 1
            label = model._meta.label
            self.stdout.write(f"{label}: {count} row(s) re-encrypted ({', '.join(fields)})")
