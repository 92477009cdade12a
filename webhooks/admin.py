from __future__ import annotations

import uuid
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db import models, transaction
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, render
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html
from django.utils.text import Truncator

from conduit.admin import ReadOnlyAdminMixin
from conduit.errors import ApiError
from conduit.net import client_ip
from webhooks import (
    delivery,
    formats,
    rawstore,
    recovery,
    retention,
    selectors,
    services,
    validation,
)
from webhooks.models import (
    Delivery,
    DeliveryLog,
    InboundMessage,
    PayloadFormat,
    RecoveryJob,
    Webhook,
)

SEARCH_HELP = "Message-ID, sender or recipient address"


def _short(text: str, length: int = 60) -> str:
    """The start of a long text in a list column, the whole of it on hover."""
    if not text:
        return ""
    return format_html('<span title="{}">{}</span>', text, Truncator(text).chars(length))


def _recipients(addresses: list[str]) -> str:
    return ", ".join(addresses)


class AttemptOutcomeFilter(admin.SimpleListFilter):
    title = "outcome"
    parameter_name = "outcome"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list:
        return [
            ("ok", "Delivered (2xx)"),
            ("http_error", "Refused (HTTP status not 2xx)"),
            ("no_response", "No response (network, TLS, timeout, blocked)"),
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet[DeliveryLog]) -> QuerySet:
        if self.value() == "ok":
            return queryset.filter(http_status__gte=200, http_status__lt=300)
        if self.value() == "http_error":
            return queryset.filter(http_status__isnull=False).exclude(
                http_status__gte=200, http_status__lt=300
            )
        if self.value() == "no_response":
            return queryset.filter(http_status__isnull=True)
        return queryset


class RecentLogsInline(admin.TabularInline):
    model = DeliveryLog
    fields = [
        "attempted_at",
        "http_status",
        "duration_ms",
        "error",
        "sender",
        "simulated",
        "payload_format",
    ]
    readonly_fields = fields
    ordering = ["-attempted_at"]
    extra = 0
    max_num = 0
    can_delete = False
    show_change_link = True
    verbose_name_plural = "recent delivery logs (last 20)"

    def get_queryset(self, request: HttpRequest) -> QuerySet[DeliveryLog]:
        queryset = super().get_queryset(request)
        # The inline cannot slice its own queryset; pick the newest 20 by id.
        webhook_id = (
            request.resolver_match.kwargs.get("object_id") if request.resolver_match else None
        )
        if not webhook_id:
            return queryset.none()
        recent = (
            DeliveryLog.objects.filter(webhook_id=webhook_id)
            .order_by("-attempted_at")
            .values_list("id", flat=True)[:20]
        )
        return queryset.filter(id__in=list(recent))


class PausedFilter(admin.SimpleListFilter):
    title = "paused"
    parameter_name = "paused"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list:
        return [("yes", "Paused"), ("no", "Delivering")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Webhook]) -> QuerySet:
        if self.value() in ("yes", "no"):
            return queryset.filter(paused_at__isnull=self.value() == "no")
        return queryset


class FailingFilter(admin.SimpleListFilter):
    """Webhooks failing now: CONDUIT_NOTIFY_FAILING_AFTER failed attempts in a row
    (webhooks/health.py), what their accounts were told as webhook_failing."""

    title = "failing"
    parameter_name = "failing"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list:
        return [("yes", "Failing"), ("no", "Healthy")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Webhook]) -> QuerySet:
        failing = Q(consecutive_failures__gte=settings.CONDUIT_NOTIFY_FAILING_AFTER)
        if self.value() == "yes":
            return queryset.filter(failing)
        if self.value() == "no":
            return queryset.exclude(failing)
        return queryset


