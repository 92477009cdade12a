"""Each payload format delivered by Conduit to the receivers people use: django-anymail's
own inbound views for Postmark, Mailgun and SendGrid (their basic auth and Mailgun's
signature checked by anymail, not switched off), and the standard library for `raw`.

The receiving app runs in its own process (tests/receivers/server.py); what its `inbound`
signal handler got comes back as JSON (tests/receivers/record.py).
"""

from __future__ import annotations

import base64
import email.policy
import os
from email.headerregistry import Address
from email.message import EmailMessage

import pytest

from tests.delivery_fixtures import accept
from tests.receivers.conftest import MAILGUN_SIGNING_KEY
from webhooks import delivery
from webhooks.models import Delivery, DeliveryLog, Webhook

PDF = b"%PDF-1.4\n" + os.urandom(3000) + b"\n%%EOF\n"
PNG = b"\x89PNG\r\n\x1a\n" + os.urandom(500)
PDF_NAME = "Résumé \N{EN DASH} Zoë.pdf"
SUBJECT = "Rechnung für März \N{EN DASH} 請求書"
TEXT = "Hallo Ålice,\nsiehe Anhang.\n\nGrüße\n"


def message() -> bytes:
    """A message as a mail client writes one: text and HTML, an inline image the HTML
    shows, an attachment with a non-ASCII name, non-ASCII names, several recipients."""
    m = EmailMessage(policy=email.policy.SMTP)
    m["From"] = Address("Zoë Ünal", addr_spec="zoe@example.net")
    m["To"] = [
        Address("Ålice Ørsted", addr_spec="inbox@alice.example"),
        Address("", addr_spec="bob@example.com"),
    ]
    m["Cc"] = Address("Charlie Brown", addr_spec="charlie@example.org")
    m["Subject"] = SUBJECT
    m["Date"] = "Thu, 02 Apr 2026 12:00:00 +0000"
    m["Message-ID"] = "<formats-1@example.net>"
    m.set_content(TEXT)
    m.add_alternative('<p>Hallo Ålice <img src="cid:logo@example.net"></p>\n', subtype="html")
    html = m.get_payload()[1]
    html.add_related(
        PNG,
        maintype="image",
        subtype="png",
        cid="<logo@example.net>",
        filename="logo.png",
        disposition="inline",
    )
    m.add_attachment(PDF, maintype="application", subtype="pdf", filename=PDF_NAME)
    return m.as_bytes()


RAW = message()


@pytest.fixture
def hooks_api(alice_api, alice_domain, delivery_settings, settings):
    # Development: basic-auth credentials may go to a plain-http (loopback) target.
    settings.DEBUG = True
    return alice_api


def create_webhook(api, **fields) -> Webhook:
    r = api.post("/api/v1/webhooks", {"address": "inbox@alice.example", **fields}, format="json")
    assert r.status_code == 201, r.content
    assert "s3cret" not in r.content.decode()
    return Webhook.objects.get(id=r.json()["id"])


def deliver(webhook: Webhook, raw: bytes = RAW) -> DeliveryLog:
    accept(webhook, raw=raw)
    (pending,) = Delivery.objects.filter(webhook=webhook)
    delivery.deliver(delivery_id=pending.id)
    log = DeliveryLog.objects.get(delivery=pending)
    assert log.http_status == 200, (log.error, log.response_body)
    assert log.payload_format == webhook.payload_format
    return log


def decoded(part: dict) -> bytes:
    return base64.b64decode(part["content"])


def assert_the_message(got: dict) -> None:
    """What every format must give an anymail receiver of RAW."""
    assert got["from"] == {"name": "Zoë Ünal", "address": "zoe@example.net"}
    assert got["to"] == [
        {"name": "Ålice Ørsted", "address": "inbox@alice.example"},
        {"name": "", "address": "bob@example.com"},
    ]
    assert got["cc"] == [{"name": "Charlie Brown", "address": "charlie@example.org"}]
    assert got["subject"] == SUBJECT
    assert got["text"].replace("\r\n", "\n") == TEXT
    assert got["html"].strip() == '<p>Hallo Ålice <img src="cid:logo@example.net"></p>'
    (attachment,) = got["attachments"]
    assert attachment["filename"] == PDF_NAME
    assert attachment["content_type"] == "application/pdf"
    assert decoded(attachment) == PDF
    assert list(got["inlines"]) == ["logo@example.net"]
    inline = got["inlines"]["logo@example.net"]
    assert inline["filename"] == "logo.png"
    assert inline["content_type"] == "image/png"
    assert decoded(inline) == PNG
    assert got["envelope_sender"] == "sender@example.net"
    assert got["envelope_recipient"] == "inbox@alice.example"


def header(got: dict, name: str) -> list[str]:
    return [value for key, value in got["headers"] if key.lower() == name.lower()]


@pytest.mark.django_db
def test_postmark_format_is_what_anymails_postmark_view_reads(hooks_api, receiver):
    webhook = create_webhook(
        hooks_api,
        target_url=receiver.url("/anymail/postmark/inbound/"),
        payload_format="postmark",
    )
    log = deliver(webhook)
    got = receiver.last()
    assert got["esp_name"] == "Postmark"
    assert_the_message(got)
    assert got["date"] == "2026-04-02T12:00:00+00:00"
    assert got["stripped_text"].startswith("Hallo Ålice,")
    assert got["spam_detected"] is False
    assert header(got, "Message-ID") == ["<formats-1@example.net>"]
    assert header(got, "Received-SPF")[0].startswith("Pass identity=mailfrom; client-ip=192.0.2.10")
    assert header(got, "Authentication-Results") == [
        "mx.conduit.email; spf=pass smtp.mailfrom=sender@example.net; "
        "dkim=pass header.d=example.net"
    ]
    # Postmark's MessageID: the delivery's, the same on every retry.
    assert got["event_id"] and got["event_id"] == got["fields"]["MessageID"]
    assert log.error == ""


