"""Every write of the notifications: settings, recording a notice (with its
debounce), sending what is due, and the periodic checks that raise notices
(silent webhooks, verified domains' DNS).

Never a flood:
- at most one notice per webhook (or domain) and event per the account's
  ``interval_minutes`` (default 60): a later one inside it is not recorded;
- a notice waits CONDUIT_NOTIFY_DIGEST_SECONDS (60) before it is sent; a
  recovery inside that time cancels the webhook's pending failure notices
  (``webhook_failing``, ``delivery_gave_up``), and every notice of the account
  due at once goes in one digest mail.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import OuterRef, Q, Subquery
from django.utils import timezone

from accounts.models import Account
from accounts.services import audit_record
from conduit.errors import Unprocessable
from domains import selectors as domain_selectors
from domains import services as domain_services
from domains.models import Domain
from notifications import channels, notices, selectors
from notifications.models import Notification, NotificationSettings
from webhooks.health import Event
from webhooks.models import Delivery, DeliveryLog, Webhook
from webhooks.signing import generate_secret

logger = logging.getLogger(__name__)

# What a recovery makes old news.
FAILURE_EVENTS = (Event.WEBHOOK_FAILING, Event.DELIVERY_GAVE_UP)


# --- Settings ------------------------------------------------------------------------


def notification_settings_update(
    *, account: Account, data: dict[str, Any], ip: str | None
) -> tuple[NotificationSettings, str | None]:
    """Change the account's channels and events; fields left out keep their values.

    Returns the settings and, when this call set a new operational webhook URL
    (or asked for ``rotate_webhook_secret``), its new secret: shown this once.
    A new URL must accept a signed ``notification.test`` event (2xx), or the
    change is refused (422 ``webhook_url_unreachable``): notices sent to a URL
    that cannot take them would be lost unseen.
    """
    current = selectors.notification_settings_for(account=account)
    url = data.get("webhook_url", current.webhook_url)
    new_secret: str | None = None
    if url and (url != current.webhook_url or data.get("rotate_webhook_secret")):
        new_secret = generate_secret()
    if url and url != current.webhook_url:
        # Before the transaction: no row stays locked while the URL answers.
        outcome = channels.probe_post(url=url, secret=new_secret or "", now=timezone.now())
        if outcome != channels.SENT:
            raise Unprocessable(
                f"The operational webhook URL did not accept a signed test event "
                f"({outcome.removeprefix('failed: ')}). Make it answer 2xx to a POST, then "
                "save it again.",
                code="webhook_url_unreachable",
                details={"webhook_url": [outcome]},
            )
    changed = sorted(
        name
        for name in ("email_enabled", "webhook_url", "events", "interval_minutes")
        if name in data and data[name] != getattr(current, name)
    )
    # The settings and their audit entry stand or fall together.
    with transaction.atomic():
        prefs, _ = NotificationSettings.objects.select_for_update().get_or_create(account=account)
        for name in ("email_enabled", "events", "interval_minutes"):
            if name in data:
                setattr(prefs, name, data[name])
        prefs.webhook_url = url
        if not url:
            prefs.webhook_secret = ""
        elif new_secret:
            prefs.webhook_secret = new_secret
            if "webhook_secret" not in changed:
                changed.append("webhook_secret")
        prefs.save()
        audit_record(account=account, action="notifications.updated", ip=ip, changed=changed)
    return prefs, new_secret


# --- Recording ----------------------------------------------------------------------


def notification_record(
    *,
    account: Account,
    event: Event,
    summary: str,
    details: dict[str, Any],
    webhook: Webhook | None = None,
    domain: Domain | None = None,
    now: datetime | None = None,
) -> Notification | None:
    """Record a notice, pending, unless the account does not want it or was
    told of the same event about the same webhook or domain within its
    interval. None when nothing was recorded."""
    now = now or timezone.now()
    subject = Q(webhook=webhook) if webhook is not None else Q(domain=domain)
    # One transaction on the account's settings row, locked: two workers
    # recording the same event of one webhook at once would otherwise both
    # find no recent notice and both record one.
    with transaction.atomic():
        NotificationSettings.objects.get_or_create(account=account)
        prefs = NotificationSettings.objects.select_for_update().get(account=account)
        if event == Event.WEBHOOK_RECOVERED and webhook is not None:
            _cancel_failure_notices(webhook=webhook)
        if event not in prefs.events or not (prefs.email_enabled or prefs.webhook_url):
            return None
        recent = Notification.objects.filter(
            subject,
            account=account,
            event=event,
            created_at__gt=now - timedelta(minutes=prefs.interval_minutes),
        ).exclude(status=Notification.Status.CANCELLED)
        if recent.exists():
            return None
        return Notification.objects.create(
            account=account,
            webhook=webhook,
            domain=domain,
            event=event,
            summary=summary[:500],
            details=details,
            created_at=now,
        )


def _cancel_failure_notices(*, webhook: Webhook) -> int:
    """A recovery makes the webhook's failure notices not yet sent old news."""
    return Notification.objects.filter(
        webhook=webhook, status=Notification.Status.PENDING, event__in=FAILURE_EVENTS
    ).update(status=Notification.Status.CANCELLED)


