"""Webhooks, their delivery logs and simulated deliveries."""

from __future__ import annotations

import json
import uuid

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.http import content_disposition_header
from django.views.decorators.http import require_GET
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.permissions import AllowAny
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from conduit.browsable import BrowsableActionMixin
from conduit.errors import Forbidden, Gone, NotFound, ServiceUnavailable, error_body
from conduit.net import client_ip
from conduit.pagination import PAGE_PARAMETERS_NOTE, paginate
from conduit.schema import PAGE_PARAMETERS, error, errors, no_content
from webhooks import attachments, delivery, rawstore, recovery, selectors, services
from webhooks.models import AccountMessage, DeliveryLog, InboundMessage
from webhooks.payload import SCHEMA_VERSIONS, payload_schema
from webhooks.serializers import (
    RESPONSE_EXCERPT,
    CreateRecoveryRequestSerializer,
    CreateWebhookRequestSerializer,
    DeliveryLogResponseSerializer,
    MessageListQuerySerializer,
    MessageResponseSerializer,
    MessageSummaryResponseSerializer,
    RecoveryResponseSerializer,
    RedeliverMessageRequestSerializer,
    RedeliverMessageResponseSerializer,
    SimulateWebhookRequestSerializer,
    SimulateWebhookResponseSerializer,
    UpdateWebhookRequestSerializer,
    WebhookResponseSerializer,
    delivery_state,
    simulate_request_values,
)

_TAGS = ["Webhooks"]
WEBHOOK_ID = OpenApiParameter(
    "id", OpenApiTypes.UUID, OpenApiParameter.PATH, description="Webhook ID"
)
LOG_ID = OpenApiParameter(
    "logId", OpenApiTypes.UUID, OpenApiParameter.PATH, description="Delivery log entry ID"
)


class WebhooksView(APIView):
    @extend_schema(
        operation_id="listWebhooks",
        tags=_TAGS,
        summary="List webhooks",
        description="The account's webhooks, oldest first. Secrets are masked.",
        responses={
            200: OpenApiResponse(
                WebhookResponseSerializer(many=True), description="List of webhooks"
            ),
            **errors(401),
        },
    )
    def get(self, request: Request) -> Response:
        webhooks = selectors.webhook_list(account=request.user)
        return Response(WebhookResponseSerializer(webhooks, many=True).data)

    @extend_schema(
        operation_id="createWebhook",
        tags=_TAGS,
        summary="Create webhook",
        description="Registers `address` (on a domain this account has verified, or a public "
        "domain; `*@domain` is a catch-all) to POST each message to `target_url`. The "
        "signing secret is generated when omitted (`whsec_` + base64 of 32 bytes) and "
        "returned whole in this response only. `payload_template` is a Django template "
        "rendered on the default payload's fields, with a `json` filter; the body is sent "
        "as application/json when the result parses as JSON, else as text/plain. "
        "`rate_limit` is deliveries per minute (0 = unlimited); deliveries over it wait, "
        "they are never dropped. `payload_format` chooses the body's shape: `conduit` "
        "(default), `raw`, `multipart`, or Postmark's, Mailgun's or SendGrid's inbound POST "
        "(`postmark`, `mailgun`, `sendgrid`), so a receiver written for one of those keeps "
        "working; a `mailgun` webhook's `mailgun_signing_key` is generated when omitted and "
        "returned whole in this response only. Basic-auth credentials in `target_url` are "
        "sent as `Authorization: Basic` and never shown again. 422 codes of their own: "
        "`unknown_payload_format`, `template_needs_conduit_format`, `credentials_need_https`.",
        request=CreateWebhookRequestSerializer,
        responses={
            201: OpenApiResponse(WebhookResponseSerializer, description="Webhook created"),
            401: error(401),
            409: error(409, "Address already registered"),
            422: error(422),
        },
    )
    def post(self, request: Request) -> Response:
        serializer = CreateWebhookRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        webhook = services.webhook_create(
            account=request.user,
            data=serializer.validated_data,
            ip=client_ip(request),
            allow_http_credentials=settings.DEBUG,
        )
        context = {"show_secret": True, "show_mailgun_signing_key": True}
        body = WebhookResponseSerializer(webhook, context=context).data
        return Response(body, status=status.HTTP_201_CREATED)


