"""A webhook's payload_format through the API: what it takes, what it refuses, what it sends."""

from __future__ import annotations

import base64
import email
import email.policy
import hashlib
import hmac
import json
from email.message import EmailMessage

import pytest
from django.test import Client
from standardwebhooks.webhooks import Webhook as StandardWebhook

from accounts.models import AuditLogEntry
from tests.delivery_fixtures import SECRET, accept, make_webhook
from tests.factories import AccountFactory
from tests.webhooks.test_messages_api import store
from tests.webhooks.test_retention import _admin_form
from webhooks import delivery, formats, signing
from webhooks.formats import Source
from webhooks.models import Delivery, DeliveryLog, Webhook
from webhooks.payload import AuthResults, Envelope

pytestmark = pytest.mark.django_db

KNOWN = "conduit, raw, multipart, postmark, mailgun, sendgrid"


@pytest.fixture
def body(alice_domain, delivery_settings):
    return {"address": "inbox@alice.example", "target_url": "https://hooks.example.com/in"}


def create(client, body, **extra):
    return client.post("/api/v1/webhooks", {**body, **extra}, format="json")


def update(client, webhook_id, **fields):
    return client.put(f"/api/v1/webhooks/{webhook_id}", fields, format="json")


def assert_error(response, status: int, code: str, field: str) -> dict:
    assert response.status_code == status, response.content
    answer = response.json()
    assert answer["code"] == code, answer
    assert field in answer["details"], answer
    return answer


# --- The field --------------------------------------------------------------------


def test_it_defaults_to_the_conduit_format(alice_api, body):
    created = create(alice_api, body).json()
    assert created["payload_format"] == "conduit"
    assert created["mailgun_signing_key"] is None


@pytest.mark.parametrize("payload_format", ["raw", "multipart", "postmark", "sendgrid"])
def test_it_takes_each_format(alice_api, body, payload_format):
    created = create(alice_api, body, payload_format=payload_format).json()
    assert created["payload_format"] == payload_format
    assert Webhook.objects.get().payload_format == payload_format


def test_it_generates_a_mailgun_signing_key_and_shows_it_once(alice_api, alice, body):
    created = create(alice_api, body, payload_format="mailgun").json()
    key = created["mailgun_signing_key"]
    assert len(key) == 64 and int(key, 16) >= 0
    assert Webhook.objects.get().mailgun_signing_key == key
    shown = alice_api.get(f"/api/v1/webhooks/{created['id']}").json()["mailgun_signing_key"]
    assert shown == "****" + key[-4:]
    listed = alice_api.get("/api/v1/webhooks").json()[0]["mailgun_signing_key"]
    assert listed == shown


def test_it_keeps_a_given_mailgun_signing_key(alice_api, body):
    key = "key-3ax6xnjp29jd6fds4gc373sgvjxteol0"
    created = create(alice_api, body, payload_format="mailgun", mailgun_signing_key=key).json()
    assert created["mailgun_signing_key"] == key


def test_switching_to_mailgun_generates_the_key_and_that_update_shows_it(alice_api, alice, body):
    created = create(alice_api, body).json()
    r = update(alice_api, created["id"], payload_format="mailgun")
    assert r.status_code == 200
    key = r.json()["mailgun_signing_key"]
    assert key == Webhook.objects.get().mailgun_signing_key
    again = update(alice_api, created["id"], name="renamed").json()
    assert again["mailgun_signing_key"] == "****" + key[-4:]
    changed = [
        e.metadata["changed"] for e in AuditLogEntry.objects.filter(action="webhook.updated")
    ]
    assert {"payload_format", "mailgun_signing_key"} <= set().union(*changed)


def test_a_short_mailgun_signing_key_is_refused(alice_api, body):
    r = create(alice_api, body, payload_format="mailgun", mailgun_signing_key="short")
    assert_error(r, 422, "validation_error", "mailgun_signing_key")


