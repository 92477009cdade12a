from __future__ import annotations

from datetime import UTC, datetime

from django.conf import settings
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from conduit import strict
from webhooks import recovery, retention, validation
from webhooks.models import Delivery, DeliveryLog, PayloadFormat, RecoveryJob, Webhook
from webhooks.signing import mask_secret
from webhooks.templating import TemplateSyntaxProblem, validate_template

MAX_TEMPLATE = 64 * 1024
RAW_RETENTION_HELP = (
    "Days to keep each message's raw MIME (for download and redelivery), from 0 to the "
    "service's maximum (30 days unless the operator set another); null: the service's "
    "default (7 days unless the operator set another). A message shared with other "
    "webhooks is kept for the longest of their retentions."
)
DELETE_WHEN_DELIVERED_HELP = (
    "true: drop the raw message as soon as every delivery of it succeeded (when all the "
    "webhooks it went to ask for this); a message that failed keeps `raw_retention_days`."
)
EXPECT_MAIL_HELP = (
    "Hours: when no mail reaches the webhook for this long, the account is told "
    "(`mail_silent`, once per silent stretch); at least 1, at most 8760 (a year); null: off "
    "(the default)."
)
# Below an hour a quiet lunch break would page somebody.
MIN_EXPECT_MAIL_HOURS = 1
ATTACHMENT_LINK_HELP = (
    "Bytes. Attachments larger than this are delivered as an expiring signed link "
    "(`content_url`) instead of base64 `content`; null: always inline."
)
PAYLOAD_FORMAT_HELP = (
    'What the target receives (README, "Payload formats"): `conduit` (default), the JSON '
    "payload of the published schema or what `payload_template` renders it to; `raw`, the "
    "original message as `message/rfc822`, the envelope and authentication results in "
    "`X-Conduit-Mail-From`, `X-Conduit-Rcpt-To`, `X-Conduit-Client-Ip`, `X-Conduit-Helo`, "
    "`X-Conduit-Authentication-Results` (RFC 8601) and `X-Conduit-Simulated` headers; "
    "`multipart`, `multipart/form-data` with the payload's fields as form fields (objects "
    "and lists as JSON) and each attachment a file part `attachment-<n>`; `postmark`, "
    "`mailgun`, `sendgrid`, the inbound webhook POSTs of those services, field for field "
    "(`mailgun` signed with `mailgun_signing_key`). Basic-auth credentials in `target_url` "
    "(`https://user:password@host/`) are sent as `Authorization: Basic` in any format. "
    "The Standard Webhooks headers are sent in every format. A template needs `conduit`."
)
MAILGUN_KEY_HELP = (
    "The key Mailgun-format deliveries are signed with (Mailgun's timestamp/token/signature "
    "HMAC-SHA256, what a Mailgun receiver verifies with its HTTP webhook signing key). Give "
    "your receiver's key, or leave it out: it is generated when `payload_format` becomes "
    "`mailgun`."
)
TARGET_URL_HELP = (
    "http(s) URL the messages are POSTed to. Basic-auth credentials in it "
    "(`https://user:password@host/path`) are sent as `Authorization: Basic` and stored "
    "encrypted; responses show the password as `****`, and a URL sent back that way keeps "
    "it. Credentials need https (outside development)."
)


# A delivery's states as the API shows them (and the schema names: StatusEnum).
DELIVERY_STATUSES = Delivery.Status.values
# How much of a target's answer a message's attempts show (up to 20 KB is kept).
RESPONSE_EXCERPT = 1000


def checked_target_url(value: str) -> str:
    """``value`` if this instance may send to it (webhooks.validation under
    CONDUIT_ALLOW_HTTP_TARGETS / CONDUIT_ALLOW_PRIVATE_TARGETS), else a
    ValidationError saying why: for webhook targets and notification webhooks alike."""
    try:
        validation.check_target_url(
            value,
            allow_http=settings.CONDUIT_ALLOW_HTTP_TARGETS,
            allow_private=settings.CONDUIT_ALLOW_PRIVATE_TARGETS,
            name_setting=settings.DEBUG,
        )
    except ValueError as exc:
        raise serializers.ValidationError(str(exc)) from None
    return value


