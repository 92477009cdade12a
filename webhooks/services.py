"""Writes of the webhooks app: webhooks, their simulated deliveries, the
messages an account deletes or has delivered again, and recoveries."""

from __future__ import annotations

import uuid
from datetime import datetime
from urllib.parse import urlsplit

from django.db import IntegrityError, transaction
from django.db.models import Count, F, Q
from django.utils import timezone

from accounts.models import Account
from accounts.services import audit_record
from conduit.errors import Conflict, Gone, NotFound, ServiceUnavailable, Unprocessable
from domains.models import Domain
from policies.models import SmtpSecurityPolicy
from webhooks import delivery, formats, rawstore, recovery, selectors, storage, validation
from webhooks.compose import build_simulated_message
from webhooks.models import (
    AccountMessage,
    Delivery,
    DeliveryLog,
    InboundMessage,
    PayloadFormat,
    RecoveryJob,
    Webhook,
)
from webhooks.payload import AuthResults, Envelope
from webhooks.signing import generate_secret

ADDRESS_TAKEN = "This address already has a webhook; choose another address."
_AUDITED_FIELDS = [
    "name",
    "address",
    "target_url",
    "custom_headers",
    "payload_template",
    "payload_format",
    "rate_limit",
    "smtp_security_policy_id",
    "active",
    "raw_retention_days",
    "delete_raw_when_delivered",
    "attachment_link_threshold",
    "expect_mail_every_hours",
]
# Copied as given on update (the serializers validated them).
_PLAIN_FIELDS = (
    "name",
    "custom_headers",
    "payload_template",
    "rate_limit",
    "raw_retention_days",
    "delete_raw_when_delivered",
    "attachment_link_threshold",
    "expect_mail_every_hours",
)


def _domain_for_address(*, account: Account, address: str) -> Domain:
    domain_name = address.rpartition("@")[2]
    domain = (
        Domain.objects.filter(name=domain_name)
        .filter(Q(account=account, verified=True) | Q(is_public=True))
        .order_by("-verified")
        .first()
    )
    if domain is None:
        raise Unprocessable(
            f"{domain_name} is not a verified domain of this account nor a public domain; "
            "claim and verify it first (POST /api/v1/domains).",
            details={"address": [f"{domain_name} is not a verified or public domain"]},
        )
    return domain


def _policy_for_account(*, account: Account, policy_id: uuid.UUID) -> SmtpSecurityPolicy:
    policy = SmtpSecurityPolicy.objects.filter(account=account, id=policy_id).first()
    if policy is None:
        raise Unprocessable(
            "No SMTP security policy with this id in this account.",
            details={"smtp_security_policy_id": ["No such policy in this account"]},
        )
    return policy


def _set_target(webhook: Webhook, url: str, *, allow_http_credentials: bool) -> None:
    """Store the target URL apart from its credentials (target_auth, encrypted). A URL
    given back as shown (its password ``****``) keeps the stored password."""
    bare, auth = validation.split_credentials(url)
    if auth is not None and urlsplit(url).scheme == "http" and not allow_http_credentials:
        message = (
            "The target URL carries basic-auth credentials over plain http, where anyone on "
            "the way can read them; use an https URL."
        )
        raise Unprocessable(
            message, code="credentials_need_https", details={"target_url": [message]}
        )
    if auth is not None and webhook.target_auth:
        username, _, password = auth.partition(":")
        kept_username = webhook.target_auth.partition(":")[0]
        if password == validation.MASKED_PASSWORD and username == kept_username:
            auth = webhook.target_auth
    webhook.target_url = bare
    webhook.target_auth = auth


def _check_payload_format(webhook: Webhook) -> None:
    """The format is a known one and goes with the rest; a Mailgun-format webhook
    gets a signing key if it has none."""
    if webhook.payload_format not in formats.FORMATS:
        known = ", ".join(formats.FORMATS)
        message = f"'{webhook.payload_format}' is not a payload format; use one of: {known}."
        raise Unprocessable(
            message, code="unknown_payload_format", details={"payload_format": [message]}
        )
    if webhook.payload_template and webhook.payload_format != PayloadFormat.CONDUIT:
        message = (
            f"A payload template shapes the conduit format only and does not combine with "
            f"'{webhook.payload_format}'; remove the template (payload_template: \"\") or "
            "use payload_format conduit."
        )
        raise Unprocessable(
            message,
            code="template_needs_conduit_format",
            details={"payload_template": [message], "payload_format": [message]},
        )
    if webhook.payload_format == PayloadFormat.MAILGUN and not webhook.mailgun_signing_key:
        webhook.mailgun_signing_key = formats.generate_mailgun_signing_key()