# --- Bad input ----------------------------------------------------------------------


def test_an_unknown_format_is_refused_listing_the_known_ones(alice_api, body):
    r = create(alice_api, body, payload_format="mandrill")
    answer = assert_error(r, 422, "unknown_payload_format", "payload_format")
    assert answer["error"] == f"'mandrill' is not a payload format; use one of: {KNOWN}."
    assert not Webhook.objects.exists()


def test_an_unknown_format_is_refused_on_update(alice_api, body):
    created = create(alice_api, body).json()
    r = update(alice_api, created["id"], payload_format="Postmark")
    assert_error(r, 422, "unknown_payload_format", "payload_format")
    assert Webhook.objects.get().payload_format == "conduit"


def test_a_template_with_another_format_is_refused(alice_api, body):
    r = create(alice_api, body, payload_format="postmark", payload_template='{"s": 1}')
    answer = assert_error(r, 422, "template_needs_conduit_format", "payload_template")
    assert "does not combine with 'postmark'" in answer["error"]
    assert 'payload_template: ""' in answer["error"]
    assert not Webhook.objects.exists()


def test_choosing_another_format_for_a_templated_webhook_is_refused(alice_api, body):
    created = create(alice_api, body, payload_template='{"s": {{ subject|json }}}').json()
    r = update(alice_api, created["id"], payload_format="raw")
    assert_error(r, 422, "template_needs_conduit_format", "payload_format")
    # Both in one request is how to switch.
    r = update(alice_api, created["id"], payload_format="raw", payload_template="")
    assert r.status_code == 200 and r.json()["payload_format"] == "raw"


def test_credentials_over_plain_http_are_refused_in_production(alice_api, body, settings):
    settings.DEBUG = False
    url = "http://conduit:s3cret@hooks.example.com/in"
    r = create(alice_api, body, target_url=url)
    answer = assert_error(r, 422, "credentials_need_https", "target_url")
    assert "use an https URL" in answer["error"]
    assert "s3cret" not in json.dumps(answer)
    created = create(alice_api, body).json()
    assert_error(
        update(alice_api, created["id"], target_url=url),
        422,
        "credentials_need_https",
        "target_url",
    )


def test_credentials_over_plain_http_are_allowed_in_development(alice_api, body, settings):
    settings.DEBUG = True
    r = create(alice_api, body, target_url="http://conduit:s3cret@hooks.example.com/in")
    assert r.status_code == 201, r.content


# --- Credentials in the target URL ----------------------------------------------------


def test_credentials_are_stored_apart_and_never_shown(alice_api, alice, body):
    r = create(alice_api, body, target_url="https://conduit:p%40ss:w0rd@hooks.example.com/in")
    assert r.status_code == 201, r.content
    created = r.json()
    assert created["target_url"] == "https://conduit:****@hooks.example.com/in"
    webhook = Webhook.objects.get()
    assert webhook.target_url == "https://hooks.example.com/in"
    assert webhook.target_auth == "conduit:p@ss:w0rd"
    fetched = alice_api.get(f"/api/v1/webhooks/{created['id']}")
    assert "w0rd" not in fetched.content.decode()
    audit = AuditLogEntry.objects.filter(account=alice)
    assert "w0rd" not in json.dumps([entry.metadata for entry in audit])


def test_a_url_sent_back_as_shown_keeps_the_password(alice_api, body):
    created = create(alice_api, body, target_url="https://conduit:pw1@hooks.example.com/in").json()
    r = update(alice_api, created["id"], target_url=created["target_url"], name="x")
    assert r.status_code == 200
    assert Webhook.objects.get().target_auth == "conduit:pw1"
    update(alice_api, created["id"], target_url="https://hooks.example.com/in")
    assert Webhook.objects.get().target_auth is None


# --- Simulate, in each format, to a real local server -------------------------------