@extend_schema_field(serializers.ChoiceField(choices=PayloadFormat.choices))
class PayloadFormatField(strict.CharField):
    """A payload format's name. An unknown one is refused by the service
    (422 ``unknown_payload_format``, listing the known ones), not here, so that
    its answer has a code of its own."""


class _WebhookFieldsSerializer(serializers.Serializer):
    """Field rules shared by create and update; ownership rules live in services."""

    name = strict.CharField(max_length=100, required=False, allow_blank=True)
    address = strict.CharField(
        max_length=320, help_text="`name@domain` on a verified or public domain, or `*@domain`."
    )
    target_url = strict.CharField(max_length=2048, help_text=TARGET_URL_HELP)
    secret = strict.CharField(
        max_length=200,
        required=False,
        help_text="`whsec_` + base64; generated when omitted. Returned whole on create only.",
    )
    custom_headers = serializers.DictField(
        child=strict.CharField(allow_blank=True, trim_whitespace=False),
        required=False,
        help_text="Extra request headers (not Host, Content-*, User-Agent or webhook-*).",
    )
    payload_template = strict.CharField(
        max_length=MAX_TEMPLATE, required=False, allow_blank=True, trim_whitespace=False
    )
    payload_format = PayloadFormatField(required=False, help_text=PAYLOAD_FORMAT_HELP)
    mailgun_signing_key = strict.CharField(
        min_length=16, max_length=200, required=False, help_text=MAILGUN_KEY_HELP
    )
    rate_limit = serializers.IntegerField(
        min_value=0, max_value=1_000_000, required=False, help_text="Per minute; 0 = no limit"
    )
    smtp_security_policy_id = serializers.UUIDField(required=False, allow_null=True)
    active = serializers.BooleanField(required=False)
    raw_retention_days = serializers.IntegerField(
        required=False,
        allow_null=True,
        help_text=RAW_RETENTION_HELP,
    )
    delete_raw_when_delivered = serializers.BooleanField(
        required=False, help_text=DELETE_WHEN_DELIVERED_HELP
    )
    attachment_link_threshold = serializers.IntegerField(
        required=False,
        allow_null=True,
        min_value=0,
        max_value=2**31 - 1,
        help_text=ATTACHMENT_LINK_HELP,
    )
    expect_mail_every_hours = serializers.IntegerField(
        required=False, allow_null=True, max_value=24 * 365, help_text=EXPECT_MAIL_HELP
    )

    def validate_expect_mail_every_hours(self, value: int | None) -> int | None:
        if value is not None and value < MIN_EXPECT_MAIL_HOURS:
            raise serializers.ValidationError(
                f"{value} is below one hour: give whole hours from {MIN_EXPECT_MAIL_HOURS} "
                "(e.g. 24 for a daily report), or null to turn the silence check off."
            )
        return value

    def validate_raw_retention_days(self, value: int | None) -> int | None:
        problem = retention.retention_problem(value)
        if problem:
            raise serializers.ValidationError(problem)
        return value

    def validate_address(self, value: str) -> str:
        try:
            local, domain = validation.split_address(value)
        except ValueError as exc:
            raise serializers.ValidationError(str(exc)) from None
        return f"{local}@{domain}"

    def validate_target_url(self, value: str) -> str:
        return checked_target_url(value)

    def validate_custom_headers(self, value: dict) -> dict:
        try:
            return validation.check_custom_headers(value)
        except ValueError as exc:
            raise serializers.ValidationError(str(exc)) from None

    def validate_secret(self, value: str) -> str:
        try:
            validation.check_secret(value)
        except ValueError as exc:
            raise serializers.ValidationError(str(exc)) from None
        return value

    def validate_mailgun_signing_key(self, value: str) -> str:
        if not value.isascii() or not value.isprintable() or " " in value:
            raise serializers.ValidationError(
                "The signing key must be printable ASCII without spaces, as Mailgun's are."
            )
        return value

    def validate_payload_template(self, value: str) -> str:
        try:
            validate_template(value)
        except TemplateSyntaxProblem as exc:
            raise serializers.ValidationError(str(exc)) from None
        return value