# What the delivery engine keeps on the row with every attempt (the log count,
# the failure streak): an update writes every other field, never a copy of
# these read before a worker changed them.
_ENGINE_FIELDS = frozenset({"log_count", "consecutive_failures", "failing_since"})
_USER_FIELDS = [
    f.name
    for f in Webhook._meta.concrete_fields
    if not f.primary_key and f.name not in _ENGINE_FIELDS
]


def _save_unique(webhook: Webhook, **kwargs: object) -> None:
    try:
        with transaction.atomic():
            webhook.save(**kwargs)
    except IntegrityError:
        # Another request took the address between our check and the insert.
        raise Conflict(ADDRESS_TAKEN) from None


def webhook_create(
    *, account: Account, data: dict, ip: str | None, allow_http_credentials: bool = False
) -> Webhook:
    """A new webhook; ``allow_http_credentials`` (development) lets a plain-http
    target URL carry basic-auth credentials."""
    address = data["address"]
    domain = _domain_for_address(account=account, address=address)
    if Webhook.objects.filter(address=address).exists():
        raise Conflict(ADDRESS_TAKEN)
    policy_id = data.get("smtp_security_policy_id")
    webhook = Webhook(
        account=account,
        domain=domain,
        name=data.get("name", ""),
        address=address,
        secret=data.get("secret") or generate_secret(),
        custom_headers=data.get("custom_headers", {}),
        payload_template=data.get("payload_template", ""),
        payload_format=data.get("payload_format", PayloadFormat.CONDUIT),
        mailgun_signing_key=data.get("mailgun_signing_key") or None,
        rate_limit=data.get("rate_limit", 0),
        smtp_security_policy=(
            _policy_for_account(account=account, policy_id=policy_id) if policy_id else None
        ),
        active=data.get("active", True),
        raw_retention_days=data.get("raw_retention_days"),
        delete_raw_when_delivered=data.get("delete_raw_when_delivered", False),
        attachment_link_threshold=data.get("attachment_link_threshold"),
        expect_mail_every_hours=data.get("expect_mail_every_hours"),
    )
    _set_target(webhook, data["target_url"], allow_http_credentials=allow_http_credentials)
    _check_payload_format(webhook)
    # The webhook and its audit entry stand or fall together: no change the
    # audit log does not show, no entry for a change that did not happen.
    with transaction.atomic():
        _save_unique(webhook)
        audit_record(
            account=account,
            action="webhook.created",
            ip=ip,
            webhook_id=str(webhook.id),
            address=address,
        )
    return webhook


def webhook_update(
    *, webhook: Webhook, data: dict, ip: str | None, allow_http_credentials: bool = False
) -> Webhook:
    account = webhook.account
    before = {field: getattr(webhook, field) for field in _AUDITED_FIELDS}
    before_auth, before_key = webhook.target_auth, webhook.mailgun_signing_key
    was_active = webhook.active
    if "address" in data and data["address"] != webhook.address:
        webhook.domain = _domain_for_address(account=account, address=data["address"])
        if Webhook.objects.filter(address=data["address"]).exclude(id=webhook.id).exists():
            raise Conflict(ADDRESS_TAKEN)
        webhook.address = data["address"]
    for field in _PLAIN_FIELDS:
        if field in data:
            setattr(webhook, field, data[field])
    if "target_url" in data:
        _set_target(webhook, data["target_url"], allow_http_credentials=allow_http_credentials)
    if "payload_format" in data:
        webhook.payload_format = data["payload_format"]
    if data.get("mailgun_signing_key"):
        webhook.mailgun_signing_key = data["mailgun_signing_key"]
    _check_payload_format(webhook)
    if data.get("secret"):
        webhook.secret = data["secret"]
    if data.get("clear_security_policy"):
        webhook.smtp_security_policy = None
    elif data.get("smtp_security_policy_id"):
        webhook.smtp_security_policy = _policy_for_account(
            account=account, policy_id=data["smtp_security_policy_id"]
        )
    if "active" in data:
        webhook.active = data["active"]
        if webhook.active:
            webhook.deactivated_reason = ""
    changed = sorted(f for f in _AUDITED_FIELDS if getattr(webhook, f) != before[f])
    if data.get("secret"):
        changed.append("secret")
    if webhook.target_auth != before_auth:
        changed.append("target_credentials")
    if webhook.mailgun_signing_key != before_key:
        changed.append("mailgun_signing_key")
    # One transaction: the change, the held deliveries made due and the audit
    # entry stand or fall together, and the sweep that sends those deliveries
    # runs only once they are committed (it would not see them before).
    with transaction.atomic():
        _save_unique(webhook, update_fields=_USER_FIELDS)
        if webhook.active and not was_active:
            # A reactivated webhook starts a new failure streak: the old one
            # would switch it off again at its first failed attempt.
            Webhook.objects.filter(id=webhook.id).update(consecutive_failures=0, failing_since=None)
            # Deliveries held while the webhook was inactive go out now.
            now = timezone.now()
            held = Delivery.objects.filter(webhook=webhook, status=Delivery.Status.PENDING)
            held.update(next_attempt_at=now, enqueued_at=None)
            transaction.on_commit(delivery.sweep, robust=True)
        audit_record(
            account=account,
            action="webhook.updated",
            ip=ip,
            webhook_id=str(webhook.id),
            changed=changed,
        )
    # The response shows the engine's counts as they are now, not as first read.
    webhook.refresh_from_db(fields=sorted(_ENGINE_FIELDS))
    return webhook