class WebhookView(APIView):
    @extend_schema(
        operation_id="getWebhook",
        parameters=[WEBHOOK_ID],
        tags=_TAGS,
        summary="Get webhook",
        responses={
            200: OpenApiResponse(WebhookResponseSerializer, description="Webhook details"),
            **errors(401, 404),
        },
    )
    def get(self, request: Request, id: uuid.UUID) -> Response:
        webhook = selectors.get_webhook_for_account(account=request.user, webhook_id=id)
        return Response(WebhookResponseSerializer(webhook).data)

    @extend_schema(
        operation_id="updateWebhook",
        parameters=[WEBHOOK_ID],
        tags=_TAGS,
        summary="Update webhook",
        description="Fields left out keep their values. `clear_security_policy: true` "
        "detaches the SMTP security policy. Reactivating a webhook (`active: true`) sends "
        "the messages that waited while it was inactive.",
        request=UpdateWebhookRequestSerializer,
        responses={
            200: OpenApiResponse(WebhookResponseSerializer, description="Updated webhook"),
            401: error(401),
            404: error(404),
            409: error(409, "Address already registered"),
            422: error(422),
        },
    )
    def put(self, request: Request, id: uuid.UUID) -> Response:
        webhook = selectors.get_webhook_for_account(account=request.user, webhook_id=id)
        serializer = UpdateWebhookRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        key_before = webhook.mailgun_signing_key
        webhook = services.webhook_update(
            webhook=webhook,
            data=serializer.validated_data,
            ip=client_ip(request),
            allow_http_credentials=settings.DEBUG,
        )
        # A signing key made (or given) by this request is shown whole, once.
        context = {"show_mailgun_signing_key": webhook.mailgun_signing_key != key_before}
        return Response(WebhookResponseSerializer(webhook, context=context).data)

    @extend_schema(
        operation_id="deleteWebhook",
        parameters=[WEBHOOK_ID],
        tags=_TAGS,
        summary="Delete webhook",
        description="Deletes the webhook with its pending deliveries and its logs.",
        responses={204: no_content("Webhook deleted"), **errors(401, 404)},
    )
    def delete(self, request: Request, id: uuid.UUID) -> Response:
        webhook = selectors.get_webhook_for_account(account=request.user, webhook_id=id)
        services.webhook_delete(webhook=webhook, ip=client_ip(request))
        return Response(status=status.HTTP_204_NO_CONTENT)


class DeliveryLogsView(APIView):
    @extend_schema(
        operation_id="listDeliveryLogs",
        parameters=[WEBHOOK_ID, *PAGE_PARAMETERS],
        tags=_TAGS,
        summary="List delivery logs for a webhook",
        description="One entry per delivery attempt or simulation, newest first. "
        + PAGE_PARAMETERS_NOTE,
        responses={
            200: OpenApiResponse(
                DeliveryLogResponseSerializer(many=True), description="List of delivery logs"
            ),
            401: error(401),
            404: error(404, "Webhook not found"),
        },
    )
    def get(self, request: Request, id: uuid.UUID) -> Response:
        webhook = selectors.get_webhook_for_account(account=request.user, webhook_id=id)
        page = paginate(
            request, selectors.delivery_log_list(webhook=webhook), total=webhook.log_count
        )
        return Response(
            DeliveryLogResponseSerializer(page.items, many=True).data, headers=page.headers
        )


class DeliveryLogView(APIView):
    @extend_schema(
        operation_id="getDeliveryLog",
        parameters=[WEBHOOK_ID, LOG_ID],
        tags=_TAGS,
        summary="Get a single delivery log entry",
        responses={
            200: OpenApiResponse(DeliveryLogResponseSerializer, description="Delivery log entry"),
            **errors(401, 404),
        },
    )
    def get(self, request: Request, id: uuid.UUID, logId: uuid.UUID) -> Response:
        webhook = selectors.get_webhook_for_account(account=request.user, webhook_id=id)
        log = selectors.get_delivery_log_for_webhook(webhook=webhook, log_id=logId)
        return Response(DeliveryLogResponseSerializer(log).data)