@pytest.mark.django_db
def test_mailgun_format_passes_anymails_signature_check(hooks_api, receiver):
    webhook = create_webhook(
        hooks_api,
        target_url=receiver.url("/anymail/mailgun/inbound/"),
        payload_format="mailgun",
        mailgun_signing_key=MAILGUN_SIGNING_KEY,
    )
    deliver(webhook)
    got = receiver.last()
    assert got["esp_name"] == "Mailgun"
    assert_the_message(got)
    assert got["stripped_text"].startswith("Hallo Ålice,")
    assert got["spam_detected"] is False
    assert header(got, "X-Mailgun-Spf") == ["Pass"]
    assert header(got, "X-Mailgun-Dkim-Check-Result") == ["Pass"]
    assert got["event_id"] == got["fields"]["token"]
    assert got["timestamp"] is not None


@pytest.mark.django_db
def test_mailgun_format_with_another_key_is_refused_by_anymail(hooks_api, receiver):
    webhook = create_webhook(
        hooks_api,
        target_url=receiver.url("/anymail/mailgun/inbound/"),
        payload_format="mailgun",
    )
    accept(webhook, raw=RAW)
    delivery.deliver(delivery_id=Delivery.objects.get(webhook=webhook).id)
    # anymail's AnymailWebhookValidationFailure: a 400, final.
    assert DeliveryLog.objects.get().http_status == 400


@pytest.mark.django_db
def test_sendgrid_format_is_what_anymails_sendgrid_view_reads(hooks_api, receiver):
    webhook = create_webhook(
        hooks_api,
        target_url=receiver.url("/anymail/sendgrid/inbound/"),
        payload_format="sendgrid",
    )
    deliver(webhook)
    got = receiver.last()
    assert got["esp_name"] == "SendGrid"
    assert_the_message(got)
    assert got["date"] == "2026-04-02T12:00:00+00:00"
    assert got["fields"]["SPF"] == "pass"
    assert got["fields"]["dkim"] == "{@example.net : pass}"
    assert got["fields"]["sender_ip"] == "192.0.2.10"
    assert got["spam_detected"] is None


@pytest.mark.django_db
@pytest.mark.parametrize("payload_format", ["postmark", "sendgrid"])
def test_without_the_urls_credentials_anymail_refuses(hooks_api, receiver, payload_format):
    webhook = create_webhook(
        hooks_api,
        target_url=receiver.url(f"/anymail/{payload_format}/inbound/", credentials="conduit:wrong"),
        payload_format=payload_format,
    )
    accept(webhook, raw=RAW)
    delivery.deliver(delivery_id=Delivery.objects.get(webhook=webhook).id)
    assert DeliveryLog.objects.get().http_status == 400


@pytest.mark.django_db(transaction=True)
def test_raw_format_gives_the_original_bytes_from_a_real_smtp_session(hooks_api, receiver, ingress):
    webhook = create_webhook(hooks_api, target_url=receiver.url("/raw/"), payload_format="raw")
    with ingress.smtp() as smtp:
        smtp.sendmail("sender@example.net", ["inbox@alice.example"], RAW)
    (pending,) = Delivery.objects.filter(webhook=webhook)
    delivery.deliver(delivery_id=pending.id)
    assert DeliveryLog.objects.get().http_status == 200
    got = receiver.last()
    assert got["esp_name"] == "raw"
    assert got["content_type"] == "message/rfc822"
    assert base64.b64decode(got["body"]) == RAW
    assert got["subject"] == SUBJECT
    assert [(a["filename"], decoded(a)) for a in got["attachments"]] == [(PDF_NAME, PDF)]
    assert got["headers"]["X-Conduit-Mail-From"] == "sender@example.net"
    assert got["headers"]["X-Conduit-Rcpt-To"] == "inbox@alice.example"
    assert got["headers"]["X-Conduit-Helo"] == "sender.example"
    assert got["headers"]["X-Conduit-Authentication-Results"] == "mx.conduit.email; none"


@pytest.mark.django_db(transaction=True)
def test_several_envelope_recipients_reach_postmark_as_bcc_from_a_real_smtp_session(
    hooks_api, receiver, ingress
):
    webhook = create_webhook(
        hooks_api,
        address="*@alice.example",
        target_url=receiver.url("/anymail/postmark/inbound/"),
        payload_format="postmark",
    )
    with ingress.smtp() as smtp:
        smtp.sendmail("sender@example.net", ["inbox@alice.example", "hidden@alice.example"], RAW)
    (pending,) = Delivery.objects.filter(webhook=webhook)
    assert pending.rcpt_to == ["inbox@alice.example", "hidden@alice.example"]
    delivery.deliver(delivery_id=pending.id)
    assert DeliveryLog.objects.get().http_status == 200
    got = receiver.last()
    assert_the_message(got)
    assert header(got, "Bcc") == ["hidden@alice.example"]
    assert got["fields"]["OriginalRecipient"] == "inbox@alice.example"
