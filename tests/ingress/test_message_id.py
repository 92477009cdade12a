"""The Message-ID and Subject the ingress stores are the ones the payload reports: one
header reader (webhooks.mail.headers) serves both, however broken the header block."""

from __future__ import annotations

import email.parser
import email.policy

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.ingress.conftest import hook
from webhooks import accept
from webhooks.mail import headers
from webhooks.models import InboundMessage
from webhooks.payload import AuthResults, Envelope, build_payload


def _by_the_payload(raw: bytes) -> tuple[str, str]:
    envelope = Envelope(mail_from="", rcpt_to=[], client_ip=None, helo=None)
    payload = build_payload(raw, envelope=envelope, auth=AuthResults())
    return payload["message_id"] or "", payload["subject"]


_NAMES = st.sampled_from(
    [
        "Message-ID",
        "message-id",
        "MESSAGE-ID",
        "Message-Id ",
        "Message-ID2",
        "Subject",
        "subject ",
        "Subjects",
        "From",
        "X",
    ]
)
_VALUES = st.sampled_from(
    ["", " ", "\t", "<a@b>", " <a@b> ", "<x@y> (c)", ":", "a:b", "  ", "=?utf-8?q?=3Cq@x=3E?="]
)
_ENDS = st.sampled_from(["\r\n", "\n", "\r"])
_LINES = st.one_of(
    st.tuples(_NAMES, st.just(":"), _VALUES, _ENDS).map("".join),
    st.tuples(st.sampled_from([" ", "\t", "  "]), _VALUES, _ENDS).map("".join),  # continuations
    st.tuples(
        st.sampled_from(["From sender ", "From x", ":no name", "no colon", "A B: c", "\ufeff"]),
        _ENDS,
    ).map("".join),
    st.text(st.characters(min_codepoint=1, max_codepoint=255), max_size=12),
)


@settings(max_examples=1000, deadline=None)
@given(
    lines=st.lists(_LINES, max_size=8),
    tail=st.sampled_from(["\r\n\r\nbody", "\r\n", "", "\n\n", "\n\r\nMessage-ID: <body@x>\r\n"]),
)
def test_it_reads_what_the_payload_reads(lines, tail):
    raw = ("".join(lines) + tail).encode("utf-8", "surrogateescape")

    assert accept.message_id_and_subject(raw) == _by_the_payload(raw)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"Message-ID: <plain@example.net>\r\nSubject: x\r\n\r\nbody", "<plain@example.net>"),
        (
            b"From sender Thu Apr  2 12:00:00 2026\r\nMessage-ID:\r\n <folded@example.net>\r\n\r\n",
            "<folded@example.net>",
        ),
        (b"Subject: x\r\nmessage-id: <first@x>\r\nMessage-ID: <second@x>\r\n\r\n", "<first@x>"),
        # The header block is not cut short by one malformed line (issue class 1):
        # a junk line between fields, a continuation without its blank, obsolete
        # whitespace before the colon, a UTF-8 BOM, an indented first field.
        (b"Subject: x\r\nnot a header\r\nMessage-ID: <after-junk@x>\r\n\r\n", "<after-junk@x>"),
        (b"Subject: a long\r\nsubject\r\nMessage-ID: <after-fold@x>\r\n\r\n", "<after-fold@x>"),
        (b"Message-ID    : <obsolete@x>\r\n\r\n", "<obsolete@x>"),
        (b"\xef\xbb\xbfMessage-ID: <bom@x>\r\n\r\n", "<bom@x>"),
        (b"  Message-ID: <indented@x>\r\nSubject: x\r\n\r\n", "<indented@x>"),
        ("Message-ID: <caf\u00e9@example.net>\r\n\r\n".encode(), "<caf\u00e9@example.net>"),
        (b"Subject: x\r\n\r\nMessage-ID: <in-the-body@x>\r\n", ""),
        (b"Subject: x\n\nMessage-ID: <in-the-body@x>\n", ""),
        (b"", ""),
    ],
)
def test_examples(raw, expected):
    assert accept.message_id_and_subject(raw)[0] == expected
    assert _by_the_payload(raw)[0] == expected


def test_the_standard_library_would_lose_it_after_a_junk_line():
    """Why the ingress no longer asks the email package: it ends the headers there."""
    raw = b"Subject: x\r\nnot a header\r\nMessage-ID: <after-junk@x>\r\n\r\n"
    parsed = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(raw)

    assert parsed.get("Message-ID") is None
    assert accept.message_id_and_subject(raw)[0] == "<after-junk@x>"


@pytest.mark.parametrize(
    ("head", "body"),
    [
        (b"Message-ID: <m@example.net>\r\n\r\n", b"x" * 1_000_000),
        (b"Message-ID: <m@example.net>\n\n", b"x\r\n\r\n" * 1000),
        (b"Message-ID: <m@example.net>\r\n\n", b"x\n\n"),
    ],
)
def test_it_reads_only_the_header_block(head, body):
    """The body of a big message is never handed to the line reader."""
    assert headers.header_block_end(head + body) == len(head)
    assert accept.message_id_and_subject(head + body)[0] == "<m@example.net>"


def test_a_message_without_a_blank_line_is_all_headers():
    raw = b"Subject: x\r\nMessage-ID: <m@example.net>\r\n"
    assert headers.header_block_end(raw) == len(raw)
    assert accept.message_id_and_subject(raw)[0] == "<m@example.net>"


@pytest.mark.django_db(transaction=True)
def test_the_ingress_stores_the_message_id_the_payload_reports(ingress, alice, alice_domain):
    hook(alice, alice_domain, "http://127.0.0.1:9/", "team@alice.example")
    message = b"Subject: x\r\nnot a header\r\nMessage-ID: <stored@x>\r\n\r\nhello\r\n"

    with ingress.smtp() as smtp:
        assert smtp.sendmail("sender@example.net", ["team@alice.example"], message) == {}

    stored = InboundMessage.objects.get()
    assert stored.message_id_header == "<stored@x>" == _by_the_payload(bytes(stored.raw))[0]
    # The line that is no field continues the Subject, for the payload as for what is stored.
    assert stored.subject == "x not a header" == _by_the_payload(bytes(stored.raw))[1]