def webhook_pause(*, webhook: Webhook, ip: str | None, operator: str = "") -> Webhook:
    """Hold the webhook's deliveries: mail is still accepted and stored, nothing
    is sent until webhook_resume. Pausing a paused webhook changes nothing.
    An attempt already under way finishes; its retry waits like the rest."""
    # The change and its audit entry stand or fall together; the row lock
    # keeps a concurrent resume from interleaving with it.
    with transaction.atomic():
        locked = Webhook.objects.select_for_update().get(id=webhook.id)
        if locked.paused_at is None:
            locked.paused_at = timezone.now()
            locked.save(update_fields=["paused_at", "updated_at"])
            audit_record(
                account=locked.account,
                action="webhook.paused",
                ip=ip,
                webhook_id=str(locked.id),
                **({"operator": operator} if operator else {}),
            )
    return locked


def webhook_resume(*, webhook: Webhook, ip: str | None, operator: str = "") -> Webhook:
    """Send what waited while the webhook was paused, in order of arrival, and
    deliver new mail as it comes again. Resuming a running webhook changes nothing."""
    # One transaction: the webhook resumed, its held deliveries released and
    # the audit entry, so the sweep that sends them sees all of it at once.
    with transaction.atomic():
        locked = Webhook.objects.select_for_update().get(id=webhook.id)
        if locked.paused_at is not None:
            paused_at = locked.paused_at
            locked.paused_at = None
            locked.save(update_fields=["paused_at", "updated_at"])
            delivery.send_held(webhook_id=locked.id)
            audit_record(
                account=locked.account,
                action="webhook.resumed",
                ip=ip,
                webhook_id=str(locked.id),
                paused_at=paused_at.isoformat(),
                **({"operator": operator} if operator else {}),
            )
    return locked


def webhook_delete(*, webhook: Webhook, ip: str | None) -> None:
    # The audit entry is written only if the webhook is really gone.
    with transaction.atomic():
        audit_record(
            account=webhook.account,
            action="webhook.deleted",
            ip=ip,
            webhook_id=str(webhook.id),
            address=webhook.address,
        )
        webhook.delete()


def webhook_simulate(*, webhook: Webhook, mail_from: str, subject: str, text: str) -> DeliveryLog:
    """Deliver a synthetic message now, through the same render/sign/send path."""
    to = webhook.address.replace("*@", "test@", 1)
    message_id = f"<simulated-{uuid.uuid4().hex}@conduit.invalid>"
    raw = build_simulated_message(
        mail_from=mail_from, to=to, subject=subject, text=text, message_id=message_id
    )
    source = formats.Source(
        raw=raw,
        envelope=Envelope(mail_from=mail_from, rcpt_to=[to], client_ip=None, helo=None),
        auth=AuthResults(),
        simulated=True,
    )
    sent = delivery.send(
        webhook=webhook, source=source, webhook_message_id=f"msg_sim_{uuid.uuid4().hex}"
    )
    log = delivery.attempt_log(
        webhook=webhook, sent=sent, sender=mail_from, smtp_message_id=message_id, simulated=True
    )
    storage.record_attempt(log=log, update={})
    return log


# --- Messages ------------------------------------------------------------------------


def message_purged(message: InboundMessage) -> Gone:
    """The 410 for a message whose original is gone (after retention)."""
    when = message.raw_purged_at
    at = f" at {when:%Y-%m-%d %H:%M:%S} UTC" if when is not None else ""
    return Gone(
        f"The original of this message was purged{at}, after its retention period; it can "
        "no longer be downloaded or delivered again. Its envelope, deliveries and attempts "
        f"remain readable at GET /api/v1/messages/{message.id}.",
        code="message_purged",
    )


