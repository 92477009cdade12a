"""STARTTLS and SMTP AUTH against a policy's credentials, with a real test certificate."""

from __future__ import annotations

import smtplib

import pytest

from tests.ingress.conftest import PASSWORD, USER, hook, make_policy
from tests.webhooks.test_delivery import wait_for
from webhooks.models import Delivery, InboundMessage

pytestmark = pytest.mark.django_db(transaction=True)

MESSAGE = (
    b"From: App <app@sender.example>\r\n"
    b"To: team@alice.example\r\n"
    b"Subject: Logged in\r\n"
    b"\r\n"
    b"Sent with SMTP AUTH.\r\n"
)


def test_it_offers_auth_only_after_starttls(tls_ingress, tls_client_context):
    with tls_ingress.smtp() as smtp:
        smtp.ehlo()
        before = dict(smtp.esmtp_features)
        code, text = smtp.docmd("AUTH", "PLAIN AG1haWxlcgBjb3JyZWN0IGhvcnNlIGJhdHRlcnk=")
        smtp.starttls(context=tls_client_context)
        smtp.ehlo()
        after = dict(smtp.esmtp_features)

    assert "starttls" in before
    assert "auth" not in before
    assert (code, text) == (
        538,
        b"5.7.11 Encryption required for requested authentication mechanism",
    )
    assert "starttls" not in after
    assert after["auth"].split() == ["LOGIN", "PLAIN"]
    assert {"size", "8bitmime", "smtputf8"} <= set(after)


def test_it_requires_auth_for_a_protected_address(
    tls_ingress, tls_client_context, protected_webhook
):
    with tls_ingress.smtp() as smtp:
        smtp.starttls(context=tls_client_context)
        smtp.ehlo()
        smtp.mail("app@sender.example")
        code, text = smtp.rcpt("team@alice.example")

    assert code == 530
    assert text.startswith(b"5.7.0 <team@alice.example>: authentication required")


def test_it_refuses_wrong_credentials(tls_ingress, tls_client_context, protected_webhook):
    with tls_ingress.smtp() as smtp:
        smtp.starttls(context=tls_client_context)
        smtp.ehlo()
        with pytest.raises(smtplib.SMTPAuthenticationError) as wrong_password:
            smtp.login(USER, "not the password")
        with pytest.raises(smtplib.SMTPAuthenticationError) as unknown_user:
            smtp.login("nobody", PASSWORD)
        smtp.mail("app@sender.example")
        code, _ = smtp.rcpt("team@alice.example")

    assert wrong_password.value.smtp_code == 535
    assert wrong_password.value.smtp_error == b"5.7.8 Authentication credentials invalid"
    assert unknown_user.value.smtp_code == 535
    assert code == 530  # still not logged in


def test_it_delivers_mail_sent_with_the_right_credentials(
    tls_ingress, tls_client_context, protected_webhook, httpserver, celery_worker
):
    with tls_ingress.smtp() as smtp:
        smtp.starttls(context=tls_client_context)
        smtp.ehlo()
        smtp.user, smtp.password = USER, PASSWORD
        code, text = smtp.auth("PLAIN", smtp.auth_plain)
        refused = smtp.sendmail("app@sender.example", ["team@alice.example"], MESSAGE)

    assert (code, text) == (235, b"2.7.0 Authentication successful")
    assert refused == {}
    assert InboundMessage.objects.get().smtp_auth_user == USER
    wait_for(lambda: Delivery.objects.filter(status=Delivery.Status.DELIVERED).exists())
    payload = httpserver.log[0][0].get_json()
    assert payload["authentication"]["smtp_auth_user"] == USER
    assert payload["subject"] == "Logged in"


def test_it_accepts_auth_login_with_a_username_in_another_case(
    tls_ingress, tls_client_context, protected_webhook
):
    with tls_ingress.smtp() as smtp:
        smtp.starttls(context=tls_client_context)
        smtp.ehlo()
        smtp.user, smtp.password = USER.upper(), PASSWORD
        code, _ = smtp.auth("LOGIN", smtp.auth_login, initial_response_ok=False)
        smtp.mail("app@sender.example")
        rcpt_code, _ = smtp.rcpt("team@alice.example")

    assert code == 235
    assert rcpt_code == 250


def test_it_refuses_the_credentials_of_another_policy(
    tls_ingress, tls_client_context, protected_webhook, alice, alice_domain
):
    other = make_policy(
        alice, name="Other", require_smtp_auth=True, credentials="other:another password"
    )
    hook(
        alice, alice_domain, "http://127.0.0.1:9/", "ops@alice.example", smtp_security_policy=other
    )

    with tls_ingress.smtp() as smtp:
        smtp.starttls(context=tls_client_context)
        smtp.ehlo()
        smtp.login("other", "another password")
        smtp.mail("app@sender.example")
        own_code, _ = smtp.rcpt("ops@alice.example")
        foreign_code, foreign_text = smtp.rcpt("team@alice.example")

    assert own_code == 250
    assert foreign_code == 530
    assert foreign_text.startswith(b"5.7.0")
