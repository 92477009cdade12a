from __future__ import annotations

import secrets
import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q

VERIFICATION_TOKEN_PREFIX = "conduit-verify="


def new_verification_token() -> str:
    """The value the owner publishes in TXT ``_conduit-verify.<domain>``; unguessable."""
    return VERIFICATION_TOKEN_PREFIX + secrets.token_urlsafe(24)


class Domain(models.Model):
    """One account's claim of a domain name; ``verified`` once its DNS proves control.

    Several accounts may claim the same name, but only one claim can be verified:
    verifying deletes the other accounts' claims (see services.domain_verify).
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    account = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="domains"
    )
    # Lower-case A-label form (policies.checks.normalise_domain_name), no trailing dot.
    name = models.CharField(max_length=253)
    verification_token = models.CharField(max_length=64, default=new_verification_token)
    verified = models.BooleanField(default=False)
    verified_at = models.DateTimeField(null=True, blank=True)
    is_public = models.BooleanField(
        default=False,
        help_text="Any account may put webhook addresses on a public domain. Set by operators.",
    )
    # The periodic re-check of a verified domain's MX and TXT (domains.services.
    # domain_recheck): when it last ran, and what it found wrong (empty: nothing).
    dns_checked_at = models.DateTimeField(null=True, blank=True, editable=False)
    # A database default too: processes still running the code before this
    # field (during a deploy) insert domains without it.
    dns_problem = models.TextField(blank=True, default="", db_default="", editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name", "created_at"]
        constraints = [
            models.UniqueConstraint(fields=["account", "name"], name="domain_claimed_once"),
            # Mail for a name can go to one account only.
            models.UniqueConstraint(
                fields=["name"], condition=Q(verified=True), name="domain_verified_once"
            ),
            # Public means "anyone may use it", which is only safe for a name whose
            # DNS really points here; it also keeps a public name from being claimed.
            models.CheckConstraint(
                condition=Q(is_public=False) | Q(verified=True), name="domain_public_is_verified"
            ),
        ]
        indexes = [models.Index(fields=["name"])]

    def __str__(self) -> str:
        return self.name