def message_redeliver(
    *, view: AccountMessage, webhook: Webhook | None, ip: str | None
) -> list[Delivery]:
    """Queue the account's deliveries of a message again (only the one to
    ``webhook`` when given), in any state: each keeps its id (the same
    webhook-id) and its attempts count from zero (delivery.redeliver)."""
    message = view.message
    if message.raw_purged_at is not None:
        raise message_purged(message)
    deliveries = selectors.own_deliveries(account=view.account).filter(message_id=message.id)
    if webhook is not None:
        deliveries = deliveries.filter(webhook=webhook)
    # The deliveries made due and the audit entry commit together; the tasks
    # are queued after the commit (a worker would not see the change before).
    with transaction.atomic():
        chosen = list(deliveries.select_for_update().order_by("id"))
        if not chosen and webhook is not None:
            raise NotFound(
                f"This message was not delivered to webhook {webhook.id}; leave webhook_id out "
                "to deliver it again to all of its webhooks."
            )
        if not chosen:
            raise Conflict(
                "This message has no delivery left to send again: the webhooks it went to "
                "were deleted.",
                code="no_deliveries",
            )
        _redeliver(chosen, account=view.account, message=message, ip=ip)
    return list(
        Delivery.objects.filter(id__in=[item.id for item in chosen]).order_by("created_at", "id")
    )


def message_redeliver_all(*, message: InboundMessage, ip: str | None, operator: str) -> int:
    """An operator's replay (the admin): every delivery of the message, each
    account's audit log told of its own; how many were queued (0 once the
    original is purged: there is nothing left to send)."""
    if message.raw_purged_at is not None:
        return 0
    with transaction.atomic():
        chosen = list(
            Delivery.objects.select_for_update()
            .filter(message=message)
            .select_related("webhook__account")
            .order_by("id")
        )
        by_account: dict[uuid.UUID, list[Delivery]] = {}
        for item in chosen:
            by_account.setdefault(item.webhook.account_id, []).append(item)
        for items in by_account.values():
            account = items[0].webhook.account
            _redeliver(items, account=account, message=message, ip=ip, operator=operator)
    return len(chosen)


def _redeliver(
    deliveries: list[Delivery],
    *,
    account: Account,
    message: InboundMessage,
    ip: str | None,
    **audited: str,
) -> None:
    for item in deliveries:
        delivery.redeliver(delivery=item)
    audit_record(
        account=account,
        action="message.redelivered",
        ip=ip,
        message_id=str(message.id),
        delivery_ids=[str(item.id) for item in deliveries],
        **audited,
    )


def message_delete(*, view: AccountMessage, ip: str | None) -> None:
    """Delete a message from the account: its deliveries to the account's
    webhooks with their attempts, and the account's view of it; the message
    itself (raw content and all) goes too unless another account also
    received it, whose copy is theirs."""
    account = view.account
    with transaction.atomic():
        # The message row locked first: two accounts deleting their views of
        # one message at once would each leave it to the other, and it would
        # stay forever with nobody able to see or delete it.
        if not InboundMessage.objects.select_for_update().filter(id=view.message_id).exists():
            raise NotFound("No message with this id in this account.")
        if not AccountMessage.objects.filter(id=view.id).exists():
            raise NotFound("No message with this id in this account.")
        ids = list(
            selectors.own_deliveries(account=account)
            .filter(message_id=view.message_id)
            .values_list("id", flat=True)
        )
        logs = DeliveryLog.objects.filter(delivery_id__in=ids)
        # Each webhook's log counter stays true (it is its logs' X-Total-Count).
        counts = logs.order_by().values("webhook_id").annotate(n=Count("id"))
        for row in sorted(counts, key=lambda row: row["webhook_id"]):
            Webhook.objects.filter(id=row["webhook_id"]).update(log_count=F("log_count") - row["n"])
        logs.delete()
        Delivery.objects.filter(id__in=ids).delete()
        AccountMessage.objects.filter(id=view.id).delete()
        Account.objects.filter(id=account.id).update(message_count=F("message_count") - 1)
        shared = AccountMessage.objects.filter(message_id=view.message_id).exists()
        if not shared:
            message = view.message
            try:  # its object too, when an object store holds it
                rawstore.discard([(message.id, message.raw_store)])
            except rawstore.RawStoreUnavailable:
                raise ServiceUnavailable(
                    "The store holding this message did not answer; nothing was deleted. "
                    "Try again in a minute.",
                    code="raw_store_unavailable",
                ) from None
            InboundMessage.objects.filter(id=view.message_id).delete()
        audit_record(
            account=account,
            action="message.deleted",
            ip=ip,
            message_id=str(view.message_id),
            deliveries=len(ids),
            content_deleted=not shared,
        )