def webhook_event_record(
    *, event: Event, webhook_id: uuid.UUID, facts: dict[str, Any]
) -> Notification | None:
    """A webhook's event from the delivery engine (webhooks.delivery._announce),
    with what the notice needs to say: the messages waiting and, after a
    failing stretch, how many deliveries failed for good in it."""
    webhook = Webhook.objects.select_related("account").filter(id=webhook_id).first()
    if webhook is None:
        return None  # deleted meanwhile
    mine = Delivery.objects.filter(webhook=webhook)
    waiting = mine.filter(status__in=[Delivery.Status.PENDING, Delivery.Status.DELIVERING]).count()
    since = facts.get("failing_since")
    details: dict[str, Any] = {
        **_webhook_facts(webhook),
        **facts,
        "messages_waiting": waiting,
    }
    if since and event != Event.WEBHOOK_FAILING:
        details["failed_for_good"] = mine.filter(
            status=Delivery.Status.FAILED, updated_at__gte=since
        ).count()
    details["fix"] = notices.webhook_fixes(event, webhook_id=str(webhook.id), since=since)
    summary = notices.webhook_summary(event, address=webhook.address, facts=details)
    return notification_record(
        account=webhook.account, event=event, summary=summary, details=details, webhook=webhook
    )


def _webhook_facts(webhook: Webhook) -> dict[str, Any]:
    return {
        "webhook": {
            "id": str(webhook.id),
            "address": webhook.address,
            "name": webhook.name,
            "target_url": webhook.target_url,
            "active": webhook.active,
        },
        "admin_url": f"{settings.CONDUIT_PUBLIC_URL}/admin/webhooks/webhook/{webhook.id}/change/",
    }


# --- Sending -------------------------------------------------------------------------


def _digest_window() -> timedelta:
    return timedelta(seconds=settings.CONDUIT_NOTIFY_DIGEST_SECONDS)


def notifications_send(*, account_id: uuid.UUID, now: datetime | None = None) -> int:
    """Send every pending notice of the account, as one mail (a digest when
    several) and one signed POST each to the operational webhook. Returns how
    many went out.

    The notices are taken (marked sent) in a short transaction that skips rows
    another sender holds, then sent with none held: a slow mail server or
    webhook blocks no one, and a notice goes out at most once.
    """
    now = now or timezone.now()
    with transaction.atomic():
        due = list(
            Notification.objects.select_for_update(skip_locked=True)
            .filter(account_id=account_id, status=Notification.Status.PENDING)
            .order_by("created_at", "id")
        )
        Notification.objects.filter(id__in=[n.id for n in due]).update(
            status=Notification.Status.SENT, sent_at=now
        )
    if not due:
        return 0
    account = Account.objects.get(id=account_id)
    prefs = selectors.notification_settings_for(account=account)
    email = channels.OFF
    if prefs.email_enabled:
        email = channels.email_send(to=account.email, notices=due)
    for notice in due:
        result = {"email": email, "webhook": channels.OFF}
        if prefs.webhook_url:
            result["webhook"] = channels.notice_post(
                url=prefs.webhook_url, secret=prefs.webhook_secret, notice=notice
            )
        Notification.objects.filter(id=notice.id).update(channels=result)
    return len(due)


