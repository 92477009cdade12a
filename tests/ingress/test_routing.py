"""RCPT TO resolution, recipient limits, sizes and 8-bit mail: SMTP in, webhook out."""

from __future__ import annotations

import smtplib
import time

import pytest

from conduit.celery import app as celery_app
from policies.models import SmtpSecurityPolicy
from tests.ingress.conftest import hook, make_policy
from tests.webhooks.test_delivery import wait_for
from webhooks import services
from webhooks.models import Delivery, InboundMessage

pytestmark = pytest.mark.django_db(transaction=True)

MESSAGE = (
    b"From: Sender <sender@sender.example>\r\n"
    b"To: team@alice.example\r\n"
    b"Subject: Routing\r\n"
    b"Message-ID: <routing@sender.example>\r\n"
    b"\r\n"
    b"Hello.\r\n"
)


def delivered_payloads(httpserver, count: int) -> dict[str, dict]:
    """Wait for `count` delivered deliveries; the payloads by request path."""
    wait_for(
        lambda: (
            Delivery.objects.filter(status=Delivery.Status.DELIVERED).count() == count
            and len(httpserver.log) == count
        )
    )
    return {request.path: request.get_json() for request, _response in httpserver.log}


def test_it_advertises_size_8bitmime_smtputf8_and_auth(ingress, settings):
    with ingress.smtp() as smtp:
        code, _ = smtp.ehlo()

        assert code == 250
        assert smtp.esmtp_features["size"] == str(settings.CONDUIT_MAX_MESSAGE_BYTES)
        assert "8bitmime" in smtp.esmtp_features
        assert "smtputf8" in smtp.esmtp_features
        # No certificate configured: no STARTTLS; insecure AUTH allowed by the fixture.
        assert "starttls" not in smtp.esmtp_features
        assert smtp.esmtp_features["auth"].split() == ["LOGIN", "PLAIN"]


def test_it_delivers_to_two_webhooks_as_one_message(
    ingress, alice, alice_domain, httpserver, delivery_settings, celery_worker
):
    hook(alice, alice_domain, httpserver.url_for("/team"), "team@alice.example")
    hook(alice, alice_domain, httpserver.url_for("/sales"), "sales@alice.example")
    httpserver.expect_request("/team").respond_with_data("ok")
    httpserver.expect_request("/sales").respond_with_data("ok")

    with ingress.smtp() as smtp:
        refused = smtp.sendmail(
            "sender@sender.example",
            ["team@alice.example", "sales@alice.example", "team+urgent@alice.example"],
            MESSAGE,
        )

    assert refused == {}
    message = InboundMessage.objects.get()
    assert sorted(message.rcpt_to) == [
        "sales@alice.example",
        "team+urgent@alice.example",
        "team@alice.example",
    ]
    assert Delivery.objects.filter(message=message).count() == 2
    payloads = delivered_payloads(httpserver, 2)
    assert payloads["/team"]["envelope"]["rcpt_to"] == [
        "team@alice.example",
        "team+urgent@alice.example",
    ]
    assert payloads["/sales"]["envelope"]["rcpt_to"] == ["sales@alice.example"]
    assert payloads["/team"]["subject"] == payloads["/sales"]["subject"] == "Routing"


def test_it_routes_a_tag_to_its_base_address_and_the_rest_to_the_catch_all(
    ingress, alice, alice_domain, httpserver, delivery_settings, celery_worker
):
    hook(alice, alice_domain, httpserver.url_for("/team"), "team@alice.example")
    hook(alice, alice_domain, httpserver.url_for("/any"), "*@alice.example")
    httpserver.expect_request("/team").respond_with_data("ok")
    httpserver.expect_request("/any").respond_with_data("ok")

    with ingress.smtp() as smtp:
        smtp.sendmail("sender@sender.example", ["team+news@alice.example"], MESSAGE)
        smtp.sendmail("sender@sender.example", ["someone.else@alice.example"], MESSAGE)

    payloads = delivered_payloads(httpserver, 2)
    assert payloads["/team"]["envelope"]["rcpt_to"] == ["team+news@alice.example"]
    assert payloads["/any"]["envelope"]["rcpt_to"] == ["someone.else@alice.example"]


def test_it_refuses_a_recipient_whose_webhook_is_inactive(ingress, alice, alice_domain):
    hook(alice, alice_domain, "http://127.0.0.1:9/", "team@alice.example", active=False)

    with ingress.smtp() as smtp:
        smtp.ehlo()
        smtp.mail("sender@sender.example")
        code, text = smtp.rcpt("team@alice.example")

    assert code == 550
    assert text.startswith(b"5.1.1 <team@alice.example>")
    assert not InboundMessage.objects.exists()


