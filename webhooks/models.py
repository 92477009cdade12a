from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q

from conduit.fields import EncryptedTextField


class PayloadFormat(models.TextChoices):
    """The shape of a webhook's POST body (webhooks/formats.py builds each)."""

    CONDUIT = "conduit"  # the default JSON payload, or the webhook's template
    RAW = "raw"  # the original message as message/rfc822
    MULTIPART = "multipart"  # multipart/form-data: fields and file parts
    POSTMARK = "postmark"  # Postmark's inbound webhook JSON
    MAILGUN = "mailgun"  # Mailgun's forward() route POST, signed
    SENDGRID = "sendgrid"  # SendGrid's Inbound Parse POST


class Webhook(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    account = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="webhooks"
    )
    # Deleting a domain deletes the webhooks whose addresses use it.
    domain = models.ForeignKey("domains.Domain", on_delete=models.CASCADE, related_name="webhooks")
    name = models.CharField(max_length=100, blank=True)
    # Lower-case `local@domain`, or `*@domain` for a catch-all; unique service-wide.
    address = models.CharField(max_length=320, unique=True)
    # Stored without credentials: a URL's `user:password@` goes to target_auth.
    target_url = models.URLField(max_length=2048)
    # "user:password" from the target URL as given (sent as Authorization:
    # Basic), encrypted like the secret; null when the URL had none. Never shown.
    target_auth = EncryptedTextField(null=True, blank=True)
    # Encrypted at rest (conduit/crypto.py): a database copy alone cannot sign.
    secret = EncryptedTextField()
    custom_headers = models.JSONField(default=dict, blank=True)
    payload_template = models.TextField(blank=True)
    payload_format = models.CharField(
        max_length=20, choices=PayloadFormat.choices, default=PayloadFormat.CONDUIT
    )
    # The key Mailgun-format deliveries are signed with (timestamp/token/signature),
    # generated when the format is chosen; null for other formats until then.
    mailgun_signing_key = EncryptedTextField(null=True, blank=True)
    rate_limit = models.PositiveIntegerField(
        default=0, help_text="Deliveries per minute; 0 = no limit"
    )
    # A deleted policy detaches itself: never silently keep enforcing it.
    smtp_security_policy = models.ForeignKey(
        "policies.SmtpSecurityPolicy",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="webhooks",
    )
    active = models.BooleanField(default=True)
    # How long this webhook's messages keep their raw MIME (null: the service's
    # CONDUIT_RAW_MESSAGE_RETENTION_DAYS), and whether it goes as soon as every
    # delivery of the message succeeded. A message shared by several webhooks
    # keeps it for the longest of them (webhooks/retention.py).
    raw_retention_days = models.PositiveIntegerField(
        null=True, blank=True, help_text="Days to keep the raw message; empty = service default"
    )
    delete_raw_when_delivered = models.BooleanField(
        default=False, help_text="Drop the raw message once every delivery of it succeeded"
    )
    # Attachments larger than this many bytes are delivered as signed links
    # instead of base64 in the payload; null = always inline.
    attachment_link_threshold = models.PositiveIntegerField(
        null=True, blank=True, help_text="Bytes; larger attachments are sent as links"
    )
    deactivated_reason = models.CharField(max_length=300, blank=True)
    # Paused (pauseWebhook): mail is still accepted and stored, its deliveries
    # wait (the claim rule, webhooks/storage.py, does not take them) until
    # resumed. Not `active`, which refuses mail at RCPT.
    paused_at = models.DateTimeField(null=True, blank=True, editable=False)
    # Kept with every log write so that listing logs never needs COUNT(*).
    log_count = models.BigIntegerField(default=0, editable=False)
    # Failure accounting (webhooks/health.py): written by the statement that
    # records each attempt (storage.record_attempt), together with log_count, so
    # knowing that a webhook fails or recovered costs a delivery no query.
    # Failed attempts in a row (reset by a success) and since when.
    # (A database default too, for processes still on the code before it.)
    consecutive_failures = models.PositiveIntegerField(default=0, db_default=0, editable=False)
    failing_since = models.DateTimeField(null=True, blank=True, editable=False)
    # "Expect mail every N hours": the account is told (mail_silent) when none
    # arrived for that long. Null: no expectation, nothing is checked.
    expect_mail_every_hours = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Hours without mail before the account is told; empty: off",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["created_at"]
        indexes = [models.Index(fields=["account", "created_at"])]

    def __str__(self) -> str:
        return self.address

    @property
    def paused(self) -> bool:
        return self.paused_at is not None