class WebhookAdminForm(forms.ModelForm):
    """The admin's webhook form (its model and fields come from WebhookAdmin) with the
    retention bound the API applies."""

    def clean_raw_retention_days(self) -> int | None:
        value = self.cleaned_data["raw_retention_days"]
        problem = retention.retention_problem(value)
        if problem:
            raise forms.ValidationError(problem)
        return value

    def clean_target_url(self) -> str:
        # Credentials go through the API, which stores them encrypted (target_auth);
        # typed here they would sit in target_url in the clear.
        value = self.cleaned_data["target_url"]
        if validation.split_credentials(value)[1] is not None:
            raise forms.ValidationError(
                "Leave credentials out of the URL here; the account sets them through the API "
                "(updateWebhook), which keeps them encrypted."
            )
        return value

    def clean(self) -> dict:
        cleaned = super().clean()
        payload_format = cleaned.get("payload_format")
        if cleaned.get("payload_template") and payload_format not in (None, PayloadFormat.CONDUIT):
            self.add_error(
                "payload_template",
                "A payload template shapes the conduit format only; empty it or choose conduit.",
            )
        return cleaned


class RecoveryInline(admin.TabularInline):
    """The webhook's recoveries, newest first, with their progress."""

    model = RecoveryJob
    fields = ["created_at", "state", "since", "until", "matched", "queued", "done", "operator"]
    readonly_fields = fields
    ordering = ["-created_at"]
    extra = 0
    max_num = 0
    can_delete = False
    show_change_link = True
    verbose_name_plural = "recoveries"

    def get_queryset(self, request: HttpRequest) -> QuerySet[RecoveryJob]:
        return selectors.with_progress(super().get_queryset(request))

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    @admin.display(description="done")
    def done(self, obj: RecoveryJob) -> int:
        return obj.done  # type: ignore[attr-defined]


class RecoverForm(forms.Form):
    """What createRecovery asks for, as the admin's form."""

    since = forms.DateTimeField(help_text="Deliveries created at or after this time (UTC).")
    until = forms.DateTimeField(required=False, help_text="Before this time; empty: up to now.")
    statuses = forms.MultipleChoiceField(
        choices=recovery.RECOVERABLE_CHOICES,
        initial=[status.value for status in recovery.DEFAULT_STATUSES],
        widget=forms.CheckboxSelectMultiple,
    )