def test_it_refuses_a_recipient_on_a_domain_it_does_not_serve(ingress, alice, alice_domain):
    hook(alice, alice_domain, "http://127.0.0.1:9/", "*@alice.example")

    with ingress.smtp() as smtp:
        smtp.ehlo()
        smtp.mail("sender@sender.example")
        code, text = smtp.rcpt("team@elsewhere.example")

    assert (code, text[:5]) == (550, b"5.1.1")


def test_it_refuses_a_client_address_outside_the_policy(ingress, alice, alice_domain):
    policy = make_policy(alice, allowed_source_ips="192.0.2.0/24")
    hook(
        alice,
        alice_domain,
        "http://127.0.0.1:9/",
        "team@alice.example",
        smtp_security_policy=policy,
    )

    with ingress.smtp() as smtp:
        smtp.ehlo()
        smtp.mail("sender@sender.example")
        code, text = smtp.rcpt("team@alice.example")

    assert code == 550
    assert text.startswith(b"5.7.1 <team@alice.example>: client address 127.0.0.1 is not allowed")


def test_it_accepts_a_client_address_inside_the_policy(ingress, alice, alice_domain):
    policy = make_policy(alice, allowed_source_ips="192.0.2.0/24, 127.0.0.0/8")
    hook(
        alice,
        alice_domain,
        "http://127.0.0.1:9/",
        "team@alice.example",
        smtp_security_policy=policy,
    )

    with ingress.smtp() as smtp:
        smtp.ehlo()
        smtp.mail("sender@sender.example")
        code, _ = smtp.rcpt("team@alice.example")

    assert code == 250


def test_it_refuses_the_101st_recipient(ingress, alice, alice_domain):
    hook(alice, alice_domain, "http://127.0.0.1:9/", "*@alice.example")

    with ingress.smtp() as smtp:
        smtp.ehlo()
        smtp.mail("sender@sender.example")
        codes = [smtp.rcpt(f"user{i}@alice.example")[0] for i in range(100)]
        code, text = smtp.rcpt("user100@alice.example")
        data_code, data_text = smtp.data(MESSAGE)

    assert codes == [250] * 100
    assert code == 452
    assert text.startswith(b"4.5.3 Too many recipients")
    # The first hundred still get the message.
    assert data_code == 250
    assert data_text.startswith(b"2.0.0 Ok: queued as ")
    assert len(InboundMessage.objects.get().rcpt_to) == 100


def test_it_refuses_an_oversize_message(start_ingress, settings, alice, alice_domain):
    settings.CONDUIT_MAX_MESSAGE_BYTES = 2048
    ingress = start_ingress()
    hook(alice, alice_domain, "http://127.0.0.1:9/", "team@alice.example")
    big = MESSAGE + (b"x" * 70 + b"\r\n") * 40

    with ingress.smtp() as smtp:
        smtp.ehlo()
        assert smtp.esmtp_features["size"] == "2048"
        # A sender that declares the size is refused at MAIL FROM ...
        with pytest.raises(smtplib.SMTPSenderRefused) as declared:
            smtp.sendmail("sender@sender.example", ["team@alice.example"], big)
        smtp.rset()
        # ... and one that does not, after DATA.
        smtp.mail("sender@sender.example")
        smtp.rcpt("team@alice.example")
        code, text = smtp.data(big)

    assert declared.value.smtp_code == 552
    assert declared.value.smtp_error.startswith(b"5.3.4 Message too big")
    assert code == 552
    assert text.startswith(b"5.3.4 Message too big for this system (at most 2048 bytes)")
    assert not InboundMessage.objects.exists()


def test_it_keeps_8bit_utf8_mail_intact(
    ingress, alice, alice_domain, httpserver, delivery_settings, celery_worker
):
    hook(alice, alice_domain, httpserver.url_for("/team"), "team@alice.example")
    httpserver.expect_request("/team").respond_with_data("ok")
    subject = "Grüße aus Köln 📬"
    body = "Schöne Grüße,\nJürgen — ¡olé! 日本語\n"
    raw = (
        "From: Jürgen <jürgen@sender.example>\r\n"
        "To: team@alice.example\r\n"
        f"Subject: {subject}\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n"
        "\r\n" + body.replace("\n", "\r\n")
    ).encode("utf-8")

    with ingress.smtp() as smtp:
        smtp.ehlo()
        refused = smtp.sendmail(
            "jürgen@sender.example",
            ["team@alice.example"],
            raw,
            mail_options=["SMTPUTF8", "BODY=8BITMIME"],
        )

    assert refused == {}
    assert bytes(InboundMessage.objects.get().raw) == raw
    payload = delivered_payloads(httpserver, 1)["/team"]
    assert payload["subject"] == subject
    assert payload["text"] == body
    assert payload["from"] == {"address": "jürgen@sender.example", "name": "Jürgen"}
    assert payload["envelope"]["mail_from"] == "jürgen@sender.example"


