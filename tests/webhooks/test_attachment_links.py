"""Large attachments delivered as signed, expiring links instead of base64."""

from __future__ import annotations

import base64
import json
import os
from datetime import timedelta
from email.message import EmailMessage
from urllib.parse import urlsplit

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from tests.delivery_fixtures import accept
from webhooks import attachments, delivery
from webhooks.models import Delivery, InboundMessage
from webhooks.payload import AttachmentLinks, AuthResults, Envelope, build_payload
from webhooks.tasks import purge_raw_messages

pytestmark = pytest.mark.django_db

SMALL = b"%PDF-1.4 a small file"


def message_with(*files: tuple[str, str, bytes]) -> bytes:
    message = EmailMessage()
    message["From"] = "Sender <sender@example.net>"
    message["To"] = "inbox@alice.example"
    message["Subject"] = "Files"
    message["Message-ID"] = "<files@example.net>"
    message.set_content("See attached.")
    for filename, content_type, data in files:
        maintype, subtype = content_type.split("/")
        message.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return message.as_bytes(policy=message.policy.clone(linesep="\r\n"))


def build(raw: bytes, links: AttachmentLinks | None) -> dict:
    envelope = Envelope(
        mail_from="s@example.net", rcpt_to=["r@example.org"], client_ip=None, helo=None
    )
    return build_payload(raw, envelope=envelope, auth=AuthResults(), links=links)


def path_of(url: str) -> str:
    return urlsplit(url).path


@pytest.fixture
def big() -> bytes:
    # A 20 MB message: its attachment's base64 alone is that size.
    return os.urandom(15 * 1024 * 1024)


@pytest.fixture
def linking(webhook, settings):
    settings.CONDUIT_PUBLIC_URL = "https://conduit.example"
    webhook.attachment_link_threshold = 1024 * 1024
    webhook.save()
    return webhook


def delivered_payload(httpserver) -> dict:
    request, _ = httpserver.log[-1]
    return json.loads(request.get_data())


# --- The payload -------------------------------------------------------------------


def test_attachments_over_the_threshold_become_links_and_the_rest_stay_inline():
    raw = message_with(
        ("small.pdf", "application/pdf", SMALL), ("big.bin", "application/zip", b"z" * 5000)
    )
    links = AttachmentLinks(
        over=1000, link=lambda i: (f"https://x.example/{i}", "2026-01-01T00:00:00Z")
    )

    small, large = build(raw, links)["attachments"]

    assert base64.b64decode(small["content"]) == SMALL
    assert (small["content_url"], small["content_url_expires_at"]) == (None, None)
    assert large["content"] is None
    assert large["size"] == 5000
    assert large["filename"] == "big.bin"
    assert (large["content_url"], large["content_url_expires_at"]) == (
        "https://x.example/1",
        "2026-01-01T00:00:00Z",
    )


def test_without_links_every_attachment_is_inline_with_null_links():
    raw = message_with(("big.bin", "application/zip", b"z" * 5000))
    [attachment] = build(raw, None)["attachments"]
    assert base64.b64decode(attachment["content"]) == b"z" * 5000
    assert attachment["content_url"] is None
    assert attachment["content_url_expires_at"] is None


# --- Through a delivery and the link ----------------------------------------------


def test_a_20_mb_message_is_a_small_payload_and_the_link_serves_the_exact_bytes(
    linking, httpserver, big
):
    httpserver.expect_request("/hook").respond_with_data("ok")
    raw = message_with(
        ("small.pdf", "application/pdf", SMALL), ("archive.zip", "application/zip", big)
    )
    assert len(raw) > 20 * 1024 * 1024
    accept(linking, raw=raw)

    delivery.deliver(delivery_id=Delivery.objects.get().id)

    request, _ = httpserver.log[0]
    assert len(request.get_data()) < 64 * 1024
    small, large = delivered_payload(httpserver)["attachments"]
    assert base64.b64decode(small["content"]) == SMALL
    assert large["content"] is None
    assert large["size"] == len(big)
    assert large["content_url"].startswith("https://conduit.example/api/v1/attachments/")
    expires = timezone.datetime.fromisoformat(large["content_url_expires_at"])
    assert timedelta(hours=23) < expires - timezone.now() <= timedelta(hours=24)

    response = APIClient().get(path_of(large["content_url"]), HTTP_ACCEPT="application/zip")

    assert response.status_code == 200
    assert response.content == big
    assert response["Content-Type"] == "application/octet-stream"
    assert response["Content-Disposition"] == 'attachment; filename="archive.zip"'
    assert response["X-Content-Type-Options"] == "nosniff"