class InboundMessage(models.Model):
    """One accepted SMTP transaction: the raw MIME and what the session knew."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    received_at = models.DateTimeField(auto_now_add=True, db_index=True)
    mail_from = models.CharField(max_length=320, blank=True)
    rcpt_to = models.JSONField(default=list)
    client_ip = models.GenericIPAddressField(null=True, blank=True)
    helo = models.CharField(max_length=255, blank=True)
    # The MIME as received, here (raw) or in an object store (raw_store, its
    # `s3://bucket/prefix`; the object is `prefix/<id hex>`). Read it through
    # webhooks.rawstore.raw_bytes. Emptied after retention; the logs stay.
    raw = models.BinaryField(null=True, blank=True)
    raw_store = models.CharField(max_length=1100, blank=True, default="")
    raw_purged_at = models.DateTimeField(null=True, blank=True)
    size = models.PositiveIntegerField(default=0)
    message_id_header = models.CharField(max_length=998, blank=True)
    # Decoded, read at accept time from the header block (as the Message-ID is),
    # so that listing and searching messages never parse the raw MIME.
    subject = models.CharField(max_length=998, blank=True)
    spf_result = models.CharField(max_length=20, blank=True)
    dkim_domains = models.JSONField(default=list, blank=True)
    # Set when a policy had DMARC evaluated (policies.mailauth.DmarcResult.as_payload()).
    dmarc_result = models.JSONField(null=True, blank=True)
    arc_result = models.CharField(max_length=20, blank=True)
    smtp_auth_user = models.CharField(max_length=255, blank=True)

    class Meta:
        verbose_name = "inbound message"

    def __str__(self) -> str:
        return f"{self.mail_from or '<>'} → {', '.join(self.rcpt_to)}"


class AccountMessage(models.Model):
    """One message as one account sees it: the row the account's message list pages over.

    A message may go to webhooks of several accounts (one Delivery per webhook);
    each of those accounts gets one of these, written in the statement that
    stores the message. Its ``received_at`` is the message's, copied so that
    page 1 of a large account is read straight from one index.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # No index of its own: both below lead with the account, and every message
    # stored would write a third one for nothing.
    account = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="messages",
        db_index=False,
    )
    message = models.ForeignKey(
        InboundMessage, on_delete=models.CASCADE, related_name="account_messages"
    )
    received_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["account", "message"], name="one_view_per_account")
        ]
        indexes = [
            models.Index(
                fields=["account", "-received_at", "-message"], name="account_message_page_idx"
            )
        ]

    def __str__(self) -> str:
        return f"message {self.message_id} of account {self.account_id}"


