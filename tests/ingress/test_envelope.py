"""Envelopes are judged at MAIL, RCPT and EHLO: what can never be stored is refused
there, for good, and never gets 250 and then 451 at DATA."""

from __future__ import annotations

import pytest

from tests.ingress.conftest import RawSession, hook
from webhooks.models import InboundMessage

pytestmark = pytest.mark.django_db(transaction=True)

MESSAGE = b"Subject: hi\r\n\r\nhello\r\n."


@pytest.fixture
def team(alice, alice_domain):
    return hook(alice, alice_domain, "http://127.0.0.1:9/", "team@alice.example")


def session(ingress) -> RawSession:
    raw = RawSession(ingress.port)
    assert raw.send(b"EHLO sender.example").startswith(b"250-")
    return raw


@pytest.mark.parametrize(
    ("mail_from", "reply"),
    [
        (b"MAIL FROM:<j\xf6ran@example.net>", b"501 5.1.7 Sender address is not valid UTF-8"),
        (
            b"MAIL FROM:<j\xf6ran@example.net> SMTPUTF8",
            b"501 5.1.7 Sender address is not valid UTF-8",
        ),
        (b'MAIL FROM:<"a\x00b"@example.net>', b"501 5.1.7 Sender address contains a NUL character"),
        (
            b'MAIL FROM:<"j\xc3\xb6\x00"@example.net> SMTPUTF8',
            b"501 5.1.7 Sender address contains a NUL character",
        ),
        (
            "MAIL FROM:<jöran@example.net>".encode(),
            b"553 5.6.7 Sender address is not ASCII; send MAIL FROM with the SMTPUTF8 "
            b"parameter to use a UTF-8 address",
        ),
        (
            b"MAIL FROM:<" + b"a" * 60 + b"@" + b"b" * 300 + b".example>",
            b"553 5.1.7 Sender address longer than 320 characters",
        ),
    ],
    ids=["not-utf8", "not-utf8-smtputf8", "nul", "nul-smtputf8", "utf8-no-smtputf8", "too-long"],
)
def test_it_refuses_a_sender_address_that_cannot_be_stored_at_mail(ingress, team, mail_from, reply):
    with session(ingress) as raw:
        refused = raw.send(mail_from)
        # The session goes on: a good sender is taken at once.
        later = raw.send(b"MAIL FROM:<s@sender.example>")

    assert refused == reply
    assert later == b"250 2.1.0 OK"


@pytest.mark.parametrize(
    ("smtputf8", "rcpt", "reply"),
    [
        (
            False,
            b"RCPT TO:<te\xf6m@alice.example>",
            b"501 5.1.3 Recipient address is not valid UTF-8",
        ),
        (
            True,
            b"RCPT TO:<te\xf6m@alice.example>",
            b"501 5.1.3 Recipient address is not valid UTF-8",
        ),
        (
            False,
            b'RCPT TO:<"te\x00am"@alice.example>',
            b"501 5.1.3 Recipient address contains a NUL character",
        ),
        (
            False,
            "RCPT TO:<tëam@alice.example>".encode(),
            b"553 5.6.7 Recipient address is not ASCII; send MAIL FROM with the SMTPUTF8 "
            b"parameter to use a UTF-8 address",
        ),
    ],
    ids=["not-utf8", "not-utf8-smtputf8", "nul", "utf8-no-smtputf8"],
)
def test_it_refuses_a_recipient_address_that_cannot_be_stored_at_rcpt(
    ingress, team, smtputf8, rcpt, reply
):
    mail = b"MAIL FROM:<s@sender.example>" + (b" SMTPUTF8" if smtputf8 else b"")
    with session(ingress) as raw:
        assert raw.send(mail) == b"250 2.1.0 OK"
        refused = raw.send(rcpt)
        good = raw.send(b"RCPT TO:<team@alice.example>")
        data = raw.send(b"DATA")
        stored = raw.send(MESSAGE)

    assert refused == reply
    assert good == b"250 2.1.5 OK"
    assert data.startswith(b"354")
    assert stored.startswith(b"250 2.0.0 Ok: queued as ")
    assert InboundMessage.objects.get().rcpt_to == ["team@alice.example"]


def test_it_accepts_utf8_addresses_with_smtputf8(ingress, alice, alice_domain):
    hook(alice, alice_domain, "http://127.0.0.1:9/", "tëam@alice.example")

    with session(ingress) as raw:
        mail = raw.send("MAIL FROM:<jöran@example.net> SMTPUTF8".encode())
        rcpt = raw.send("RCPT TO:<tëam@alice.example>".encode())
        raw.send(b"DATA")
        stored = raw.send(MESSAGE)

    assert (mail, rcpt) == (b"250 2.1.0 OK", b"250 2.1.5 OK")
    assert stored.startswith(b"250 2.0.0 ")
    message = InboundMessage.objects.get()
    assert (message.mail_from, message.rcpt_to) == ("jöran@example.net", ["tëam@alice.example"])


@pytest.mark.parametrize("command", [b"EHLO", b"HELO"])
@pytest.mark.parametrize("name", [b"bad\x00name.example", b"j\xf6ran.example"])
def test_it_refuses_a_helo_name_that_cannot_be_stored(ingress, team, command, name):
    with RawSession(ingress.port) as raw:
        refused = raw.send(command + b" " + name)
        mail = raw.send(b"MAIL FROM:<s@sender.example>")
        greeted = raw.send(command + b" sender.example")

    assert refused == b"501 5.5.4 HELO/EHLO name must be ASCII or UTF-8 text without NUL characters"
    assert mail == b"503 Error: send HELO first"
    assert greeted.startswith(b"250")


def test_it_advertises_pipelining_and_answers_pipelined_commands_in_order(ingress, team):
    with RawSession(ingress.port) as raw:
        ehlo = raw.send(b"EHLO sender.example")
        # RFC 2920: MAIL, RCPT and DATA in one write, then the body.
        raw.sock.sendall(
            b"MAIL FROM:<s@sender.example>\r\nRCPT TO:<nobody@alice.example>\r\n"
            b"RCPT TO:<team@alice.example>\r\nDATA\r\n"
        )
        replies = [raw.reply() for _ in range(4)]
        stored = raw.send(MESSAGE)

    assert b"250-PIPELINING" in ehlo.split(b"\r\n")
    assert ehlo.split(b"\r\n")[-1] == b"250 HELP"
    assert [reply[:3] for reply in replies] == [b"250", b"550", b"250", b"354"]
    assert stored.startswith(b"250 2.0.0 ")