class PauseWebhookView(BrowsableActionMixin, APIView):
    """Holds the webhook's deliveries while mail keeps being accepted."""

    def form_page_data(self, request: Request, id: uuid.UUID) -> dict:
        webhook = selectors.get_webhook_for_account(account=request.user, webhook_id=id)
        return WebhookResponseSerializer(webhook).data

    @extend_schema(
        operation_id="pauseWebhook",
        parameters=[WEBHOOK_ID],
        request=None,
        tags=_TAGS,
        summary="Pause deliveries of a webhook",
        description="Mail to the webhook's address is still accepted (250) and stored; its "
        "deliveries wait, attempts and retries included, until resumeWebhook. An attempt "
        "already under way finishes. Unlike `active: false`, which refuses mail at RCPT, "
        "nothing is lost or refused. Pausing a paused webhook changes nothing (`paused_at` "
        "keeps the first pause). Audited as `webhook.paused`.",
        responses={
            200: OpenApiResponse(WebhookResponseSerializer, description="Paused webhook"),
            **errors(401, 404),
        },
    )
    def post(self, request: Request, id: uuid.UUID) -> Response:
        webhook = selectors.get_webhook_for_account(account=request.user, webhook_id=id)
        webhook = services.webhook_pause(webhook=webhook, ip=client_ip(request))
        return Response(WebhookResponseSerializer(webhook).data)


class ResumeWebhookView(BrowsableActionMixin, APIView):
    """Sends what waited while the webhook was paused."""

    def form_page_data(self, request: Request, id: uuid.UUID) -> dict:
        webhook = selectors.get_webhook_for_account(account=request.user, webhook_id=id)
        return WebhookResponseSerializer(webhook).data

    @extend_schema(
        operation_id="resumeWebhook",
        parameters=[WEBHOOK_ID],
        request=None,
        tags=_TAGS,
        summary="Resume deliveries of a webhook",
        description="The deliveries that waited while the webhook was paused are sent, "
        "oldest first (in order of arrival), and new mail is delivered as it comes. "
        "Resuming a webhook that is not paused changes nothing. Audited as "
        "`webhook.resumed`.",
        responses={
            200: OpenApiResponse(WebhookResponseSerializer, description="Resumed webhook"),
            **errors(401, 404),
        },
    )
    def post(self, request: Request, id: uuid.UUID) -> Response:
        webhook = selectors.get_webhook_for_account(account=request.user, webhook_id=id)
        webhook = services.webhook_resume(webhook=webhook, ip=client_ip(request))
        return Response(WebhookResponseSerializer(webhook).data)


RECOVERY_ID = OpenApiParameter(
    "recoveryId", OpenApiTypes.UUID, OpenApiParameter.PATH, description="Recovery ID"
)
_RECOVERY_NOT_FOUND = error(404, "Webhook or recovery not found")


