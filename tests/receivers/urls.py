"""django-anymail's own inbound views, as an app using them mounts them, and two
views of the test's own: the standard library reading a `raw` delivery, and what was
received so far."""

from __future__ import annotations

from anymail.webhooks.mailgun import MailgunInboundWebhookView
from anymail.webhooks.postmark import PostmarkInboundWebhookView
from anymail.webhooks.sendgrid import SendGridInboundWebhookView
from django.urls import path

from tests.receivers import record

urlpatterns = [
    path("anymail/postmark/inbound/", PostmarkInboundWebhookView.as_view()),
    path("anymail/mailgun/inbound/", MailgunInboundWebhookView.as_view()),
    path("anymail/sendgrid/inbound/", SendGridInboundWebhookView.as_view()),
    path("raw/", record.raw_view),
    path("received/", record.received_view),
]