def _link(webhook, httpserver) -> str:
    httpserver.expect_request("/hook").respond_with_data("ok")
    accept(webhook, raw=message_with(("big.bin", "application/octet-stream", b"b" * 2_000_000)))
    delivery.deliver(delivery_id=Delivery.objects.get().id)
    [attachment] = delivered_payload(httpserver)["attachments"]
    return path_of(attachment["content_url"])


def _error(response) -> tuple[int, str]:
    return response.status_code, response.json()["code"]


def test_a_tampered_link_is_403(linking, httpserver):
    path = _link(linking, httpserver)
    token = path.rsplit("/", 1)[1]
    forged = token[:-3] + ("AAA" if not token.endswith("AAA") else "BBB")
    assert _error(APIClient().get(path.replace(token, forged))) == (403, "attachment_link_invalid")
    assert _error(APIClient().get("/api/v1/attachments/not-a-token")) == (
        403,
        "attachment_link_invalid",
    )
    assert APIClient().get(path).status_code == 200


def test_an_expired_link_is_410(linking, httpserver):
    _link(linking, httpserver)
    message = InboundMessage.objects.get()
    url, _ = attachments.link_for(
        message_id=message.id, index=0, now=timezone.now() - timedelta(days=2)
    )
    response = APIClient().get(path_of(url))
    assert _error(response) == (410, "attachment_link_expired")
    assert "Redeliver" in response.json()["error"]


def test_a_link_after_the_purge_is_410(linking, httpserver):
    path = _link(linking, httpserver)
    InboundMessage.objects.update(received_at=timezone.now() - timedelta(days=8))
    assert purge_raw_messages() == 1
    response = APIClient().get(path)
    assert _error(response) == (410, "message_purged")
    assert "purged at" in response.json()["error"]


def test_a_link_to_a_deleted_message_is_410(linking, httpserver):
    path = _link(linking, httpserver)
    InboundMessage.objects.all().delete()
    assert _error(APIClient().get(path)) == (410, "message_deleted")


def test_a_link_to_no_attachment_is_404(linking, httpserver):
    _link(linking, httpserver)
    message = InboundMessage.objects.get()
    url, _ = attachments.link_for(message_id=message.id, index=5, now=timezone.now())
    assert _error(APIClient().get(path_of(url))) == (404, "not_found")


def test_a_webhook_without_a_threshold_gets_base64_as_before(webhook, httpserver):
    httpserver.expect_request("/hook").respond_with_data("ok")
    accept(webhook, raw=message_with(("big.bin", "application/octet-stream", b"b" * 2_000_000)))
    delivery.deliver(delivery_id=Delivery.objects.get().id)
    [attachment] = delivered_payload(httpserver)["attachments"]
    assert base64.b64decode(attachment["content"]) == b"b" * 2_000_000
    assert attachment["content_url"] is None


def test_the_link_serves_a_message_kept_in_s3(raw_in_s3, linking, httpserver):
    path = _link(linking, httpserver)
    message = InboundMessage.objects.get()
    assert message.raw_store == raw_in_s3.location
    assert raw_in_s3.keys() == [raw_in_s3.key(message.id)]
    response = APIClient().get(path)
    assert response.status_code == 200
    assert response.content == b"b" * 2_000_000