class RecoveriesView(APIView):
    @extend_schema(
        operation_id="listRecoveries",
        parameters=[WEBHOOK_ID, *PAGE_PARAMETERS],
        tags=_TAGS,
        summary="List recoveries of a webhook",
        description="The webhook's recoveries, newest first, each with its progress. "
        + PAGE_PARAMETERS_NOTE,
        responses={
            200: OpenApiResponse(
                RecoveryResponseSerializer(many=True), description="List of recoveries"
            ),
            401: error(401),
            404: error(404, "Webhook not found"),
        },
    )
    def get(self, request: Request, id: uuid.UUID) -> Response:
        webhook = selectors.get_webhook_for_account(account=request.user, webhook_id=id)
        page = paginate(request, selectors.recovery_list(webhook=webhook))
        return Response(
            RecoveryResponseSerializer(page.items, many=True).data, headers=page.headers
        )

    @extend_schema(
        operation_id="createRecovery",
        parameters=[WEBHOOK_ID],
        tags=_TAGS,
        summary="Recover a webhook's deliveries of a time window",
        description="Starts a background job that queues again every delivery of this "
        "webhook created in [`since`, `until`) whose state is in `statuses` (failed by "
        "default) and whose original is still retained: each is sent with the same "
        "`webhook-id` (receivers can drop what they already have) and its attempts count "
        "from zero, as with redeliverMessage. Follow it with getRecovery: `matched`, "
        "`queued`, `done`.\n\n"
        "**Pacing.** The matches are queued first, "
        f"{recovery.QUEUE_BATCH:,} per step (a hundred thousand in seconds; "
        "`all_queued_at` says when the last was), each keeping its state until it is "
        "sent. The recovery then sends them oldest first, at most `CONDUIT_RECOVERY_RATE` "
        f"per second (an operator setting, default 100), and never while more than "
        f"{recovery.BACKLOG} of those it sent still wait for their first attempt: new mail "
        "is never queued behind more than about that many recovered deliveries and keeps "
        "flowing. A webhook paused or deactivated while it runs holds it until it "
        "delivers again.\n\n"
        "**Idempotent.** The same request again (same `since`, `until` as given, same "
        "`statuses`) returns the recovery it started (200) instead of starting another, "
        "whatever its state, unless that one was cancelled; to recover the same window "
        "once more, give another `until`. A different request while one runs is a 409 "
        "`recovery_running` naming it. The window may be at most the webhook's raw "
        "retention wide (422); a paused (`webhook_paused`) or inactive "
        "(`webhook_inactive`) webhook cannot be recovered (409): resume or reactivate it "
        "first. Audited (`recovery.created`).",
        request=CreateRecoveryRequestSerializer,
        responses={
            201: OpenApiResponse(RecoveryResponseSerializer, description="Recovery started"),
            200: OpenApiResponse(
                RecoveryResponseSerializer, description="The same request's recovery"
            ),
            401: error(401),
            404: error(404, "Webhook not found"),
            409: error(409, "Another recovery runs, or the webhook is paused or inactive"),
            422: error(422),
        },
    )
    def post(self, request: Request, id: uuid.UUID) -> Response:
        webhook = selectors.get_webhook_for_account(account=request.user, webhook_id=id)
        body = CreateRecoveryRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        job, created = services.recovery_create(
            webhook=webhook,
            since=body.validated_data["since"],
            until=body.validated_data.get("until"),
            statuses=body.validated_data["statuses"],
            ip=client_ip(request),
        )
        job = selectors.get_recovery_for_webhook(webhook=webhook, recovery_id=job.id)
        return Response(
            RecoveryResponseSerializer(job).data,
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
            headers={"Location": services.recovery_url(job)} if created else {},
        )


class RecoveryView(APIView):
    @extend_schema(
        operation_id="getRecovery",
        parameters=[WEBHOOK_ID, RECOVERY_ID],
        tags=_TAGS,
        summary="Get a recovery and its progress",
        description="`matched`: the deliveries that matched when it started; `queued`: "
        "queued again so far; `done`: of those, delivered or failed again since.",
        responses={
            200: OpenApiResponse(RecoveryResponseSerializer, description="The recovery"),
            401: error(401),
            404: _RECOVERY_NOT_FOUND,
        },
    )
    def get(self, request: Request, id: uuid.UUID, recoveryId: uuid.UUID) -> Response:
        webhook = selectors.get_webhook_for_account(account=request.user, webhook_id=id)
        job = selectors.get_recovery_for_webhook(webhook=webhook, recovery_id=recoveryId)
        return Response(RecoveryResponseSerializer(job).data)


class CancelRecoveryView(APIView):
    @extend_schema(
        operation_id="cancelRecovery",
        parameters=[WEBHOOK_ID, RECOVERY_ID],
        request=None,
        tags=_TAGS,
        summary="Cancel a running recovery",
        description="Nothing more is queued or sent: the deliveries it queued but did not "
        "send yet are left as it found them (their state unchanged); those it sent go on "
        "as usual. A recovery that finished or was cancelled already: 409 "
        "`recovery_finished`. Audited (`recovery.cancelled`).",
        responses={
            200: OpenApiResponse(RecoveryResponseSerializer, description="Cancelled recovery"),
            401: error(401),
            404: _RECOVERY_NOT_FOUND,
            409: error(409, "The recovery is not running (`recovery_finished`)"),
        },
    )
    def post(self, request: Request, id: uuid.UUID, recoveryId: uuid.UUID) -> Response:
        webhook = selectors.get_webhook_for_account(account=request.user, webhook_id=id)
        job = selectors.get_recovery_for_webhook(webhook=webhook, recovery_id=recoveryId)
        services.recovery_cancel(job=job, ip=client_ip(request))
        job = selectors.get_recovery_for_webhook(webhook=webhook, recovery_id=recoveryId)
        return Response(RecoveryResponseSerializer(job).data)


