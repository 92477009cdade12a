from __future__ import annotations

import smtplib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.delivery_fixtures import make_webhook
from tests.webhooks.test_delivery import wait_for
from webhooks.models import Delivery, InboundMessage

pytestmark = pytest.mark.django_db(transaction=True)


def test_it_accepts_and_delivers_a_message(
    ingress, alice, alice_domain, httpserver, delivery_settings, celery_worker
):
    make_webhook(alice, alice_domain, httpserver.url_for("/hook"))
    httpserver.expect_request("/hook").respond_with_data("ok")
    with smtplib.SMTP("127.0.0.1", ingress.port) as smtp:
        code, _ = smtp.ehlo("sender.example")
        assert code == 250
        features = smtp.esmtp_features
        assert {"size", "8bitmime", "smtputf8"} <= set(features)
        smtp.sendmail(
            "sender@example.net",
            ["inbox@alice.example"],
            b"Subject: hi\r\nMessage-ID: <m1@example.net>\r\n\r\nhello\r\n",
        )
    message = InboundMessage.objects.get()
    assert message.message_id_header == "<m1@example.net>"
    wait_for(lambda: Delivery.objects.filter(status=Delivery.Status.DELIVERED).exists())
    payload = httpserver.log[0][0].get_json()
    assert payload["subject"] == "hi"
    assert payload["envelope"]["helo"] == "sender.example"


def test_it_refuses_an_unknown_recipient(ingress, alice, alice_domain, delivery_settings):
    make_webhook(alice, alice_domain, "http://127.0.0.1:9/")
    with smtplib.SMTP("127.0.0.1", ingress.port) as smtp:
        smtp.ehlo("sender.example")
        smtp.mail("sender@example.net")
        code, text = smtp.rcpt("nobody@alice.example")
        assert code == 550
        assert text.startswith(b"5.1.1")


@pytest.mark.parametrize(
    "arg",
    [
        "",
        "<alice@example.net>",
        "<alice@example.net> SIZE=100",
        "alice@example.net",
        "<>",
        '<"odd local"@example.net>',
        "<@relay.example:alice@example.net>",
        "<not an address",
        "<" + "a" * 65 + "@example.net>",
        "<" + "a" * 64 + "@example.net>",
    ],
)
def test_its_address_parser_answers_as_aiosmtpd_does(arg):
    # ConduitSMTP._getaddr is aiosmtpd's, less a class defined on every call,
    # with a regular expression for the plain <local@domain> form.
    _assert_parsed_as_aiosmtpd_does(arg)


def _assert_parsed_as_aiosmtpd_does(arg: str) -> None:
    from aiosmtpd.smtp import SMTP

    from ingress.smtp import ConduitSMTP

    ours = ConduitSMTP.__new__(ConduitSMTP)
    theirs = SMTP.__new__(SMTP)
    ours.local_part_limit = theirs.local_part_limit = 64

    def parse(protocol: SMTP) -> tuple:
        try:
            address, rest = protocol._getaddr(arg)
        except Exception as error:  # the email parser fails on some inputs: so must ours
            return ("raised", type(error))
        return address, str(rest) if rest is not None else None

    assert parse(ours) == parse(theirs)


def _pieces(*pieces: str) -> st.SearchStrategy[str]:
    return st.lists(st.sampled_from(pieces), max_size=6).map("".join)


# Half of them plain, as most senders write them, half anything at all.
_PLAIN = _pieces("a", "Z", "0", "9", "-", ".", "a" * 64)
_ADDRESS_PIECES = st.one_of(
    _PLAIN,
    _pieces(*"aZ09.-_+=!#$%&'*/?^`{|}~@<>()[]:;,\"", " ", "\t", "é", "..", "@@", "(c)", "a" * 64),
)


@settings(max_examples=500, deadline=None)
@given(
    local=_ADDRESS_PIECES,
    domain=_ADDRESS_PIECES,
    tail=st.sampled_from(["", " ", "  SIZE=100", " BODY=8BITMIME SIZE=1", "x", " (c) X", "\t>"]),
)
def test_its_address_parser_answers_as_aiosmtpd_does_for_generated_paths(local, domain, tail):
    _assert_parsed_as_aiosmtpd_does(f"<{local}@{domain}>{tail}")
    _assert_parsed_as_aiosmtpd_does(f"{local}@{domain}{tail}")