# --- Recoveries ----------------------------------------------------------------------


def recovery_url(job: RecoveryJob) -> str:
    return f"/api/v1/webhooks/{job.webhook_id}/recoveries/{job.id}"


def recovery_create(
    *,
    webhook: Webhook,
    since: datetime,
    until: datetime | None,
    statuses: list[str],
    ip: str | None,
    operator: str = "",
) -> tuple[RecoveryJob, bool]:
    """Start a recovery of the webhook's deliveries in [since, until) (until
    omitted: now) in one of ``statuses``; the job and whether it is new. An
    identical request (same window as asked, same statuses) gets the job it
    started back, unless that was cancelled: nothing is sent twice."""
    end = until or timezone.now()
    problem = recovery.window_problem(webhook=webhook, since=since, until=end)
    if problem:
        field, reason = problem
        raise Unprocessable(reason, details={field: [reason]})
    key = recovery.request_key(since=since, until=until, statuses=statuses)
    # The webhook's row lock serialises recover requests for it: two identical
    # requests at once would otherwise both find no job and start two.
    with transaction.atomic():
        locked = Webhook.objects.select_for_update().get(id=webhook.id)
        jobs = RecoveryJob.objects.filter(webhook=locked).exclude(state=RecoveryJob.State.CANCELLED)
        same = jobs.filter(request_key=key).order_by("-created_at").first()
        if same is not None:
            return same, False
        running = jobs.filter(state=RecoveryJob.State.RUNNING).first()
        if running is not None:
            raise Conflict(
                f"Recovery {running.id} of this webhook is still running "
                f"({running.queued} of {running.matched} queued); follow it at "
                f"GET {recovery_url(running)}, or cancel it (POST {recovery_url(running)}/cancel) "
                "before starting another.",
                code="recovery_running",
            )
        if locked.paused:
            raise Conflict(
                "This webhook is paused: recovered deliveries would only wait. Resume it first "
                f"(POST /api/v1/webhooks/{locked.id}/resume), then recover.",
                code="webhook_paused",
            )
        if not locked.active:
            raise Conflict(
                "This webhook is inactive: it neither receives nor delivers. Reactivate it "
                f'first (PUT /api/v1/webhooks/{locked.id} with {{"active": true}}), then recover.',
                code="webhook_inactive",
            )
        job = RecoveryJob(
            webhook=locked,
            since=since,
            until=end,
            statuses=sorted(statuses),
            request_key=key,
            operator=operator,
        )
        job.matched = recovery.count_matches(job)
        job.save(force_insert=True)
        audit_record(
            account=locked.account,
            action="recovery.created",
            ip=ip,
            webhook_id=str(locked.id),
            recovery_id=str(job.id),
            since=since.isoformat(),
            until=end.isoformat(),
            statuses=job.statuses,
            matched=job.matched,
            **({"operator": operator} if operator else {}),
        )
        # Its first step runs once the job is committed (a worker would not see it before).
        transaction.on_commit(lambda: recovery.schedule(job_id=job.id), robust=True)
    return job, True


def recovery_cancel(*, job: RecoveryJob, ip: str | None, operator: str = "") -> RecoveryJob:
    """Stop a running recovery: nothing more is queued or sent. What it still
    holds is left as it was found; what it sent goes out as usual."""
    # The job's lock: a step under way finishes its batch first, then sees the state.
    with transaction.atomic():
        locked = RecoveryJob.objects.select_for_update().select_related("webhook").get(id=job.id)
        if locked.state != RecoveryJob.State.RUNNING:
            when = f"{locked.finished_at:%Y-%m-%d %H:%M:%S} UTC" if locked.finished_at else ""
            raise Conflict(
                f"This recovery is already {locked.state} ({when}): there is nothing left to "
                f"cancel. Its {locked.queued} queued deliveries are sent as usual; start a new "
                "recovery to queue more.",
                code="recovery_finished",
            )
        locked.state = RecoveryJob.State.CANCELLED
        locked.finished_at = timezone.now()
        locked.save(update_fields=["state", "finished_at", "updated_at"])
        storage.drop_held(job=locked)
        audit_record(
            account=locked.webhook.account,
            action="recovery.cancelled",
            ip=ip,
            webhook_id=str(locked.webhook_id),
            recovery_id=str(locked.id),
            queued=locked.queued,
            **({"operator": operator} if operator else {}),
        )
    return locked