class SimulateWebhookView(BrowsableActionMixin, APIView):
    """Sends a synthetic message to the webhook, once, and shows what came back."""

    form_serializer_class = SimulateWebhookRequestSerializer

    def form_page_data(self, request: Request, id: uuid.UUID) -> dict:
        webhook = selectors.get_webhook_for_account(account=request.user, webhook_id=id)
        return WebhookResponseSerializer(webhook).data

    @extend_schema(
        operation_id="simulateWebhook",
        parameters=[WEBHOOK_ID],
        tags=_TAGS,
        summary="Simulate an incoming email and trigger the webhook",
        description="Constructs a synthetic email message and delivers it to the webhook "
        "target, recording the result in the delivery log with a simulated flag. The request "
        "goes through the same template, headers and signing as real deliveries, once, "
        "without retries; `http_status` and `error` tell how it went.\n\n"
        "Every field is optional and the body is never refused: a field that is missing, "
        "not a string or (for `from`) empty takes its default, and a longer value is cut to "
        "the maximum length.",
        request=SimulateWebhookRequestSerializer,
        responses={
            200: OpenApiResponse(
                SimulateWebhookResponseSerializer,
                description="Delivery attempt completed (check http_status / error for outcome)",
            ),
            401: error(401),
            404: error(404, "Webhook not found"),
        },
    )
    def post(self, request: Request, id: uuid.UUID) -> Response:
        webhook = selectors.get_webhook_for_account(account=request.user, webhook_id=id)
        data = simulate_request_values(request.data)
        log = services.webhook_simulate(
            webhook=webhook, mail_from=data["from"], subject=data["subject"], text=data["text"]
        )
        return Response(
            SimulateWebhookResponseSerializer(
                {
                    "http_status": log.http_status,
                    "duration_ms": log.duration_ms,
                    "error": log.error or None,
                    "simulated": True,
                }
            ).data
        )


@require_GET
def payload_schema_view(request: HttpRequest, version: int) -> HttpResponse:
    """The JSON Schema of the default webhook payload, version ``version`` (public)."""
    if version not in SCHEMA_VERSIONS:
        known = ", ".join(f"v{v}.json" for v in SCHEMA_VERSIONS)
        message = f"There is no payload schema version {version}; published: {known}."
        return JsonResponse(error_body("not_found", message), status=404)
    response = HttpResponse(
        json.dumps(payload_schema(version), indent=2), content_type="application/schema+json"
    )
    response["Cache-Control"] = "public, max-age=3600"
    response["Access-Control-Allow-Origin"] = "*"
    return response


class _AnyAccept(DefaultContentNegotiation):
    """An attachment link serves bytes, not a representation: whatever the client's
    Accept header says, it gets them (and its errors in JSON)."""

    def select_renderer(
        self, request: Request, renderers: list, format_suffix: str | None = None
    ) -> tuple:
        return renderers[0], renderers[0].media_type