class Delivery(models.Model):
    """A message on its way to one webhook; its id is the stable `webhook-id`."""

    class Status(models.TextChoices):
        PENDING = "pending"
        DELIVERING = "delivering"
        DELIVERED = "delivered"
        FAILED = "failed"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    message = models.ForeignKey(InboundMessage, on_delete=models.CASCADE, related_name="deliveries")
    webhook = models.ForeignKey(Webhook, on_delete=models.CASCADE, related_name="deliveries")
    # The envelope recipients of the message that resolved to this webhook.
    rcpt_to = models.JSONField(default=list)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    # When the current task was put on the queue; the sweep re-sends it if it
    # is still waiting long after that (broker down, task lost).
    enqueued_at = models.DateTimeField(null=True, blank=True)
    # A 'delivering' row past its lease belongs to a worker that died.
    leased_until = models.DateTimeField(null=True, blank=True)
    # The recovery that last queued it again (its progress counts it); null
    # for the usual delivery, so the partial index below costs new mail nothing.
    recovery = models.ForeignKey(
        "RecoveryJob",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        db_index=False,
        related_name="deliveries",
    )
    # In its recovery's queue: chosen by the job, not sent again yet, its status
    # still the one the job found. The job sends it at its pace, or a cancel
    # leaves it as it was (webhooks/recovery.py).
    held = models.BooleanField(default=False)
    last_error = models.TextField(blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "deliveries"
        constraints = [
            models.UniqueConstraint(fields=["message", "webhook"], name="one_delivery_per_webhook")
        ]
        indexes = [
            # The sweep's scan: only unfinished rows are in this index.
            models.Index(
                fields=["next_attempt_at"],
                name="delivery_due_idx",
                condition=Q(status__in=["pending", "delivering"]),
            ),
            models.Index(fields=["status", "-created_at"]),
            models.Index(
                fields=["recovery", "status"],
                name="delivery_recovery_idx",
                condition=Q(recovery__isnull=False),
            ),
            # A recovery's queue, in the order it sends it: empty but while one runs.
            models.Index(
                fields=["recovery", "created_at", "id"],
                name="delivery_held_idx",
                condition=Q(held=True),
            ),
        ]

    def __str__(self) -> str:
        return f"delivery {self.id} ({self.status})"

    @property
    def webhook_message_id(self) -> str:
        return f"msg_{self.id.hex}"


class DeliveryLog(models.Model):
    """One HTTP attempt (or simulation): what was sent where and what came back."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    webhook = models.ForeignKey(Webhook, on_delete=models.CASCADE, related_name="logs")
    delivery = models.ForeignKey(
        Delivery, on_delete=models.SET_NULL, null=True, blank=True, related_name="logs"
    )
    attempt = models.PositiveIntegerField(default=1)
    attempted_at = models.DateTimeField()
    duration_ms = models.PositiveIntegerField(default=0)
    http_status = models.PositiveSmallIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    response_body = models.TextField(blank=True)
    sender = models.CharField(max_length=320, blank=True)
    smtp_message_id = models.CharField(max_length=998, blank=True)
    simulated = models.BooleanField(default=False)
    # The webhook's payload_format when the attempt was made.
    payload_format = models.CharField(
        max_length=20,
        choices=PayloadFormat.choices,
        default=PayloadFormat.CONDUIT,
        db_default=PayloadFormat.CONDUIT,
    )

    class Meta:
        indexes = [models.Index(fields=["webhook", "-attempted_at", "-id"], name="log_page_idx")]

    def __str__(self) -> str:
        return f"log {self.id} ({self.http_status or self.error[:40]})"


class RecoveryJob(models.Model):
    """Queue a webhook's deliveries of a time window again, in batches (createRecovery).

    The job walks the matching deliveries in (created_at, id) order from its
    cursor, a large batch per step, into its queue (Delivery.held), and sends
    from that queue at its own pace (webhooks/recovery.py); ``matched`` is how
    many matched when it started, ``queued`` how many it has queued so far.
    """

    class State(models.TextChoices):
        RUNNING = "running"  # queuing, or sending what it queued
        FINISHED = "finished"  # every match queued and sent again
        CANCELLED = "cancelled"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    webhook = models.ForeignKey(Webhook, on_delete=models.CASCADE, related_name="recoveries")
    since = models.DateTimeField()
    until = models.DateTimeField()
    statuses = models.JSONField(default=list)
    # What makes two requests the same one (webhooks.recovery.request_key):
    # an identical request gets this job back instead of a second one.
    request_key = models.CharField(max_length=200)
    state = models.CharField(max_length=12, choices=State.choices, default=State.RUNNING)
    matched = models.PositiveIntegerField(default=0)
    queued = models.PositiveIntegerField(default=0)
    # When the last match was queued; the job then only sends what it holds.
    all_queued_at = models.DateTimeField(null=True, blank=True)
    # The last delivery queued: the next batch starts after it.
    cursor_created_at = models.DateTimeField(null=True, blank=True)
    cursor_id = models.UUIDField(null=True, blank=True)
    # Who started it from the admin (empty: through the API).
    operator = models.CharField(max_length=150, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["webhook"],
                condition=Q(state="running"),
                name="one_running_recovery_per_webhook",
            )
        ]
        indexes = [
            models.Index(fields=["webhook", "-created_at", "-id"], name="recovery_page_idx"),
            models.Index(fields=["webhook", "request_key"], name="recovery_request_idx"),
        ]

    def __str__(self) -> str:
        return f"recovery {self.id} ({self.state}, {self.queued}/{self.matched})"