@admin.register(Webhook)
class WebhookAdmin(admin.ModelAdmin):
    form = WebhookAdminForm
    list_display = [
        "address",
        "account",
        "target_url",
        "active",
        "paused_at",
        "failing_since",
        "rate_limit",
        "created_at",
    ]
    list_filter = [
        "active",
        PausedFilter,
        FailingFilter,
        "payload_format",
        ("created_at", admin.DateFieldListFilter),
    ]
    search_fields = ["address", "target_url", "account__email", "name"]
    list_select_related = ["account"]
    ordering = ["-created_at"]
    # Pausing goes through the actions (audited), not the form.
    readonly_fields = [
        "id",
        "paused_at",
        "recover",
        "log_count",
        "consecutive_failures",
        "failing_since",
        "created_at",
        "updated_at",
    ]
    # Secrets are never shown: the signing secret, the target URL's credentials
    # (target_url is stored without them), the Mailgun signing key.
    exclude = ["secret", "target_auth", "mailgun_signing_key"]
    raw_id_fields = ["account", "domain", "smtp_security_policy"]
    inlines = [RecoveryInline, RecentLogsInline]
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}
    actions = ["pause", "resume"]

    def save_model(self, request: HttpRequest, obj: Webhook, form: Any, change: bool) -> None:
        # As through the API: a Mailgun-format webhook always has a signing key.
        if obj.payload_format == PayloadFormat.MAILGUN and not obj.mailgun_signing_key:
            obj.mailgun_signing_key = formats.generate_mailgun_signing_key()
        super().save_model(request, obj, form, change)

    @admin.display(description="recover")
    def recover(self, obj: Webhook) -> str:
        if obj.pk is None:
            return ""
        url = reverse("admin:webhooks_webhook_recover", args=[obj.pk])
        return format_html('<a href="{}">Recover deliveries of a time window…</a>', url)

    def get_urls(self) -> list[URLPattern]:
        recover = path(
            "<path:object_id>/recover/",
            self.admin_site.admin_view(self.recover_view),
            name="webhooks_webhook_recover",
        )
        return [recover, *super().get_urls()]

    def recover_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """Start a recovery for this webhook (the service createRecovery calls)."""
        webhook = get_object_or_404(Webhook, id=object_id)
        if not self.has_change_permission(request, webhook):
            raise PermissionDenied
        form = RecoverForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                job, created = services.recovery_create(
                    webhook=webhook,
                    since=form.cleaned_data["since"],
                    until=form.cleaned_data["until"],
                    statuses=sorted(form.cleaned_data["statuses"]),
                    ip=client_ip(request),
                    operator=request.user.get_username(),
                )
            except ApiError as exc:
                form.add_error(None, exc.message)
            else:
                if created:
                    text = (
                        f"Recovery started: {job.matched} deliveries match; they are queued "
                        "in batches."
                    )
                else:
                    text = "The same recovery was already started; here it is (nothing sent twice)."
                self.message_user(request, text, messages.SUCCESS)
                return HttpResponseRedirect(
                    reverse("admin:webhooks_recoveryjob_change", args=[job.id])
                )
        context = {
            **self.admin_site.each_context(request),
            "title": f"Recover deliveries of {webhook.address}",
            "opts": self.opts,
            "original": webhook,
            "form": form,
        }
        return render(request, "admin/webhooks/webhook/recover.html", context)

    @admin.action(description="Pause deliveries (mail still accepted)", permissions=["change"])
    def pause(self, request: HttpRequest, queryset: QuerySet[Webhook]) -> None:
        ip, operator = client_ip(request), request.user.get_username()
        for webhook in queryset:
            services.webhook_pause(webhook=webhook, ip=ip, operator=operator)
        self.message_user(
            request,
            f"Paused {len(queryset)} webhook(s): their mail is accepted and waits.",
            messages.SUCCESS,
        )

    @admin.action(description="Resume deliveries (send what waited)", permissions=["change"])
    def resume(self, request: HttpRequest, queryset: QuerySet[Webhook]) -> None:
        ip, operator = client_ip(request), request.user.get_username()
        for webhook in queryset:
            services.webhook_resume(webhook=webhook, ip=ip, operator=operator)
        self.message_user(
            request,
            f"Resumed {len(queryset)} webhook(s): what waited is being sent, oldest first.",
            messages.SUCCESS,
        )


class AttemptInline(admin.TabularInline):
    """Every HTTP attempt of one delivery, oldest first."""

    model = DeliveryLog
    fields = ["attempt", "attempted_at", "http_status", "duration_ms", "error", "simulated"]
    readonly_fields = fields
    ordering = ["attempted_at"]
    extra = 0
    max_num = 0
    can_delete = False
    show_change_link = True
    verbose_name = "attempt"

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(Delivery)
class DeliveryAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = [
        "created_at",
        "status",
        "webhook",
        "recipients",
        "sender",
        "attempts",
        "next_attempt_at",
        "short_error",
    ]
    list_filter = [
        "status",
        "webhook",
        "webhook__account",
        ("created_at", admin.DateFieldListFilter),
    ]
    search_fields = [
        "id",
        "message__message_id_header",
        "message__mail_from",
        "rcpt_to",
        "webhook__address",
    ]
    search_help_text = SEARCH_HELP
    ordering = ["-created_at"]
    # The whole table may be large: no COUNT(*) of it beside each filtered count.
    show_full_result_count = False
    inlines = [AttemptInline]
    actions = ["redeliver"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Delivery]:
        # The raw MIME (up to the SIZE limit each) is never shown here.
        return (
            super().get_queryset(request).select_related("webhook", "message").defer("message__raw")
        )

    @admin.display(description="recipients")
    def recipients(self, obj: Delivery) -> str:
        return _recipients(obj.rcpt_to)

    @admin.display(description="sender", ordering="message__mail_from")
    def sender(self, obj: Delivery) -> str:
        return obj.message.mail_from or "<>"

    @admin.display(description="last error")
    def short_error(self, obj: Delivery) -> str:
        return _short(obj.last_error)

    @admin.action(description="Redeliver (same webhook-id)", permissions=["operate"])
    def redeliver(self, request: HttpRequest, queryset: QuerySet[Delivery]) -> None:
        # A pending or delivering one is already on its way: queueing it again
        # would send it twice.
        finished = [Delivery.Status.FAILED, Delivery.Status.DELIVERED]
        skipped = queryset.exclude(status__in=finished).count()
        count = 0
        with transaction.atomic():
            for item in queryset.filter(status__in=finished):
                delivery.redeliver(delivery=item)
                count += 1
        self.message_user(request, f"{count} deliveries queued again.", messages.SUCCESS)
        if skipped:
            self.message_user(
                request,
                f"Skipped {skipped} delivery(ies) still pending or being sent: they are "
                "already queued.",
                messages.WARNING,
            )