class AttachmentView(APIView):
    """The bytes behind an attachment delivered as a link; the link is the credential."""

    authentication_classes: list = []
    permission_classes = [AllowAny]
    content_negotiation_class = _AnyAccept

    @extend_schema(
        operation_id="downloadAttachment",
        parameters=[
            OpenApiParameter(
                "token",
                {"type": "string", "pattern": "^[A-Za-z0-9_:-]+$"},
                OpenApiParameter.PATH,
                description="The signed token of the link, as delivered in `content_url`.",
            )
        ],
        tags=["Messages"],
        summary="Download an attachment delivered as a link",
        description="Attachments larger than a webhook's `attachment_link_threshold` are "
        "delivered as `content_url` instead of base64 `content`; this is that URL. It needs "
        "no token: the link itself is signed and expires (`content_url_expires_at`, "
        "`CONDUIT_ATTACHMENT_LINK_TTL` after the attempt that carried it). The answer is the "
        "attachment's decoded bytes as `application/octet-stream` (its own type is in the "
        "payload's entry; its file name also in `Content-Disposition`).\n\n"
        "Errors: 403 `attachment_link_invalid` (altered or not made here), 410 "
        "`attachment_link_expired` (redeliver the message for a fresh link), 410 "
        "`message_purged` (the raw message is past its retention), 410 `message_deleted`, "
        "404 `not_found` (no attachment at that position), 503 `raw_store_unavailable` "
        "(the object store holding the message did not answer; retry).",
        auth=[],
        responses={
            (200, "application/octet-stream"): OpenApiResponse(
                OpenApiTypes.BINARY, description="The attachment's decoded bytes"
            ),
            403: error(403, "The link is not valid"),
            404: error(404, "No such attachment"),
            410: error(410, "The link expired, or its message was purged or deleted"),
            503: error(503, "The raw message store is unavailable; retry"),
        },
    )
    def get(self, request: Request, token: str) -> HttpResponse:
        try:
            found = attachments.attachment_for_link(token)
        except attachments.LinkInvalid:
            raise Forbidden(
                "This attachment link is not valid: it was altered or cut short. Use the "
                "content_url exactly as it was delivered.",
                code="attachment_link_invalid",
            ) from None
        except attachments.LinkExpired as exc:
            raise Gone(
                f"{exc}. Redeliver the message to get a fresh link.",
                code="attachment_link_expired",
            ) from None
        except attachments.MessageDeleted:
            raise Gone("The message of this attachment was deleted.", code="message_deleted")
        except rawstore.RawMessageGone as exc:
            raise Gone(
                f"{exc}, after its retention; its attachments are no longer available.",
                code="message_purged",
            ) from None
        except rawstore.RawStoreUnavailable:
            raise ServiceUnavailable(
                "The store holding this message did not answer; try again in a minute.",
                code="raw_store_unavailable",
            ) from None
        if found is None:
            raise NotFound("The message has no attachment at this position.")
        # Always octet-stream: the payload gave the attachment's own type, and
        # sender-controlled bytes are never rendered or sniffed on our origin.
        response = HttpResponse(found.data, content_type="application/octet-stream")
        response["Content-Disposition"] = content_disposition_header(
            True, found.filename or "attachment"
        )
        response["X-Content-Type-Options"] = "nosniff"
        response["Content-Security-Policy"] = "sandbox"
        response["Cache-Control"] = f"private, max-age={attachments.seconds_left(found.expires_at)}"
        return response


# --- Messages ------------------------------------------------------------------------

_MESSAGE_TAGS = ["Messages"]
MESSAGE_ID = OpenApiParameter(
    "id", OpenApiTypes.UUID, OpenApiParameter.PATH, description="Inbound message ID"
)
_PURGED = error(410, "The original was purged after its retention period (`message_purged`)")


def _query_filters(request: Request) -> selectors.MessageFilters:
    query = MessageListQuerySerializer(data=request.query_params)
    query.is_valid(raise_exception=True)
    values = dict(query.validated_data)
    webhook_id = values.pop("webhook_id", None)
    webhook = None
    if webhook_id is not None:
        webhook = selectors.get_webhook_for_account(account=request.user, webhook_id=webhook_id)
    return selectors.MessageFilters(webhook=webhook, **values)


class MessagesView(APIView):
    @extend_schema(
        operation_id="listMessages",
        parameters=[MessageListQuerySerializer, *PAGE_PARAMETERS],
        tags=_MESSAGE_TAGS,
        summary="List inbound messages",
        description="The messages the account's webhooks received, newest first, each with "
        "its deliveries to the account's webhooks (a message sent to several accounts' "
        "addresses is listed by each, with only its own deliveries). The filters combine; "
        "`since` is inclusive, `until` exclusive. "
        + PAGE_PARAMETERS_NOTE
        + f" Unfiltered, `X-Total-Count` is exact; with a filter it counts at most "
        f"{selectors.MESSAGE_COUNT_CAP:,} matches ({selectors.MESSAGE_COUNT_CAP} means "
        "at least that many).",
        responses={
            200: OpenApiResponse(
                MessageSummaryResponseSerializer(many=True), description="List of messages"
            ),
            401: error(401),
            404: error(404, "Webhook not found (the webhook_id filter)"),
            422: error(422),
        },
    )
    def get(self, request: Request) -> Response:
        filters = _query_filters(request)
        total = selectors.message_list_total(account=request.user, filters=filters)
        rows = selectors.message_list(account=request.user, filters=filters)
        page = paginate(request, rows, total=total)
        deliveries = selectors.deliveries_of_messages(
            account=request.user, message_ids=[row["message_id"] for row in page.items]
        )
        listed = [(row, deliveries.get(row["message_id"], [])) for row in page.items]
        return Response(
            MessageSummaryResponseSerializer(listed, many=True).data, headers=page.headers
        )