def accounts_with_due_notices(*, now: datetime) -> list[uuid.UUID]:
    """Accounts with a notice pending for longer than the digest window: its
    sending task was lost (broker down, worker stopped)."""
    return list(
        Notification.objects.filter(
            status=Notification.Status.PENDING, created_at__lte=now - _digest_window()
        )
        .values_list("account_id", flat=True)
        .distinct()
    )


# --- Periodic checks ---------------------------------------------------------------


def silence_check(*, now: datetime | None = None) -> list[Notification]:
    """Notices for webhooks that expect mail (``expect_mail_every_hours``) and
    got none for that long: one per silent stretch (a stretch starts at the
    last message, or at the webhook's creation). Paused and inactive webhooks
    are left alone: their silence is the user's choice.

    The last message is read as the webhook's newest attempt that was not a
    simulation: the newest entry of its log index (``log_page_idx``), one
    index probe per webhook. Deliveries have no index by webhook and time,
    and one would cost every message stored; an active, unpaused webhook's
    mail is attempted within seconds of arriving (a failing webhook's retries
    count as activity, but it is told of as failing already)."""
    now = now or timezone.now()
    last_mail = (
        DeliveryLog.objects.filter(webhook=OuterRef("pk"), simulated=False)
        .order_by("-attempted_at", "-id")
        .values("attempted_at")
    )
    hooks = (
        Webhook.objects.filter(
            expect_mail_every_hours__isnull=False, active=True, paused_at__isnull=True
        )
        .select_related("account")
        .annotate(last_mail_at=Subquery(last_mail[:1]))
    )
    recorded = []
    for hook in hooks:
        since = hook.last_mail_at or hook.created_at
        if now - since < timedelta(hours=hook.expect_mail_every_hours):
            continue
        told = Notification.objects.filter(
            webhook=hook, event=Event.MAIL_SILENT, created_at__gte=since
        )
        if told.exists():
            continue
        details = {
            **_webhook_facts(hook),
            "expect_mail_every_hours": hook.expect_mail_every_hours,
            "last_mail_at": hook.last_mail_at.isoformat() if hook.last_mail_at else None,
            "silent_since": since.isoformat(),
            "fix": notices.webhook_fixes(Event.MAIL_SILENT, webhook_id=str(hook.id), since=None),
        }
        summary = notices.webhook_summary(Event.MAIL_SILENT, address=hook.address, facts=details)
        notice = notification_record(
            account=hook.account,
            event=Event.MAIL_SILENT,
            summary=summary,
            details=details,
            webhook=hook,
            now=now,
        )
        if notice is not None:
            recorded.append(notice)
    return recorded


def domains_recheck(*, now: datetime | None = None) -> list[Notification]:
    """Check a batch of verified domains' MX and TXT again (at most
    CONDUIT_DNS_RECHECK_BATCH a run, each at most every
    CONDUIT_DNS_RECHECK_HOURS); a notice for each that no longer points here."""
    now = now or timezone.now()
    due = domain_selectors.domains_due_for_recheck(
        now=now, limit=settings.CONDUIT_DNS_RECHECK_BATCH
    )
    if not due:
        return []
    resolver = domain_services.dns_resolver()
    recorded = []
    for domain in due:
        try:
            problem = domain_services.domain_recheck(domain=domain, resolver=resolver)
        except Exception:
            logger.exception("DNS re-check of %s failed", domain.name)
            continue
        if not problem:
            continue
        details = {
            "domain": {"id": str(domain.id), "name": domain.name},
            "problem": problem,
            "expected": {
                "txt": {
                    "name": f"_conduit-verify.{domain.name}",
                    "value": domain.verification_token,
                },
                "mx": {
                    "name": domain.name,
                    "host": settings.CONDUIT_MX_HOST,
                    "priority": domain_services.MX_PRIORITY,
                },
            },
            "checked_at": now.isoformat(),
            "fix": notices.domain_fixes(domain_id=str(domain.id)),
        }
        notice = notification_record(
            account=domain.account,
            event=Event.DOMAIN_DNS_CHANGED,
            summary=notices.domain_summary(name=domain.name),
            details=details,
            domain=domain,
            now=now,
        )
        if notice is not None:
            recorded.append(notice)
    return recorded