def test_plain_paths_skip_the_email_parser():
    from ingress.protocol import _PLAIN_PATH

    for arg in ("<alice@example.net>", "<a.b+tag@mx-1.example.co.uk> SIZE=10240 BODY=8BITMIME"):
        assert _PLAIN_PATH.match(arg)
        _assert_parsed_as_aiosmtpd_does(arg)


def test_the_protocol_finds_every_hook_through_its_short_dir():
    # ConduitSMTP and Handler list only their hook methods in dir(), which
    # aiosmtpd's constructor scans on every connection; it must still find
    # every command, AUTH mechanism and handler hook.
    import asyncio

    from ingress.smtp import protocol_factory

    async def build():
        return protocol_factory(hostname="mx.test")()

    protocol = asyncio.run(build())
    every = object.__dir__(protocol)
    assert set(protocol._smtp_methods) == {
        name[len("smtp_") :] for name in every if name.startswith("smtp_")
    }
    assert {"DATA", "EHLO", "MAIL", "RCPT", "QUIT", "AUTH", "STARTTLS"} <= set(
        protocol._smtp_methods
    )
    assert set(protocol._auth_methods) == {"LOGIN", "PLAIN"}
    handler_every = object.__dir__(protocol.event_handler)
    assert set(protocol._handle_hooks) == {
        name[len("handle_") :] for name in handler_every if name.startswith("handle_")
    }
    assert {"MAIL", "RCPT", "DATA"} <= set(protocol._handle_hooks)


def test_each_connection_is_given_the_running_loop_not_left_to_find_it():
    # aiosmtpd looks the loop up under catch_warnings when it is not given one:
    # a cost on every connection that the factory avoids.
    import asyncio
    from unittest import mock

    import aiosmtpd.smtp

    from ingress.smtp import protocol_factory

    async def build():
        return protocol_factory(hostname="mx.test")(), asyncio.get_running_loop()

    with mock.patch.object(aiosmtpd.smtp, "make_loop", side_effect=AssertionError("looked up")):
        protocol, loop = asyncio.run(build())
    assert protocol.loop is loop


def test_the_ehlo_hook_is_taken_for_its_five_argument_form_from_its_kept_signature():
    # aiosmtpd's constructor reads handle_EHLO's signature on every connection
    # to choose how to call it; the one kept on the function must read as the
    # signature inspect would build, or EHLO would be called the old way.
    import asyncio
    import inspect

    from ingress.handler import Handler
    from ingress.smtp import protocol_factory

    async def build():
        return protocol_factory(hostname="mx.test")()

    protocol = asyncio.run(build())
    kept = Handler.handle_EHLO.__signature__
    del Handler.handle_EHLO.__signature__
    try:
        assert inspect.signature(Handler.handle_EHLO) == kept
    finally:
        Handler.handle_EHLO.__signature__ = kept
    assert len(inspect.signature(protocol.event_handler.handle_EHLO).parameters) == 5
    assert protocol._ehlo_hook_ver == "new"


@pytest.mark.parametrize("command", ["HELP", "HELP DATA", "HELP MAIL", "HELP NOSUCH"])
def test_help_answers_as_the_installed_aiosmtpd_does(ingress, side_by_side, command):
    from aiosmtpd.smtp import SMTP

    def ask(port: int) -> tuple[int, bytes]:
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
            smtp.ehlo("sender.example")
            return smtp.docmd(command)

    stock_port, _ = side_by_side.port(SMTP, enable_SMTPUTF8=True, auth_require_tls=False)
    ours, theirs = ask(ingress.port), ask(stock_port)

    assert ours == theirs
    if command == "HELP":
        assert b" DATA " in ours[1]
    if command == "HELP DATA":
        assert ours == (250, b"Syntax: DATA")