def _attempt(log: DeliveryLog) -> dict:
    return {
        "id": log.id,
        "attempt": log.attempt,
        "attempted_at": log.attempted_at,
        "duration_ms": log.duration_ms,
        "http_status": log.http_status,
        "error": log.error,
        "response_excerpt": log.response_body[:RESPONSE_EXCERPT],
    }


_STORE_DOWN = error(503, "The store holding the original did not answer (`raw_store_unavailable`)")


def _original(message: InboundMessage) -> bytes | None:
    """The original's bytes (rawstore.raw_bytes, the one reader), None once purged;
    503 while the object store holding it does not answer."""
    try:
        return rawstore.raw_bytes(message)
    except rawstore.RawMessageGone:
        return None
    except rawstore.RawStoreUnavailable:
        raise ServiceUnavailable(
            "The store holding this message did not answer; try again in a minute.",
            code="raw_store_unavailable",
        ) from None


def _message_detail(view: AccountMessage) -> dict:
    """The message as the account sees it, with what each of its webhooks received."""
    message = view.message
    raw = _original(message)
    items, headers, rcpt_to = [], None, []
    for item in selectors.message_deliveries(view=view):
        received = None
        if raw is not None:
            source = delivery.message_source(
                message=message, rcpt_to=item.rcpt_to, simulated=False, webhook=item.webhook
            )
            received = delivery.received_body(
                webhook=item.webhook, source=source, webhook_message_id=item.webhook_message_id
            )
            payload = received.payload
            headers = headers or {name: payload[name] for name in _HEADER_FIELDS}
        rcpt_to.extend(item.rcpt_to)
        items.append(
            {
                "id": item.id,
                "webhook_id": item.webhook_id,
                "webhook_address": item.webhook.address,
                "webhook_message_id": item.webhook_message_id,
                "rcpt_to": item.rcpt_to,
                "status": item.status,
                "attempts": item.attempts,
                "next_attempt_at": item.next_attempt_at,
                "delivered_at": item.delivered_at,
                "last_error": item.last_error,
                "payload": received.payload if received else None,
                "content_type": received.content_type if received else None,
                "body": received.body if received else None,
                "template_error": received.template_error if received else None,
                "logs": [_attempt(log) for log in item.attempt_logs],
            }
        )
    if headers is None and raw is not None:  # no delivery left: the headers alone
        payload = delivery.message_payload(message=message, rcpt_to=[], simulated=False)
        headers = {name: payload[name] for name in _HEADER_FIELDS}
    return {
        "id": message.id,
        "received_at": message.received_at,
        "mail_from": message.mail_from,
        "rcpt_to": rcpt_to,
        "client_ip": message.client_ip,
        "helo": message.helo,
        "subject": message.subject,
        "message_id": message.message_id_header,
        "size": message.size,
        "raw_available": raw is not None,
        "raw_purged_at": message.raw_purged_at,
        "authentication": {
            "spf": message.spf_result or None,
            "dkim": list(message.dkim_domains or []),
            "smtp_auth_user": message.smtp_auth_user or None,
        },
        "headers": headers,
        "deliveries": items,
    }


_HEADER_FIELDS = (
    "from",
    "to",
    "cc",
    "reply_to",
    "subject",
    "date",
    "message_id",
    "in_reply_to",
    "references",
)


class MessageView(APIView):
    @extend_schema(
        operation_id="getMessage",
        parameters=[MESSAGE_ID],
        tags=_MESSAGE_TAGS,
        summary="Get an inbound message",
        description="The envelope, the main headers, and for each of the account's webhooks "
        "the payload exactly as it received it (with a payload template: the body it renders "
        "to with the webhook's current template), the delivery's state, attempt count, next "
        "attempt time and every attempt (status, duration, error, the start of the answer). "
        "After the retention period the original is purged: `payload`, `body` and `headers` "
        "are then null, the rest stays.",
        responses={
            200: OpenApiResponse(MessageResponseSerializer, description="The message"),
            **errors(401, 404),
            503: _STORE_DOWN,
        },
    )
    def get(self, request: Request, id: uuid.UUID) -> Response:
        view = selectors.get_message_for_account(account=request.user, message_id=id)
        return Response(MessageResponseSerializer(_message_detail(view)).data)

    @extend_schema(
        operation_id="deleteMessage",
        parameters=[MESSAGE_ID],
        tags=_MESSAGE_TAGS,
        summary="Delete an inbound message",
        description="Deletes the message from the account: its deliveries to the account's "
        "webhooks, their attempts (delivery logs) and, unless another account also received "
        "it, the message and its original. Audited (`message.deleted`).",
        responses={204: no_content("Message deleted"), **errors(401, 404), 503: _STORE_DOWN},
    )
    def delete(self, request: Request, id: uuid.UUID) -> Response:
        view = selectors.get_message_for_account(account=request.user, message_id=id)
        services.message_delete(view=view, ip=client_ip(request))
        return Response(status=status.HTTP_204_NO_CONTENT)


