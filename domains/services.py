"""Every write of the domains app: claims, DNS verification, deletion, public flag."""

from __future__ import annotations

import dns.resolver
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from django.utils import timezone

from accounts.models import Account
from accounts.services import audit_record
from conduit.errors import Conflict, NotFound, Unprocessable
from domains.dns import CheckFailure, check_domain_ownership, make_resolver, parse_dns_servers
from domains.models import Domain

MX_PRIORITY = 10
"""The preference the MX record pointing at CONDUIT_MX_HOST must have."""


def dns_servers() -> list[tuple[str, int]]:
    """CONDUIT_DNS_SERVERS parsed; empty means the system resolver.

    Checked once at startup (DomainsConfig.ready) so a typo stops the process
    there instead of failing the first verification.
    """
    value = settings.CONDUIT_DNS_SERVERS
    try:
        return parse_dns_servers(value)
    except ValueError as exc:
        raise ImproperlyConfigured(
            f"CONDUIT_DNS_SERVERS={value!r} is not usable: {exc}. Give comma-separated "
            "IP[:port] entries (IPv6 as [::1]:53), or leave it empty for the system resolver."
        ) from None


def dns_resolver() -> dns.resolver.Resolver:
    """A resolver on the configured DNS servers, bounded by CONDUIT_DNS_TIMEOUT."""
    return make_resolver(servers=dns_servers(), timeout=settings.CONDUIT_DNS_TIMEOUT)


def domain_claim(*, account: Account, name: str, ip: str | None) -> Domain:
    """Claim a (normalised) domain name; 409 when it is already ours or verified elsewhere."""
    if Domain.objects.filter(account=account, name=name).exists():
        raise Conflict(f"You have already claimed {name}; publish its DNS records and verify it.")
    if Domain.objects.filter(name=name, verified=True).exists():
        raise Conflict(f"{name} is verified by another account and cannot be claimed.")
    try:
        with transaction.atomic():
            domain = Domain.objects.create(account=account, name=name)
            audit_record(
                account=account,
                action="domain.claimed",
                ip=ip,
                domain_id=str(domain.id),
                name=name,
            )
    except IntegrityError:
        # The same account claimed the same name twice at once; the unique index decided.
        raise Conflict(f"You have already claimed {name}.") from None
    return domain


def _failure_message(name: str, failures: list[CheckFailure]) -> str:
    parts = [f"{failure.check.upper()} check failed: {failure.message}." for failure in failures]
    return f"Could not verify {name}. " + " ".join(parts)


def domain_verify(*, domain: Domain, ip: str | None) -> Domain:
    """Run the DNS checks; mark the domain verified, or 422 ``verification_failed``.

    A verified domain is left as it is, without a lookup: verification is not
    taken back when the records change later.
    """
    if domain.verified:
        return domain
    # The lookups run before the transaction: no row stays locked while DNS answers.
    failures = check_domain_ownership(
        domain=domain.name,
        token=domain.verification_token,
        mx_host=settings.CONDUIT_MX_HOST,
        mx_priority=MX_PRIORITY,
        resolver=dns_resolver(),
    )
    if failures:
        audit_record(
            account=domain.account,
            action="domain.verification_failed",
            ip=ip,
            domain_id=str(domain.id),
            name=domain.name,
            failures=[f"{failure.check}:{failure.reason}" for failure in failures],
        )
        raise Unprocessable(
            _failure_message(domain.name, failures),
            code="verification_failed",
            details={failure.check: [failure.message] for failure in failures},
        )
    return _mark_verified(domain=domain, ip=ip, action="domain.verified")


def domain_verify_without_dns(*, domain: Domain, reason: str) -> Domain:
    """An operator's verification with no DNS lookup (manage.py domain_verify_dev).

    For a development instance, whose test domains have no public DNS. The same
    rules as a DNS verification (one verified claim per name; the other claims
    go); the audit log says who did it and why, under its own action.
    """
    if domain.verified:
        return domain
    return _mark_verified(
        domain=domain, ip=None, action="domain.verified_without_dns", reason=reason
    )


def _mark_verified(*, domain: Domain, ip: str | None, action: str, **audit: object) -> Domain:
    # One transaction, with every claim of the name locked in a fixed order: without
    # it two accounts verifying at once could both succeed, or leave behind a claim
    # of a name that now belongs to someone else.
    with transaction.atomic():
        claims = list(
            Domain.objects.select_for_update(of=("self",))
            .select_related("account")
            .filter(name=domain.name)
            .order_by("id")
        )
        mine = next((claim for claim in claims if claim.id == domain.id), None)
        if mine is None:
            raise NotFound(
                f"This claim of {domain.name} no longer exists: another account verified "
                "the name first."
            )
        if mine.verified:
            return mine
        if any(claim.verified for claim in claims):
            raise Unprocessable(
                f"{domain.name} is already verified by another account.",
                code="verification_failed",
            )
        others = [claim for claim in claims if claim.id != mine.id]
        Domain.objects.filter(id__in=[claim.id for claim in others]).delete()
        mine.verified = True
        mine.verified_at = timezone.now()
        mine.save(update_fields=["verified", "verified_at", "updated_at"])
        for claim in others:
            # Tells the other owner why their claim disappeared.
            audit_record(
                account=claim.account,
                action="domain.claim_removed",
                ip=None,
                domain_id=str(claim.id),
                name=claim.name,
                reason="verified by another account",
            )
        audit_record(
            account=domain.account,
            action=action,
            ip=ip,
            domain_id=str(mine.id),
            name=mine.name,
            claims_removed=len(others),
            **audit,
        )
    return mine


def domain_recheck(*, domain: Domain, resolver: dns.resolver.Resolver | None = None) -> str:
    """Check a verified domain's MX and TXT again; the problem it newly has, if any.

    Returns the message of the checks that now fail when the domain was fine
    before (the account is told once, not at every re-check), else "". A check
    that could not complete (DNS timed out) says nothing about the records: the
    domain keeps its state and is tried again at the next run. Verification is
    not taken back: mail still routes by the name, and the owner decides.
    """
    failures = check_domain_ownership(
        domain=domain.name,
        token=domain.verification_token,
        mx_host=settings.CONDUIT_MX_HOST,
        mx_priority=MX_PRIORITY,
        resolver=resolver or dns_resolver(),
    )
    now = timezone.now()
    if any(failure.reason == "timeout" for failure in failures):
        Domain.objects.filter(id=domain.id).update(dns_checked_at=now)
        return ""
    problem = " ".join(f"{f.check.upper()} check failed: {f.message}." for f in failures)
    newly = bool(problem) and not domain.dns_problem
    Domain.objects.filter(id=domain.id).update(dns_checked_at=now, dns_problem=problem)
    domain.dns_checked_at, domain.dns_problem = now, problem
    return problem if newly else ""


def domain_delete(*, domain: Domain, ip: str | None) -> None:
    # Webhooks whose addresses use the domain go with it (their FK cascades).
    with transaction.atomic():
        audit_record(
            account=domain.account,
            action="domain.deleted",
            ip=ip,
            domain_id=str(domain.id),
            name=domain.name,
        )
        domain.delete()


def domain_set_public(*, domains: QuerySet[Domain], is_public: bool) -> int:
    """Operators' switch; only verified domains can be public. Returns how many changed."""
    if is_public:
        domains = domains.filter(verified=True)
    return domains.exclude(is_public=is_public).update(
        is_public=is_public, updated_at=timezone.now()
    )
