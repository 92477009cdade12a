"""Every write of the policies app: create, update, delete SMTP security policies.

Field formats are checked by the serializers (policies.checks); the rules that
need the stored policy live here: masked passwords, and SMTP AUTH needing a login.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from django.contrib.auth.hashers import make_password
from django.db import transaction

from accounts.models import Account
from accounts.services import audit_record
from conduit.errors import Unprocessable
from policies.checks import MASKED_PASSWORD, Credential
from policies.models import SmtpCredential, SmtpSecurityPolicy

POLICY_FIELDS = (
    "name",
    "require_smtp_auth",
    "require_spf",
    "require_dkim",
    "require_dmarc",
    "allowed_source_ips",
    "allowed_spf_domains",
    "allowed_dkim_domains",
)


def _hash_credentials(
    credentials: Sequence[Credential], *, stored: Mapping[str, str]
) -> list[tuple[str, str]]:
    """(username, password hash) per entry; a masked entry takes the stored hash."""
    unknown = [c.username for c in credentials if c.password is None and c.username not in stored]
    if unknown:
        raise Unprocessable(
            "smtp_credentials keeps a stored password for a user who has none.",
            details={
                "smtp_credentials": [
                    f"{name!r} has no stored password to keep: send {name}:<password> "
                    f"instead of {name}:{MASKED_PASSWORD}"
                    for name in unknown
                ]
            },
        )
    return [
        (c.username, stored[c.username] if c.password is None else make_password(c.password))
        for c in credentials
    ]


def _require_login_possible(*, require_smtp_auth: bool, credential_count: int) -> None:
    if require_smtp_auth and not credential_count:
        message = (
            "require_smtp_auth is true but there are no credentials: add username:password "
            "entries, or set require_smtp_auth to false."
        )
        raise Unprocessable(message, details={"smtp_credentials": [message]})


def _store_credentials(*, policy: SmtpSecurityPolicy, hashed: list[tuple[str, str]]) -> None:
    policy.credentials.all().delete()
    SmtpCredential.objects.bulk_create(
        SmtpCredential(policy=policy, username=username, password_hash=password_hash)
        for username, password_hash in hashed
    )


def smtp_policy_create(
    *,
    account: Account,
    name: str,
    ip: str | None,
    require_smtp_auth: bool = False,
    require_spf: bool = False,
    require_dkim: bool = False,
    require_dmarc: bool = False,
    allowed_source_ips: str = "",
    allowed_spf_domains: str = "",
    allowed_dkim_domains: str = "",
    smtp_credentials: Sequence[Credential] = (),
) -> SmtpSecurityPolicy:
    """Create a policy; the list fields must already be normalised (policies.checks)."""
    hashed = _hash_credentials(smtp_credentials, stored={})
    _require_login_possible(require_smtp_auth=require_smtp_auth, credential_count=len(hashed))
    policy = SmtpSecurityPolicy(
        account=account,
        name=name,
        require_smtp_auth=require_smtp_auth,
        require_spf=require_spf,
        require_dkim=require_dkim,
        require_dmarc=require_dmarc,
        allowed_source_ips=allowed_source_ips,
        allowed_spf_domains=allowed_spf_domains,
        allowed_dkim_domains=allowed_dkim_domains,
    )
    with transaction.atomic():
        policy.save()
        _store_credentials(policy=policy, hashed=hashed)
        audit_record(
            account=account, action="policy.created", ip=ip, policy_id=str(policy.id), name=name
        )
    return policy


def smtp_policy_update(
    *, policy: SmtpSecurityPolicy, data: Mapping[str, Any], ip: str | None
) -> SmtpSecurityPolicy:
    """Apply the fields present in ``data``; absent fields keep their values.

    ``smtp_credentials``, when present, replaces the whole set: entries left out
    are removed, ``user:********`` keeps that user's stored password.
    """
    with transaction.atomic():
        # Locked: two updates at once would both rebuild the credentials from the
        # same stored set, and the second would trip over the first's usernames.
        policy = (
            SmtpSecurityPolicy.objects.select_for_update(of=("self",))
            .select_related("account")
            .get(id=policy.id)
        )
        changed = [
            field
            for field in POLICY_FIELDS
            if field in data and data[field] != getattr(policy, field)
        ]
        stored = policy.credential_hashes()
        hashed = None
        if "smtp_credentials" in data:
            credentials: Sequence[Credential] = data["smtp_credentials"]
            hashed = _hash_credentials(credentials, stored=stored)
            # A new password counts as a change even if it equals the old one: only
            # its hash is known.
            if [c.username for c in credentials] != list(stored) or any(
                c.password is not None for c in credentials
            ):
                changed.append("smtp_credentials")
        _require_login_possible(
            require_smtp_auth=data.get("require_smtp_auth", policy.require_smtp_auth),
            credential_count=len(hashed if hashed is not None else stored),
        )
        if not changed:
            return policy
        fields = [field for field in changed if field != "smtp_credentials"]
        for field in fields:
            setattr(policy, field, data[field])
        policy.save(update_fields=[*fields, "updated_at"])
        if hashed is not None and "smtp_credentials" in changed:
            _store_credentials(policy=policy, hashed=hashed)
        audit_record(
            account=policy.account,
            action="policy.updated",
            ip=ip,
            policy_id=str(policy.id),
            changed=changed,
        )
    return policy


def smtp_policy_delete(*, policy: SmtpSecurityPolicy, ip: str | None) -> None:
    # Webhooks using the policy keep working without it (their FK is SET_NULL).
    with transaction.atomic():
        audit_record(
            account=policy.account,
            action="policy.deleted",
            ip=ip,
            policy_id=str(policy.id),
            name=policy.name,
        )
        policy.delete()