class RawMessageRenderer(BaseRenderer):
    """Lets a client ask for ``Accept: message/rfc822``; the bytes themselves
    leave as a plain HttpResponse, so this only ever renders an error (as JSON)."""

    media_type = "message/rfc822"
    format = "eml"

    def render(self, data: object, accepted_media_type=None, renderer_context=None) -> bytes:
        return JSONRenderer().render(data)


class MessageRawView(APIView):
    renderer_classes = [JSONRenderer, RawMessageRenderer]

    def finalize_response(self, request: Request, response, *args, **kwargs):
        response = super().finalize_response(request, response, *args, **kwargs)
        if isinstance(response, Response):  # an error: always JSON, whatever was accepted
            response.accepted_renderer = JSONRenderer()
            response.accepted_media_type = JSONRenderer.media_type
        return response

    @extend_schema(
        operation_id="downloadMessageRaw",
        parameters=[MESSAGE_ID],
        tags=_MESSAGE_TAGS,
        summary="Download the original of an inbound message",
        description="The message exactly as it was received over SMTP, as `message/rfc822` "
        "(an .eml file), while it is retained. After the retention period: 410 "
        "`message_purged`, saying when it was purged.",
        responses={
            (200, "message/rfc822"): OpenApiResponse(
                OpenApiTypes.BINARY, description="The original message"
            ),
            **errors(401, 404),
            410: _PURGED,
            503: _STORE_DOWN,
        },
    )
    def get(self, request: Request, id: uuid.UUID) -> HttpResponse:
        view = selectors.get_message_for_account(account=request.user, message_id=id)
        raw = _original(view.message)
        if raw is None:
            raise services.message_purged(view.message)
        response = HttpResponse(raw, content_type="message/rfc822")
        response["Content-Disposition"] = f'attachment; filename="{view.message_id}.eml"'
        return response


class RedeliverMessageView(APIView):
    @extend_schema(
        operation_id="redeliverMessage",
        parameters=[MESSAGE_ID],
        tags=_MESSAGE_TAGS,
        summary="Deliver an inbound message again",
        description="Queues the message again to all the account's webhooks it went to, or "
        "to the one `webhook_id` names, whatever the deliveries' state: each is sent with "
        "the same `webhook-id` (receivers can drop what they already have) and its attempts "
        "count from zero again (a full retry schedule). A delivery being sent at this moment "
        "is made due again, and that attempt's outcome decides whether it goes once more. "
        "Audited (`message.redelivered`).",
        request=RedeliverMessageRequestSerializer,
        responses={
            202: OpenApiResponse(
                RedeliverMessageResponseSerializer, description="Deliveries queued"
            ),
            401: error(401),
            404: error(404, "Message not found, or not delivered to that webhook"),
            409: error(409, "No delivery left: its webhooks were deleted (`no_deliveries`)"),
            410: _PURGED,
            422: error(422),
        },
    )
    def post(self, request: Request, id: uuid.UUID) -> Response:
        view = selectors.get_message_for_account(account=request.user, message_id=id)
        body = RedeliverMessageRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        webhook_id = body.validated_data.get("webhook_id")
        webhook = None
        if webhook_id is not None:
            webhook = selectors.get_webhook_for_account(account=request.user, webhook_id=webhook_id)
        queued = services.message_redeliver(view=view, webhook=webhook, ip=client_ip(request))
        return Response(
            RedeliverMessageResponseSerializer(
                {"deliveries": [delivery_state(d) for d in queued]}
            ).data,
            status=status.HTTP_202_ACCEPTED,
        )