class DeliveryInline(admin.TabularInline):
    model = Delivery
    fields = ["webhook", "status", "attempts", "next_attempt_at", "delivered_at", "last_error"]
    readonly_fields = fields
    extra = 0
    max_num = 0
    can_delete = False
    show_change_link = True

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(InboundMessage)
class InboundMessageAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = [
        "received_at",
        "mail_from",
        "short_subject",
        "recipients",
        "short_message_id",
        "client_ip",
        "size",
        "spf_result",
    ]
    list_filter = [
        ("received_at", admin.DateFieldListFilter),
        "deliveries__status",
        "spf_result",
    ]
    search_fields = ["message_id_header", "mail_from", "rcpt_to", "client_ip", "subject"]
    search_help_text = SEARCH_HELP + ", or subject"
    ordering = ["-received_at"]
    show_full_result_count = False
    exclude = ["raw"]
    inlines = [DeliveryInline]
    actions = ["redeliver"]

    def get_urls(self) -> list[URLPattern]:
        raw = path(
            "<path:object_id>/raw/",
            self.admin_site.admin_view(self.download_raw),
            name="webhooks_inboundmessage_raw",
        )
        return [raw, *super().get_urls()]

    def download_raw(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """The original as received (message/rfc822), read as the API reads it."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        message = get_object_or_404(InboundMessage, id=object_id)
        try:
            raw: bytes | None = rawstore.raw_bytes(message)
        except rawstore.RawMessageGone:
            raw = None
        except rawstore.RawStoreUnavailable as exc:
            self.message_user(request, f"The raw store did not answer: {exc}", messages.ERROR)
            change = reverse("admin:webhooks_inboundmessage_change", args=[message.id])
            return HttpResponseRedirect(change)
        if raw is None:
            self.message_user(request, services.message_purged(message).message, messages.WARNING)
            change = reverse("admin:webhooks_inboundmessage_change", args=[message.id])
            return HttpResponseRedirect(change)
        response = HttpResponse(raw, content_type="message/rfc822")
        response["Content-Disposition"] = f'attachment; filename="{message.id}.eml"'
        return response

    @admin.action(
        description="Redeliver to every webhook (same webhook-id)", permissions=["operate"]
    )
    def redeliver(self, request: HttpRequest, queryset: QuerySet[InboundMessage]) -> None:
        queued, purged = 0, 0
        for message in queryset.defer("raw"):
            if message.raw_purged_at is not None:
                purged += 1
                continue
            queued += services.message_redeliver_all(
                message=message, ip=client_ip(request), operator=request.user.get_username()
            )
        self.message_user(request, f"{queued} deliveries queued again.", messages.SUCCESS)
        if purged:
            self.message_user(
                request,
                f"Skipped {purged} message(s) whose original was purged: nothing left to send.",
                messages.WARNING,
            )

    @admin.display(description="subject", ordering="subject")
    def short_subject(self, obj: InboundMessage) -> str:
        return _short(obj.subject, 50)

    def get_queryset(self, request: HttpRequest) -> QuerySet[InboundMessage]:
        return super().get_queryset(request).defer("raw")

    @admin.display(description="recipients")
    def recipients(self, obj: InboundMessage) -> str:
        return _recipients(obj.rcpt_to)

    @admin.display(description="Message-ID", ordering="message_id_header")
    def short_message_id(self, obj: InboundMessage) -> str:
        return _short(obj.message_id_header, 40)

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context=None
    ) -> HttpResponse:
        # Every HTTP attempt of every delivery of the message (the template's table):
        # the logs hang off the deliveries, so they cannot be an inline here.
        try:
            message_id = uuid.UUID(object_id)
        except ValueError:  # no such message: the admin's own view says so
            attempts = []
        else:
            attempts = list(
                DeliveryLog.objects.filter(delivery__message_id=message_id)
                .select_related("webhook")
                .defer("response_body")
                .order_by("attempted_at", "id")
            )
        context = {
            "attempts": attempts,
            "can_redeliver": self.has_operate_permission(request),
            **(extra_context or {}),
        }
        return super().change_view(request, object_id, form_url, context)


@admin.register(DeliveryLog)
class DeliveryLogAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = [
        "attempted_at",
        "webhook",
        "status",
        "short_error",
        "sender",
        "duration",
        "attempt",
        "simulated",
    ]
    list_filter = [
        AttemptOutcomeFilter,
        "simulated",
        "webhook",
        "webhook__account",
        ("attempted_at", admin.DateFieldListFilter),
    ]
    search_fields = ["smtp_message_id", "sender", "delivery__rcpt_to", "webhook__address"]
    search_help_text = SEARCH_HELP
    list_select_related = ["webhook"]
    ordering = ["-attempted_at"]
    show_full_result_count = False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        # The history of attempts stays whole (and each webhook's log_count true).
        return False

    def get_queryset(self, request: HttpRequest) -> QuerySet[DeliveryLog]:
        queryset = super().get_queryset(request)
        # The list never shows the kept response bodies (up to 20 KB each).
        if request.resolver_match and request.resolver_match.url_name.endswith("changelist"):
            queryset = queryset.defer("response_body")
        return queryset

    @admin.display(description="status", ordering="http_status")
    def status(self, obj: DeliveryLog) -> str:
        return str(obj.http_status) if obj.http_status is not None else "no response"

    @admin.display(description="error")
    def short_error(self, obj: DeliveryLog) -> str:
        return _short(obj.error)

    @admin.display(description="duration", ordering="duration_ms")
    def duration(self, obj: DeliveryLog) -> str:
        return f"{obj.duration_ms} ms"


@admin.register(RecoveryJob)
class RecoveryJobAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = [
        "created_at",
        "webhook",
        "state",
        "since",
        "until",
        "matched",
        "queued",
        "done",
        "finished_at",
        "operator",
    ]
    list_filter = ["state", ("created_at", admin.DateFieldListFilter)]
    search_fields = ["id", "webhook__address"]
    list_select_related = ["webhook"]
    ordering = ["-created_at"]
    readonly_fields = ["done"]
    exclude = ["request_key", "cursor_created_at", "cursor_id"]
    actions = ["cancel"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[RecoveryJob]:
        return selectors.with_progress(super().get_queryset(request))

    @admin.display(description="done")
    def done(self, obj: RecoveryJob) -> int:
        return obj.done  # type: ignore[attr-defined]

    @admin.action(description="Cancel (queue no further batch)", permissions=["operate"])
    def cancel(self, request: HttpRequest, queryset: QuerySet[RecoveryJob]) -> None:
        ip, operator = client_ip(request), request.user.get_username()
        cancelled = 0
        for job in queryset.filter(state=RecoveryJob.State.RUNNING):
            try:
                services.recovery_cancel(job=job, ip=ip, operator=operator)
            except ApiError as exc:  # it finished meanwhile
                self.message_user(request, exc.message, messages.WARNING)
            else:
                cancelled += 1
        self.message_user(request, f"Cancelled {cancelled} recovery(ies).", messages.SUCCESS)