def simulate(alice_api, webhook: Webhook) -> dict:
    r = alice_api.post(
        f"/api/v1/webhooks/{webhook.id}/simulate",
        {"from": "bob@example.net", "subject": "Grüße", "text": "Hallo"},
        format="json",
    )
    assert r.status_code == 200, r.content
    return r.json()


def received(httpserver):
    (request, _response), *_ = httpserver.log
    return request


def verify_standard_webhooks(request) -> None:
    """The Standard Webhooks signature checks out, whatever the body (the library itself
    also parses the body as JSON, so it checks the JSON formats only)."""
    signing.verify(secret=SECRET, headers=dict(request.headers), body=request.get_data())
    if request.headers["Content-Type"] == "application/json":
        StandardWebhook(SECRET).verify(request.get_data(), dict(request.headers))


@pytest.mark.parametrize(
    ("payload_format", "content_type"),
    [
        ("conduit", "application/json"),
        ("raw", "message/rfc822"),
        ("multipart", "multipart/form-data"),
        ("postmark", "application/json"),
        ("mailgun", "multipart/form-data"),
        ("sendgrid", "multipart/form-data"),
    ],
)
def test_simulate_sends_the_webhooks_format_signed_and_logs_it(
    alice_api, alice, alice_domain, httpserver, delivery_settings, payload_format, content_type
):
    httpserver.expect_request("/hook").respond_with_data("ok")
    hook = make_webhook(
        alice,
        alice_domain,
        httpserver.url_for("/hook"),
        payload_format=payload_format,
        mailgun_signing_key="k" * 32,
    )
    assert simulate(alice_api, hook)["http_status"] == 200
    request = received(httpserver)
    assert request.headers["Content-Type"].startswith(content_type)
    verify_standard_webhooks(request)
    log = DeliveryLog.objects.get()
    assert log.simulated and log.payload_format == payload_format
    logs = alice_api.get(f"/api/v1/webhooks/{hook.id}/logs").json()
    assert logs[0]["payload_format"] == payload_format


def test_simulate_in_raw_sends_the_message_and_the_envelope_headers(
    alice_api, alice, alice_domain, httpserver, delivery_settings
):
    httpserver.expect_request("/hook").respond_with_data("ok")
    hook = make_webhook(alice, alice_domain, httpserver.url_for("/hook"), payload_format="raw")
    simulate(alice_api, hook)
    request = received(httpserver)
    message = email.message_from_bytes(request.get_data(), policy=email.policy.default)
    assert message["Subject"] == "Grüße"
    assert message.get_content().strip() == "Hallo"
    assert request.headers["X-Conduit-Mail-From"] == "bob@example.net"
    assert request.headers["X-Conduit-Rcpt-To"] == "inbox@alice.example"
    assert request.headers["X-Conduit-Authentication-Results"] == "mx.conduit.email; none"
    assert request.headers["X-Conduit-Simulated"] == "true"


def test_deliveries_carry_the_urls_credentials_as_basic_auth(
    alice_api, alice, alice_domain, httpserver, delivery_settings
):
    httpserver.expect_request("/hook").respond_with_data("ok")
    hook = make_webhook(alice, alice_domain, httpserver.url_for("/hook"), payload_format="postmark")
    hook.target_auth = "conduit:s3cret"
    hook.save()
    accept(hook)
    delivery.deliver(delivery_id=Delivery.objects.get().id)
    request = received(httpserver)
    expected = base64.b64encode(b"conduit:s3cret").decode()
    assert request.headers["Authorization"] == f"Basic {expected}"
    verify_standard_webhooks(request)
    log = DeliveryLog.objects.get()
    assert log.http_status == 200 and log.payload_format == "postmark"
    assert "s3cret" not in json.dumps(alice_api.get(f"/api/v1/webhooks/{hook.id}/logs").json())