class CreateWebhookRequestSerializer(_WebhookFieldsSerializer):
    pass


class UpdateWebhookRequestSerializer(_WebhookFieldsSerializer):
    """Fields left out keep their values."""

    address = strict.CharField(max_length=320, required=False)
    target_url = strict.CharField(max_length=2048, required=False)
    clear_security_policy = serializers.BooleanField(
        required=False, help_text="true detaches the SMTP security policy."
    )


# Response serializers mark every field read-only: drf-spectacular then lists them all
# as required, which they are (every response carries every field, null or not).


class WebhookResponseSerializer(serializers.ModelSerializer):
    smtp_security_policy_id = serializers.UUIDField(allow_null=True, read_only=True)
    secret = serializers.SerializerMethodField(
        help_text="Whole in the create response only; masked afterwards."
    )
    target_url = serializers.SerializerMethodField(help_text=TARGET_URL_HELP)
    payload_format = serializers.ChoiceField(
        choices=PayloadFormat.choices, read_only=True, help_text=PAYLOAD_FORMAT_HELP
    )
    mailgun_signing_key = serializers.SerializerMethodField(
        help_text="Whole in the response that created it only (create, or the update that "
        "chose `mailgun`); masked afterwards; null when there is none."
    )
    custom_headers = serializers.DictField(child=strict.CharField(), read_only=True)
    paused = serializers.BooleanField(
        read_only=True,
        help_text="Deliveries wait while true (pauseWebhook); mail is still accepted.",
    )
    paused_at = serializers.DateTimeField(
        allow_null=True, read_only=True, help_text="When it was paused; null when not paused."
    )

    class Meta:
        model = Webhook
        fields = [
            "id",
            "name",
            "address",
            "target_url",
            "secret",
            "custom_headers",
            "payload_template",
            "payload_format",
            "mailgun_signing_key",
            "rate_limit",
            "smtp_security_policy_id",
            "active",
            "paused",
            "paused_at",
            "raw_retention_days",
            "delete_raw_when_delivered",
            "attachment_link_threshold",
            "expect_mail_every_hours",
            "failing_since",
            "consecutive_failures",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields
        extra_kwargs = {
            "expect_mail_every_hours": {"help_text": EXPECT_MAIL_HELP},
            "failing_since": {
                "help_text": "When the current run of failed attempts began; null while the "
                "last attempt succeeded."
            },
            "consecutive_failures": {
                "help_text": "Failed attempts in a row; 0 after a success. At "
                "CONDUIT_NOTIFY_FAILING_AFTER (default 3) the account is told "
                "(`webhook_failing`)."
            },
            "raw_retention_days": {"help_text": RAW_RETENTION_HELP},
            "delete_raw_when_delivered": {"help_text": DELETE_WHEN_DELIVERED_HELP},
            "attachment_link_threshold": {"help_text": ATTACHMENT_LINK_HELP},
        }

    def get_secret(self, obj: Webhook) -> str:
        return obj.secret if self.context.get("show_secret") else mask_secret(obj.secret)

    def get_target_url(self, obj: Webhook) -> str:
        return validation.url_with_credentials(obj.target_url, obj.target_auth)

    @extend_schema_field({"type": "string", "nullable": True})
    def get_mailgun_signing_key(self, obj: Webhook) -> str | None:
        key = obj.mailgun_signing_key
        if not key or self.context.get("show_mailgun_signing_key"):
            return key or None
        return mask_secret(key)


class DeliveryLogResponseSerializer(serializers.ModelSerializer):
    webhook_id = serializers.UUIDField(read_only=True)
    http_status = serializers.IntegerField(
        allow_null=True,
        read_only=True,
        help_text="The target's HTTP status; null when no answer came (see `error`).",
    )
    error = strict.CharField(
        read_only=True,
        help_text="What went wrong (connection refused, timeout, template error, ...); "
        "empty when nothing did.",
    )

    class Meta:
        model = DeliveryLog
        fields = [
            "id",
            "webhook_id",
            "attempted_at",
            "duration_ms",
            "http_status",
            "error",
            "sender",
            "smtp_message_id",
            "simulated",
            "payload_format",
        ]
        read_only_fields = fields
        extra_kwargs = {
            "payload_format": {"help_text": "The webhook's payload format at this attempt."}
        }

    def to_representation(self, instance: DeliveryLog) -> dict:
        # Written out by hand: logs are listed 50 at a time on a hot endpoint,
        # and DRF's per-field machinery was a quarter of that request's time.
        # Same output as the declared fields (which the schema is built from).
        return {
            "id": str(instance.id),
            "webhook_id": str(instance.webhook_id),
            "attempted_at": _iso8601(instance.attempted_at),
            "duration_ms": instance.duration_ms,
            "http_status": instance.http_status,
            "error": instance.error,
            "sender": instance.sender,
            "smtp_message_id": instance.smtp_message_id,
            "simulated": instance.simulated,
            "payload_format": instance.payload_format,
        }


def _iso8601(value: datetime) -> str:
    """As DRF renders datetimes: UTC, ISO 8601, 'Z' for +00:00."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


# Simulate reads its body leniently (simulate_request_values): the contract
# gives simulateWebhook no 422. So the schema claims no maximum the API would
# not enforce; each field says what happens to a longer value instead.
SIMULATE_LIMITS = {"from": 320, "subject": 998, "text": 100_000}


class SimulateWebhookRequestSerializer(serializers.Serializer):
    # "from" is a Python keyword; get_fields() below gives the field its public name.
    from_ = strict.CharField(
        required=False,
        default="sender@example.com",
        help_text="The sender address; a longer value than 320 characters is cut to 320, "
        "an empty one or one that is not a string gives the default.",
    )
    subject = strict.CharField(
        required=False,
        default="Test message",
        allow_blank=True,
        help_text="Cut to 998 characters; not a string: the default.",
    )
    text = strict.CharField(
        required=False,
        default="This is a simulated message from Conduit.",
        allow_blank=True,
        trim_whitespace=False,
        help_text="The message text; cut to 100,000 characters; not a string: the default.",
    )

    def get_fields(self) -> dict:
        fields = super().get_fields()
        fields["from"] = fields.pop("from_")
        return fields


def simulate_request_values(data: object) -> dict[str, str]:
    """The simulate body read leniently: a simulation always runs.

    The contract gives simulateWebhook no 422, so a field that is missing, not a
    string or (for ``from``) empty takes its default, NUL characters are dropped and
    longer values are cut to the length its description states (SIMULATE_LIMITS).
    """
    body = data if isinstance(data, dict) else {}
    values = {}
    for name, field in SimulateWebhookRequestSerializer().fields.items():
        value = body.get(name)
        value = value.replace("\x00", "") if isinstance(value, str) else None
        if value is None or (not value.strip() and not field.allow_blank):
            value = field.default
        values[name] = value[: SIMULATE_LIMITS[name]]
    return values


class SimulateWebhookResponseSerializer(serializers.Serializer):
    http_status = serializers.IntegerField(allow_null=True)
    duration_ms = serializers.IntegerField()
    error = strict.CharField(allow_null=True)
    simulated = serializers.BooleanField()


# --- Messages ------------------------------------------------------------------------


class MessageListQuerySerializer(serializers.Serializer):
    """The filters of listMessages (query parameters); each narrows the list further."""

    webhook_id = serializers.UUIDField(
        required=False, help_text="Only messages delivered to this webhook of the account."
    )
    status = serializers.ChoiceField(
        choices=DELIVERY_STATUSES,
        required=False,
        help_text="Only messages with a delivery (to the account's webhooks) in this state.",
    )
    sender = strict.CharField(
        max_length=320, required=False, help_text="The envelope sender (MAIL FROM), any case."
    )
    recipient = strict.CharField(
        max_length=320,
        required=False,
        help_text="An envelope recipient (RCPT TO) of the account's, any case.",
    )
    since = serializers.DateTimeField(
        required=False, help_text="Received at or after this time (ISO 8601)."
    )
    until = serializers.DateTimeField(
        required=False, help_text="Received before this time (ISO 8601)."
    )
    message_id = strict.CharField(
        max_length=998, required=False, help_text="The Message-ID header, with or without <>."
    )
    q = strict.CharField(
        max_length=200,
        required=False,
        help_text="Words to find in the subject or the sender (a substring, any case).",
    )

    def validate(self, attrs: dict) -> dict:
        since, until = attrs.get("since"), attrs.get("until")
        if since is not None and until is not None and until <= since:
            raise serializers.ValidationError(
                {"until": ["until must be later than since; swap them or widen the window."]}
            )
        return attrs


class RedeliverMessageRequestSerializer(serializers.Serializer):
    webhook_id = serializers.UUIDField(
        required=False,
        allow_null=True,
        help_text="Only the delivery to this webhook; left out: every delivery of the message "
        "to the account's webhooks.",
    )


class MessageDeliveryStateSerializer(serializers.Serializer):
    """One delivery of a message in the list: where it went and how it stands."""

    id = serializers.UUIDField(read_only=True)
    webhook_id = serializers.UUIDField(read_only=True)
    status = serializers.ChoiceField(choices=DELIVERY_STATUSES, read_only=True)
    attempts = serializers.IntegerField(read_only=True)
    next_attempt_at = serializers.DateTimeField(allow_null=True, read_only=True)


def delivery_state(delivery: Delivery | dict) -> dict:
    """A delivery's state as listed: from the model, or from the values of
    selectors.DELIVERY_STATE."""
    row = delivery if isinstance(delivery, dict) else vars(delivery)
    return {
        "id": str(row["id"]),
        "webhook_id": str(row["webhook_id"]),
        "status": row["status"],
        "attempts": row["attempts"],
        "next_attempt_at": _iso8601_or_none(row["next_attempt_at"]),
    }


class MessageSummaryResponseSerializer(serializers.Serializer):
    id = serializers.UUIDField(read_only=True)
    received_at = serializers.DateTimeField(read_only=True)
    mail_from = serializers.CharField(
        read_only=True, help_text="The envelope sender (MAIL FROM); empty for a bounce."
    )
    rcpt_to = serializers.ListField(
        child=serializers.CharField(),
        read_only=True,
        help_text="The envelope recipients of this account's webhooks.",
    )
    subject = serializers.CharField(read_only=True)
    message_id = serializers.CharField(read_only=True, help_text="The Message-ID header.")
    size = serializers.IntegerField(read_only=True, help_text="Bytes of the original.")
    raw_available = serializers.BooleanField(
        read_only=True, help_text="Whether the original can still be downloaded."
    )
    raw_purged_at = serializers.DateTimeField(allow_null=True, read_only=True)
    deliveries = MessageDeliveryStateSerializer(many=True, read_only=True)

    def to_representation(self, instance: tuple[dict, list[dict]]) -> dict:
        # By hand, like the delivery logs: 50 rows a page on a hot endpoint. The
        # instance is a row of selectors.MESSAGE_ROW and its deliveries.
        row, deliveries = instance
        purged_at = row["message__raw_purged_at"]
        return {
            "id": str(row["message_id"]),
            "received_at": _iso8601(row["received_at"]),
            "mail_from": row["message__mail_from"],
            "rcpt_to": [rcpt for d in deliveries for rcpt in d["rcpt_to"]],
            "subject": row["message__subject"],
            "message_id": row["message__message_id_header"],
            "size": row["message__size"],
            "raw_available": purged_at is None,
            "raw_purged_at": _iso8601_or_none(purged_at),
            "deliveries": [delivery_state(d) for d in deliveries],
        }


class MessageAttemptResponseSerializer(serializers.Serializer):
    id = serializers.UUIDField(read_only=True, help_text="The delivery log entry.")
    attempt = serializers.IntegerField(read_only=True)
    attempted_at = serializers.DateTimeField(read_only=True)
    duration_ms = serializers.IntegerField(read_only=True)
    http_status = serializers.IntegerField(
        allow_null=True, read_only=True, help_text="null when no answer came (see `error`)."
    )
    error = serializers.CharField(read_only=True)
    response_excerpt = serializers.CharField(
        read_only=True, help_text=f"The first {RESPONSE_EXCERPT} characters of the answer."
    )


class MessageDeliveryResponseSerializer(MessageDeliveryStateSerializer):
    webhook_address = serializers.CharField(read_only=True)
    webhook_message_id = serializers.CharField(
        read_only=True, help_text="The `webhook-id` header it is sent with, on every attempt."
    )
    rcpt_to = serializers.ListField(child=serializers.CharField(), read_only=True)
    delivered_at = serializers.DateTimeField(allow_null=True, read_only=True)
    last_error = serializers.CharField(read_only=True)
    payload = serializers.DictField(
        allow_null=True,
        read_only=True,
        help_text="The default JSON payload of this delivery; null once the original is purged.",
    )
    content_type = serializers.CharField(allow_null=True, read_only=True)
    body = serializers.CharField(
        allow_null=True,
        read_only=True,
        help_text="With a payload template: the body it renders to, with the webhook's current "
        "template; in the `raw` and `postmark` formats, the body sent, as text. null for the "
        "`conduit` format without a template (the body is `payload` as JSON), for the "
        "form-data formats (`multipart`, `mailgun`, `sendgrid`: their fields are `payload`'s) "
        "and once purged.",
    )
    template_error = serializers.CharField(
        allow_null=True, read_only=True, help_text="Why the template failed to render, if it did."
    )
    logs = MessageAttemptResponseSerializer(
        many=True, read_only=True, help_text="Every attempt, oldest first."
    )


class AddressSerializer(serializers.Serializer):
    address = serializers.CharField(read_only=True)
    name = serializers.CharField(read_only=True)


class MessageHeadersResponseSerializer(serializers.Serializer):
    from_ = AddressSerializer(allow_null=True, read_only=True)
    to = AddressSerializer(many=True, read_only=True)
    cc = AddressSerializer(many=True, read_only=True)
    reply_to = AddressSerializer(many=True, read_only=True)
    subject = serializers.CharField(read_only=True)
    date = serializers.CharField(allow_null=True, read_only=True, help_text="ISO 8601, UTC.")
    message_id = serializers.CharField(allow_null=True, read_only=True)
    in_reply_to = serializers.CharField(allow_null=True, read_only=True)
    references = serializers.ListField(child=serializers.CharField(), read_only=True)

    def get_fields(self) -> dict:
        fields = super().get_fields()
        fields["from"] = fields.pop("from_")
        return fields


class MessageAuthenticationSerializer(serializers.Serializer):
    spf = serializers.CharField(allow_null=True, read_only=True)
    dkim = serializers.ListField(child=serializers.CharField(), read_only=True)
    smtp_auth_user = serializers.CharField(allow_null=True, read_only=True)


class MessageResponseSerializer(serializers.Serializer):
    id = serializers.UUIDField(read_only=True)
    received_at = serializers.DateTimeField(read_only=True)
    mail_from = serializers.CharField(read_only=True)
    rcpt_to = serializers.ListField(child=serializers.CharField(), read_only=True)
    client_ip = serializers.CharField(allow_null=True, read_only=True)
    helo = serializers.CharField(read_only=True)
    subject = serializers.CharField(read_only=True)
    message_id = serializers.CharField(read_only=True)
    size = serializers.IntegerField(read_only=True)
    raw_available = serializers.BooleanField(read_only=True)
    raw_purged_at = serializers.DateTimeField(allow_null=True, read_only=True)
    authentication = MessageAuthenticationSerializer(read_only=True)
    headers = MessageHeadersResponseSerializer(
        allow_null=True,
        read_only=True,
        help_text="The main header fields, decoded; null once the original is purged.",
    )
    deliveries = MessageDeliveryResponseSerializer(many=True, read_only=True)


class RedeliverMessageResponseSerializer(serializers.Serializer):
    deliveries = MessageDeliveryStateSerializer(
        many=True, read_only=True, help_text="The deliveries queued again."
    )


def _iso8601_or_none(value: datetime | None) -> str | None:
    return None if value is None else _iso8601(value)


# --- Recoveries ----------------------------------------------------------------------


class CreateRecoveryRequestSerializer(serializers.Serializer):
    since = serializers.DateTimeField(
        help_text="Deliveries created (messages received) at or after this time (ISO 8601)."
    )
    until = serializers.DateTimeField(
        required=False,
        allow_null=True,
        help_text="Created before this time (ISO 8601); left out or null: up to now. "
        "At most the webhook's raw retention after `since`.",
    )
    statuses = serializers.ListField(
        child=serializers.ChoiceField(choices=recovery.RECOVERABLE_CHOICES),
        required=False,
        min_length=1,
        default=[s.value for s in recovery.DEFAULT_STATUSES],
        help_text='The delivery states to queue again; default `["failed"]`. `pending` '
        "sends deliveries waiting for a retry now, with a fresh retry schedule.",
    )

    def validate_statuses(self, value: list[str]) -> list[str]:
        return sorted(set(value))


class RecoveryResponseSerializer(serializers.Serializer):
    id = serializers.UUIDField(read_only=True)
    webhook_id = serializers.UUIDField(read_only=True)
    state = serializers.ChoiceField(
        choices=RecoveryJob.State.choices,
        read_only=True,
        help_text="`running` while it queues matches or sends what it queued, `finished` "
        "once every match was queued and sent again, `cancelled` when stopped by "
        "cancelRecovery.",
    )
    since = serializers.DateTimeField(read_only=True)
    until = serializers.DateTimeField(read_only=True, help_text="As asked, or the time it started.")
    statuses = serializers.ListField(child=serializers.CharField(), read_only=True)
    matched = serializers.IntegerField(
        read_only=True, help_text="Deliveries that matched when the recovery started."
    )
    queued = serializers.IntegerField(
        read_only=True,
        help_text="Taken into the recovery's queue so far; it sends them again, oldest "
        "first, at its pace. A queued delivery keeps its state until it is sent.",
    )
    all_queued_at = serializers.DateTimeField(
        allow_null=True, read_only=True, help_text="When the last match was queued."
    )
    done = serializers.IntegerField(
        read_only=True,
        help_text="Of those sent again, how many have since been delivered or failed again.",
    )
    created_at = serializers.DateTimeField(read_only=True)
    updated_at = serializers.DateTimeField(read_only=True)
    finished_at = serializers.DateTimeField(
        allow_null=True, read_only=True, help_text="When it finished or was cancelled."
    )

    def to_representation(self, instance: RecoveryJob) -> dict:
        return {
            "id": str(instance.id),
            "webhook_id": str(instance.webhook_id),
            "state": instance.state,
            "since": _iso8601(instance.since),
            "until": _iso8601(instance.until),
            "statuses": list(instance.statuses),
            "matched": instance.matched,
            "queued": instance.queued,
            "all_queued_at": _iso8601_or_none(instance.all_queued_at),
            "done": getattr(instance, "done", 0),
            "created_at": _iso8601(instance.created_at),
            "updated_at": _iso8601(instance.updated_at),
            "finished_at": _iso8601_or_none(instance.finished_at),
        }
