from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import F
from django.db.models.functions import Lower


class SmtpSecurityPolicy(models.Model):
    """What the SMTP ingress demands of senders before a webhook receives their mail.

    The lists are stored in the canonical comma-separated text of policies.checks
    (normalise_ip_list, normalise_domain_list); empty means no restriction.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    account = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="smtp_policies"
    )
    name = models.CharField(max_length=100)
    require_smtp_auth = models.BooleanField(
        default=False, help_text="Senders must log in (SMTP AUTH) with one of the credentials."
    )
    require_spf = models.BooleanField(default=False, help_text="SPF must pass.")
    require_dkim = models.BooleanField(default=False, help_text="A DKIM signature must verify.")
    require_dmarc = models.BooleanField(
        default=False,
        help_text="DMARC must pass: SPF or DKIM passes for a domain aligned with From.",
    )
    allowed_source_ips = models.TextField(
        blank=True, help_text="IPs and CIDR networks senders may connect from; empty: any."
    )
    allowed_spf_domains = models.TextField(
        blank=True, help_text="Domains whose SPF pass counts (subdomains included); empty: any."
    )
    allowed_dkim_domains = models.TextField(
        blank=True,
        help_text="Domains whose DKIM signature counts (subdomains included); empty: any.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "SMTP security policy"
        verbose_name_plural = "SMTP security policies"
        ordering = ["name", "created_at"]

    def __str__(self) -> str:
        return self.name

    def credential_hashes(self) -> dict[str, str]:
        """username -> password hash: the ``stored`` of policies.checks.credentials_valid.

        Uses prefetched credentials when the query prefetched them.
        """
        return {
            credential.username: credential.password_hash for credential in self.credentials.all()
        }


class SmtpCredential(models.Model):
    """One SMTP AUTH login of a policy. The password is kept only as a Django hash."""

    # Auto-increment id: listing by id keeps the order the user wrote the entries in.
    policy = models.ForeignKey(
        SmtpSecurityPolicy, on_delete=models.CASCADE, related_name="credentials"
    )
    username = models.CharField(max_length=254)
    password_hash = models.CharField(max_length=256)

    class Meta:
        verbose_name = "SMTP credential"
        ordering = ["id"]
        constraints = [
            # parse_credentials refuses "Bob" beside "bob"; the database agrees.
            models.UniqueConstraint(
                F("policy"), Lower("username"), name="smtp_credential_username_unique"
            )
        ]

    def __str__(self) -> str:
        return self.username
