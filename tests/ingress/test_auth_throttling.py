"""SMTP AUTH guessing is throttled per client address and per username (ingress.throttling),
over real STARTTLS sessions; the owner's right password still works from elsewhere."""

from __future__ import annotations

import base64
import smtplib
import ssl

import pytest

from tests.ingress.conftest import PASSWORD, USER

pytestmark = pytest.mark.django_db(transaction=True)

WRONG = "not the password"
BY_IP = b"421 4.7.0 Too many failed AUTH attempts from 127.0.0.1; try again later"
BY_USERNAME = b"421 4.7.0 Too many failed AUTH attempts for this username; try again later"


@pytest.fixture
def limits(settings):
    settings.CONDUIT_SMTP_AUTH_MAX_FAILURES_PER_IP = 3
    settings.CONDUIT_SMTP_AUTH_MAX_FAILURES_PER_USERNAME = 3
    return settings


class Client:
    def __init__(self, ingress, context: ssl.SSLContext, *, source: str = "127.0.0.1") -> None:
        self.smtp = smtplib.SMTP(
            "127.0.0.1",
            ingress.port,
            local_hostname="sender.example",
            timeout=20,
            source_address=(source, 0),
        )
        self.smtp.starttls(context=context)
        self.smtp.ehlo()

    def auth(self, username: str, password: str) -> tuple[int, bytes]:
        blob = base64.b64encode(f"\0{username}\0{password}".encode()).decode()
        try:
            return self.smtp.docmd("AUTH", f"PLAIN {blob}")
        except smtplib.SMTPServerDisconnected:
            return -1, b"disconnected"

    def closed_by_server(self) -> bool:
        try:
            self.smtp.noop()
        except smtplib.SMTPServerDisconnected:
            return True
        return False

    def close(self) -> None:
        self.smtp.close()


def _fail(ingress, context, times: int, *, username: str = USER, source: str = "127.0.0.1"):
    client = Client(ingress, context, source=source)
    codes = [client.auth(username, WRONG)[0] for _ in range(times)]
    client.close()
    return codes


def test_it_answers_421_and_disconnects_a_client_address_past_its_failures(
    tls_ingress, tls_client_context, protected_webhook, limits
):
    # Different usernames: the address is what is counted.
    assert _fail(tls_ingress, tls_client_context, 1, username="a") == [535]
    assert _fail(tls_ingress, tls_client_context, 2, username="b") == [535, 535]

    client = Client(tls_ingress, tls_client_context)
    # Even the right password is not checked from this address now.
    reply = client.auth(USER, PASSWORD)
    closed = client.closed_by_server()
    client.close()

    assert reply == (421, BY_IP[4:])
    assert closed


def test_the_right_password_still_works_from_another_address(
    tls_ingress, tls_client_context, protected_webhook, limits
):
    limits.CONDUIT_SMTP_AUTH_MAX_FAILURES_PER_IP = 100
    # A guesser at 127.0.0.1 uses up the username's failures.
    assert _fail(tls_ingress, tls_client_context, 3) == [535, 535, 535]
    guesser = Client(tls_ingress, tls_client_context)
    guessed = guesser.auth(USER.upper(), WRONG)
    guesser_closed = guesser.closed_by_server()
    guesser.close()

    # The owner, from another address (all of 127/8 is loopback), logs in.
    owner = Client(tls_ingress, tls_client_context, source="127.0.0.2")
    owner_reply = owner.auth(USER, PASSWORD)
    owner.smtp.mail("app@sender.example")
    rcpt_code, _ = owner.smtp.rcpt("team@alice.example")
    owner.close()

    assert guessed == (421, BY_USERNAME[4:])
    assert guesser_closed
    assert owner_reply == (235, b"2.7.0 Authentication successful")
    assert rcpt_code == 250


def test_a_new_address_that_fails_for_a_throttled_username_is_held_off_too(
    tls_ingress, tls_client_context, protected_webhook, limits
):
    limits.CONDUIT_SMTP_AUTH_MAX_FAILURES_PER_IP = 100
    assert _fail(tls_ingress, tls_client_context, 3) == [535, 535, 535]

    # One try per address and window, then 421 and the session ends.
    assert _fail(tls_ingress, tls_client_context, 2, source="127.0.0.3") == [535, 421]


def test_failures_below_the_limits_change_nothing(
    tls_ingress, tls_client_context, protected_webhook, limits
):
    client = Client(tls_ingress, tls_client_context)
    codes = [client.auth(USER, WRONG)[0] for _ in range(2)]
    right = client.auth(USER, PASSWORD)
    client.close()

    assert codes == [535, 535]
    assert right == (235, b"2.7.0 Authentication successful")