def test_it_accepts_a_bounce_with_a_null_sender(ingress, alice, alice_domain):
    hook(alice, alice_domain, "http://127.0.0.1:9/", "team@alice.example")

    with ingress.smtp() as smtp:
        refused = smtp.sendmail("<>", ["team@alice.example"], MESSAGE)

    assert refused == {}
    assert InboundMessage.objects.get().mail_from == ""


def test_it_refuses_addresses_too_long_to_store_and_keeps_a_long_helo(ingress, alice, alice_domain):
    hook(alice, alice_domain, "http://127.0.0.1:9/", "*@alice.example")
    long_local = "x" * 320

    with ingress.smtp() as smtp:
        smtp.ehlo("h" * 300 + ".example")
        mail_code, mail_text = smtp.mail(f"{long_local}@sender.example")
        smtp.mail("sender@sender.example")
        rcpt_code, rcpt_text = smtp.rcpt(f"{long_local}@alice.example")
        smtp.rcpt("team@alice.example")
        data_code, _ = smtp.data(MESSAGE)

    assert (mail_code, mail_text[:5]) == (553, b"5.1.7")
    assert (rcpt_code, rcpt_text[:5]) == (553, b"5.1.3")
    assert data_code == 250
    assert InboundMessage.objects.get().helo == ("h" * 300)[:255]


def test_it_answers_451_when_something_unexpected_breaks_and_the_session_goes_on(
    ingress, alice, alice_domain, mailauth_settings
):
    # A list that no longer parses (written before validation, or by hand): a
    # local problem, so the sender is asked to retry, not told the mail is bad.
    policy = SmtpSecurityPolicy.objects.create(
        account=alice, name="Broken", require_spf=True, allowed_spf_domains="not a domain!"
    )
    hook(alice, alice_domain, "http://127.0.0.1:9/", "team@alice.example")
    hook(
        alice,
        alice_domain,
        "http://127.0.0.1:9/",
        "guarded@alice.example",
        smtp_security_policy=policy,
    )

    with ingress.smtp() as smtp:
        smtp.ehlo()
        smtp.mail("sender@sender.example")
        smtp.rcpt("guarded@alice.example")
        code, text = smtp.data(MESSAGE)
        next_message = smtp.sendmail("sender@sender.example", ["team@alice.example"], MESSAGE)

    assert (code, text) == (451, b"4.3.0 Local error in processing; please try again later")
    assert next_message == {}
    assert InboundMessage.objects.get().rcpt_to == ["team@alice.example"]


def test_a_paused_webhook_accepts_mail_and_sends_it_in_order_once_resumed(
    ingress, alice, alice_domain, httpserver, delivery_settings, celery_worker
):
    webhook = hook(alice, alice_domain, httpserver.url_for("/team"), "team@alice.example")
    httpserver.expect_request("/team").respond_with_data("ok")
    services.webhook_pause(webhook=webhook, ip=None)

    with ingress.smtp() as smtp:
        for i in range(3):
            message = MESSAGE.replace(b"Subject: Routing", f"Subject: Paused {i}".encode())
            assert smtp.sendmail("sender@sender.example", ["team@alice.example"], message) == {}

    # Stored, their tasks run and skipped them: nothing sent while paused.
    assert InboundMessage.objects.count() == 3
    wait_for(lambda: queue_length() == 0)
    time.sleep(0.3)  # the last task taken off the queue finishes
    assert httpserver.log == []
    assert set(Delivery.objects.values_list("status", flat=True)) == {Delivery.Status.PENDING}

    services.webhook_resume(webhook=webhook, ip=None)
    wait_for(lambda: len(httpserver.log) == 3)
    subjects = [request.get_json()["subject"] for request, _ in httpserver.log]
    assert subjects == ["Paused 0", "Paused 1", "Paused 2"]


def queue_length() -> int:
    with celery_app.connection_for_read() as connection:
        return connection.default_channel.client.llen("celery")
