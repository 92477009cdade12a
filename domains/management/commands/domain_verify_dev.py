"""``manage.py domain_verify_dev``: verify a development domain without public DNS.

A local trial has no DNS a public resolver would find, so the TXT and MX
checks of ``POST /api/v1/domains/{id}/verify`` cannot pass. On a development
instance (DEBUG, as bin/serve runs) the operator verifies the domain here
instead; the claim is made first when the account has none. Each use is in the
account's audit log as ``domain.verified_without_dns``. With DEBUG off it is
refused unless ``--force``: a production domain proves itself through DNS.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.models import Account, normalise_email
from conduit.errors import ApiError
from domains import services
from domains.models import Domain
from policies.checks import normalise_domain_name


class Command(BaseCommand):
    help = (
        "Verify a domain for an account without DNS records (development only; "
        "recorded in the audit log). Claims the domain first if needed."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("domain", help="the domain, e.g. example.test")
        parser.add_argument("--account", required=True, help="the owner's email address")
        parser.add_argument(
            "--force",
            action="store_true",
            help="verify even with DEBUG off (a production instance): skips the DNS proof",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.DEBUG and not options["force"]:
            raise CommandError(
                "Refused: DEBUG is off, so this is taken for a production instance, where a "
                "domain is verified by its DNS records (POST /api/v1/domains/{id}/verify). "
                "Run this on a development instance (DEBUG=true, as bin/serve runs), or pass "
                "--force to verify without DNS anyway (recorded in the audit log)."
            )
        try:
            name = normalise_domain_name(options["domain"])
        except ValueError as exc:
            raise CommandError(f"{options['domain']!r} is not a domain name: {exc}") from None
        email = normalise_email(options["account"])
        account = Account.objects.filter(email__iexact=email).first()
        if account is None:
            raise CommandError(
                f"No account has the email {email}. Sign up first (POST /api/v1/accounts), "
                "then run this again."
            )
        domain = Domain.objects.filter(account=account, name=name).first()
        try:
            if domain is None:
                domain = services.domain_claim(account=account, name=name, ip=None)
                self.stdout.write(f"Claimed {name} for {account.email}.")
            if domain.verified:
                self.stdout.write(f"{name} is already verified for {account.email}.")
                return
            reason = "development domain, verified with manage.py domain_verify_dev"
            if not settings.DEBUG:
                reason += " --force (DEBUG off)"
            services.domain_verify_without_dns(domain=domain, reason=reason)
        except ApiError as exc:
            raise CommandError(exc.message) from None
        self.stdout.write(
            self.style.SUCCESS(
                f"Verified {name} for {account.email} without DNS (domain id {domain.id}). "
                f"Webhooks may now use addresses like inbox@{name}."
            )
        )