def test_mailgun_deliveries_are_signed_with_the_webhooks_key(
    alice, alice_domain, httpserver, delivery_settings
):
    httpserver.expect_request("/hook").respond_with_data("ok")
    key = "key-3ax6xnjp29jd6fds4gc373sgvjxteol0"
    hook = make_webhook(
        alice,
        alice_domain,
        httpserver.url_for("/hook"),
        payload_format="mailgun",
        mailgun_signing_key=key,
    )
    accept(hook)
    delivery.deliver(delivery_id=Delivery.objects.get().id)
    form = received(httpserver).form
    expected = hmac.new(
        key.encode(), (form["timestamp"] + form["token"]).encode(), hashlib.sha256
    ).hexdigest()
    assert form["signature"] == expected
    assert form["recipient"] == "inbox@alice.example"


# --- multipart, as a web framework parses it -------------------------------------------

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
PDF = b"%PDF-1.4\n" + bytes(range(255, -1, -1)) * 8


def attachment_message() -> bytes:
    message = EmailMessage(policy=email.policy.SMTP)
    message["From"] = "Zoë <zoe@example.net>"
    message["To"] = "inbox@alice.example, Bob <bob@example.com>"
    message["Subject"] = "Grüße"
    message.set_content("Hallo\n")
    message.add_alternative('<p>Hallo <img src="cid:logo@x"></p>', subtype="html")
    message.get_payload()[1].add_related(
        PNG, "image", "png", cid="<logo@x>", filename="logo.png", disposition="inline"
    )
    message.add_attachment(PDF, "application", "pdf", filename="Résumé.pdf")
    return message.as_bytes()


def test_multipart_is_form_fields_and_file_parts(
    alice, alice_domain, httpserver, delivery_settings
):
    httpserver.expect_request("/hook").respond_with_data("ok")
    hook = make_webhook(
        alice, alice_domain, httpserver.url_for("/hook"), payload_format="multipart"
    )
    accept(hook, raw=attachment_message())
    delivery.deliver(delivery_id=Delivery.objects.get().id)
    request = received(httpserver)  # parsed by werkzeug, as Flask would
    verify_standard_webhooks(request)
    form, files = request.form, request.files
    assert form["subject"] == "Grüße"
    assert form["text"] == "Hallo\n"
    assert json.loads(form["from"]) == {"address": "zoe@example.net", "name": "Zoë"}
    assert [a["address"] for a in json.loads(form["to"])] == [
        "inbox@alice.example",
        "bob@example.com",
    ]
    assert json.loads(form["envelope"])["rcpt_to"] == ["inbox@alice.example"]
    assert json.loads(form["authentication"])["spf"] == "pass"
    assert form["simulated"] == "false"
    assert form["attachment-count"] == "2"
    entries = json.loads(form["attachments"])
    assert [(e["field"], e["filename"], e["content_id"]) for e in entries] == [
        ("attachment-1", "logo.png", "logo@x"),
        ("attachment-2", "Résumé.pdf", None),
    ]
    assert all("content" not in e for e in entries)
    assert files["attachment-1"].filename == "logo.png"
    assert files["attachment-1"].mimetype == "image/png"
    assert files["attachment-1"].read() == PNG
    assert files["attachment-2"].filename == "Résumé.pdf"
    assert files["attachment-2"].read() == PDF


# --- The verdicts, as raw's header writes them -------------------------------------------


def test_authentication_results_name_every_check_made():
    source = Source(
        raw=b"Subject: x\r\n\r\nx\r\n",
        envelope=Envelope(
            mail_from="bob@example.net", rcpt_to=["a@b.example"], client_ip=None, helo="mx"
        ),
        auth=AuthResults(
            spf="pass",
            dkim=["example.net", "esp.example"],
            smtp_auth_user="bob",
            dmarc={"result": "pass", "domain": "example.net", "policy": "reject"},
            arc="none",
        ),
    )
    assert formats.authentication_results(source, authserv_id="mx.test") == (
        "mx.test; spf=pass smtp.mailfrom=bob@example.net; dkim=pass header.d=example.net; "
        "dkim=pass header.d=esp.example; dmarc=pass (p=reject) header.from=example.net; "
        "arc=none; auth=pass smtp.auth=bob"
    )


