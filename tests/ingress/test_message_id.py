"""The Message-ID the ingress stores is the one the email package's parser reads."""

from __future__ import annotations

import email.parser
import email.policy

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingress import decisions


def _by_the_parser(raw: bytes) -> str:
    headers = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(
        decisions._header_block(raw)
    )
    return str(headers.get("Message-ID", "") or "").strip()


_NAMES = st.sampled_from(
    ["Message-ID", "message-id", "MESSAGE-ID", "Message-Id ", "Message-ID2", "Subject", "From", "X"]
)
_VALUES = st.sampled_from(["", " ", "\t", "<a@b>", " <a@b> ", "<x@y> (c)", ":", "a:b", "  "])
_ENDS = st.sampled_from(["\r\n", "\n", "\r"])
_LINES = st.one_of(
    st.tuples(_NAMES, st.just(":"), _VALUES, _ENDS).map("".join),
    st.tuples(st.sampled_from([" ", "\t", "  "]), _VALUES, _ENDS).map("".join),  # continuations
    st.tuples(
        st.sampled_from(["From sender ", "From x", ":no name", "no colon", "A B: c"]), _ENDS
    ).map("".join),
    st.text(st.characters(min_codepoint=1, max_codepoint=127), max_size=12),
)


@settings(max_examples=1000, deadline=None)
@given(
    lines=st.lists(_LINES, max_size=8), tail=st.sampled_from(["\r\n\r\nbody", "\r\n", "", "\n\n"])
)
def test_it_reads_what_the_parser_reads(lines, tail):
    raw = ("".join(lines) + tail).encode("ascii")

    assert decisions._message_id(raw) == _by_the_parser(raw)


@pytest.mark.parametrize(
    "raw",
    [
        b"Message-ID: <plain@example.net>\r\nSubject: x\r\n\r\nbody",
        b"From sender Thu Apr  2 12:00:00 2026\r\nMessage-ID:\r\n <folded@example.net>\r\n\r\n",
        b"Subject: x\r\nmessage-id: <first@x>\r\nMessage-ID: <second@x>\r\n\r\n",
        b"Subject: x\r\nnot a header\r\nMessage-ID: <in-the-body@x>\r\n\r\n",
        "Message-ID: <caf\u00e9@example.net>\r\n\r\n".encode(),  # not ASCII: the parser itself
    ],
)
def test_examples(raw):
    assert decisions._message_id(raw) == _by_the_parser(raw)


def test_a_plain_header_block_skips_the_parser(monkeypatch):
    def no_parser(*args, **kwargs):
        raise AssertionError("the parser was used")

    monkeypatch.setattr(email.parser.BytesHeaderParser, "parsebytes", no_parser)

    assert decisions._message_id(b"Message-ID: <m@example.net>\r\n\r\nHi\r\n") == "<m@example.net>"