def test_raw_sends_a_non_latin1_address_as_utf8():
    source = Source(
        raw=b"Subject: x\r\n\r\nx\r\n",
        envelope=Envelope(
            mail_from="δοκιμή@example.gr", rcpt_to=["a@b"], client_ip=None, helo=None
        ),
        auth=AuthResults(),
    )
    rendered = formats.raw(source, formats.Options())
    assert rendered.body == b"Subject: x\r\n\r\nx\r\n"
    assert rendered.headers["X-Conduit-Mail-From"] == "δοκιμή@example.gr".encode()


# --- The admin -------------------------------------------------------------------------


def test_an_operator_chooses_a_format_in_the_admin_and_sees_no_secret(webhook):
    webhook.target_auth = "conduit:s3cret"
    webhook.save()
    operator = AccountFactory(email="ops@conduit.email", is_staff=True, is_superuser=True)
    client = Client()
    client.force_login(operator)
    url = f"/admin/webhooks/webhook/{webhook.id}/change/"
    page = client.get(url).content.decode()
    assert "s3cret" not in page and SECRET not in page
    data = _admin_form(client, webhook)

    data["payload_format"] = "mailgun"
    assert client.post(url, data).status_code == 302
    webhook.refresh_from_db()
    assert webhook.payload_format == "mailgun"
    assert len(webhook.mailgun_signing_key) == 64
    assert webhook.mailgun_signing_key not in client.get(url).content.decode()

    data.update(payload_format="raw", payload_template='{"s": 1}')
    r = client.post(url, data)
    assert "conduit format only" in str(r.context["adminform"].form.errors["payload_template"])
    data.update(payload_template="", target_url="https://u:p@hooks.example.com/in")
    r = client.post(url, data)
    assert "Leave credentials out" in str(r.context["adminform"].form.errors["target_url"])
    webhook.refresh_from_db()
    assert webhook.payload_format == "mailgun"


def test_a_mailgun_webhook_without_a_key_logs_what_to_set(
    alice_api, alice, alice_domain, httpserver, delivery_settings
):
    hook = make_webhook(alice, alice_domain, httpserver.url_for("/hook"), payload_format="mailgun")
    result = simulate(alice_api, hook)
    assert result["http_status"] is None
    assert "set one (updateWebhook)" in result["error"]
    assert not httpserver.log


# --- The message page shows what each format received ------------------------------


def test_the_message_page_shows_each_formats_body(
    alice, alice_api, alice_domain, httpserver, delivery_settings
):
    hooks = [
        make_webhook(
            alice,
            alice_domain,
            httpserver.url_for(f"/{name}"),
            address=f"{name}@alice.example",
            payload_format=name,
        )
        for name in ("raw", "postmark", "sendgrid")
    ]
    for hook in hooks:
        httpserver.expect_request(f"/{hook.payload_format}").respond_with_data("ok")
    stored = store(*hooks)
    for delivery_id in stored.delivery_ids:
        delivery.deliver(delivery_id=delivery_id)
    sent = {request.path: request.get_data() for request, _ in httpserver.log}

    page = alice_api.get(f"/api/v1/messages/{stored.message_id}").json()
    shown = {d["webhook_id"]: d for d in page["deliveries"]}
    raw, postmark, sendgrid = (shown[str(hook.id)] for hook in hooks)
    assert raw["body"] == sent["/raw"].decode() and raw["content_type"] == "message/rfc822"
    assert json.loads(postmark["body"]) == json.loads(sent["/postmark"])
    assert sendgrid["body"] is None and sendgrid["content_type"] == "multipart/form-data"
    assert sendgrid["payload"]["subject"] == "Hello there"
