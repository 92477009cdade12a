"""Real-world mail shapes that strict parsers get wrong, one test per class (corpus/README.md).

Plain tests of webhooks.payload / webhooks.mail: no Django, no database.
"""

from __future__ import annotations

import base64
from pathlib import Path

from tests.mail.tnef import build_tnef
from webhooks.payload import AuthResults, Envelope, build_payload

CORPUS = Path(__file__).parent / "corpus"
ENVELOPE = Envelope(
    mail_from="sender@example.com", rcpt_to=["inbox@hooks.example"], client_ip=None, helo=None
)
JPEG = bytes.fromhex("ffd8ffe000104a46494600010100000100010000ffd9")


def payload(name: str) -> dict:
    return build_payload((CORPUS / name).read_bytes(), envelope=ENVELOPE, auth=AuthResults())


def content(attachment: dict) -> bytes:
    return base64.b64decode(attachment["content"])


def address(value: str, name: str = "") -> dict:
    return {"address": value, "name": name}


# --- 1. The header block is not cut short by one bad line ------------------------------------


def test_it_unfolds_a_continuation_line_that_lost_its_blank():
    result = payload("1-continuation-without-blank.eml")
    assert result["subject"] == "Quarterly report for the northern region"
    assert result["to"] == [address("bob@example.org")]
    assert result["date"] == "2026-04-02T14:00:00Z"
    assert result["text"] == "Body.\n"


def test_it_accepts_whitespace_before_the_colon():
    result = payload("1-space-before-colon.eml")
    assert result["subject"] == "Hello"
    assert result["to"] == [address("bob@example.org")]
    assert {"name": "Subject", "value": "Hello"} in result["headers"]


def test_it_skips_a_byte_order_mark_before_the_first_header():
    result = payload("1-bom.eml")
    assert result["from"] == address("alice@example.com")
    assert result["subject"] == "With a BOM"


def test_it_reads_an_indented_first_header():
    result = payload("1-indented-first-header.eml")
    assert result["from"] == address("alice@example.com")
    assert result["subject"] == "Indented"


def test_it_skips_a_junk_line_between_headers():
    result = payload("1-junk-line.eml")
    assert result["subject"] == "After the junk"
    assert result["to"] == [address("bob@example.org")]
    assert result["text"] == "Body.\n"
    assert [h["name"] for h in result["headers"]] == ["From", "Subject", "To"]


def test_it_reads_part_headers_as_leniently():
    result = payload("1-part-name-continuation.eml")
    (photo,) = result["attachments"]
    assert photo["filename"] == "photo.jpg"
    assert photo["content_type"] == "image/jpeg"
    assert content(photo) == JPEG


# --- 2. Multipart structure ---------------------------------------------------------------


def test_it_splits_on_an_unquoted_boundary_containing_equals_signs():
    result = payload("2-unquoted-boundary-with-equals.eml")
    assert result["text"] == "Plain text."
    assert result["html"] == "<p>HTML</p>"
    (image,) = result["attachments"]
    assert (image["filename"], content(image)) == ("a.jpg", JPEG)


def test_it_finds_the_parts_hidden_behind_a_reused_boundary():
    result = payload("2-nested-boundary-reuse.eml")
    assert result["text"] == "Visible text."
    (hidden,) = result["attachments"]
    assert hidden["filename"] == "hidden.bin"
    assert content(hidden) == b"HIDDEN"


def test_an_empty_alternative_does_not_take_the_text_slot():
    result = payload("2-empty-alternative.eml")
    assert result["text"] == "The real text."
    assert result["attachments"] == []


def test_it_finds_the_boundary_without_its_semicolon():
    result = payload("2-missing-semicolon.eml")
    assert result["text"] == "Text part."
    assert result["html"] == "<b>HTML part</b>"


# --- 3. Transfer encodings ----------------------------------------------------------------


def test_it_recognises_a_transfer_encoding_with_trailing_blanks():
    (picture,) = payload("3-base64-trailing-blank.eml")["attachments"]
    assert content(picture) == JPEG


def test_it_decodes_base64_with_a_stray_character():
    assert payload("3-base64-stray-character.eml")["text"] == "Hello, world"


def test_it_decodes_a_base64_encoded_forwarded_message():
    (forwarded,) = payload("3-base64-message-rfc822.eml")["attachments"]
    assert forwarded["content_type"] == "message/rfc822"
    assert content(forwarded) == (
        b"From: original@example.com\r\nSubject: Inner\r\n\r\nInner body.\r\n"
    )


def test_it_decodes_a_quoted_printable_forwarded_message():
    (forwarded,) = payload("3-qp-message-rfc822.eml")["attachments"]
    assert forwarded["content_type"] == "message/rfc822"
    assert content(forwarded) == (
        b"From: original@example.com\r\nSubject: \xc3\x9cber\r\n\r\n"
        b"Inner body with a soft break and = sign."  # the last CRLF is the delimiter's
    )


# --- 4. Addresses -------------------------------------------------------------------------


def test_the_angle_addr_wins_over_an_address_in_the_display_name():
    result = payload("4-angle-addr-wins.eml")
    assert result["from"] == address("noreply@attacker.example", "billing@bank.example")
    assert result["to"] == [
        address("mallory@attacker.example", "ceo@company.example"),
        address("bob@example.org", "Bob"),
    ]


def test_a_junk_tail_does_not_drop_the_recipients_before_it():
    assert payload("4-junk-tail.eml")["to"] == [
        address("bob@example.org"),
        address("carol@example.org", "Carol"),
    ]


def test_comments_are_not_glued_into_display_names():
    result = payload("4-comments.eml")
    assert result["from"] == address("pete@silly.test", "Pete")
    # A comment after a bare addr-spec is the traditional way to write the name.
    assert result["to"] == [
        address("carol@example.org", "Carol Jones"),
        address("dave@example.org", "Dave"),
    ]


def test_a_header_that_is_no_address_list_yields_no_address():
    result = payload("4-not-an-address-list.eml")
    assert result["to"] == []
    assert result["cc"] == [address("ann@example.org"), address("ben@example.org")]


# --- 5. Forwarded messages are the sender's bytes -----------------------------------------


def test_a_forwarded_message_is_copied_not_reserialised():
    for name in ("5-forward-bad-folding.eml", "5-message-partial.eml", "5-forward-from-line.eml"):
        raw = (CORPUS / name).read_bytes()
        (forwarded,) = payload(name)["attachments"]
        body = content(forwarded)
        assert forwarded["content_type"].startswith("message/")
        assert body in raw, name
        assert raw[raw.index(body) - 4 : raw.index(body)] == b"\r\n\r\n", name
        assert raw[raw.index(body) + len(body) :].startswith(b"\r\n--"), name
    (fragment,) = payload("5-message-partial.eml")["attachments"]
    assert content(fragment).count(b"--inner") == 1


# --- 6. Charsets --------------------------------------------------------------------------


def test_it_decodes_raw_8bit_bytes_inside_an_encoded_word_in_its_charset():
    result = payload("6-8bit-in-encoded-word.eml")
    assert result["from"] == address("frog@example.com", "Frösche")
    assert result["subject"] == "ПриветFrösche"  # noqa: RUF001 - Cyrillic on purpose


def test_it_decodes_labels_without_an_alias_with_their_superset():
    result = payload("6-charset-labels.eml")
    assert result["subject"] == "שלום한국어"
    assert result["text"] == "中文 €"  # big5 with the Microsoft euro (cp950)
    assert result["html"] == "①㈱"  # ISO-2022-JP with the NEC extensions


def test_it_repairs_raw_8bit_file_names():
    names = [a["filename"] for a in payload("6-8bit-filename.eml")["attachments"]]
    assert names == ["Grüße.pdf", "Résumé.pdf"]


def test_one_invalid_byte_does_not_spoil_a_utf8_field():
    # "ü" in UTF-8 right before a Latin-1 "ß": one run of 8-bit bytes, two encodings.
    assert payload("6-mixed-8bit-field.eml")["subject"] == "Zoë and Grüße"


# --- 7. Smaller ---------------------------------------------------------------------------


def test_the_smaller_cases():
    result = payload("7-smaller.eml")
    assert result["date"] == "2006-09-25T04:19:00Z"  # a comment before the zone is a comment
    koi8, spaced, glued = result["attachments"]
    assert koi8["filename"] == "Отчёт.txt"  # an unquoted encoded word
    assert spaced["filename"] == "This is a test.txt"
    assert glued["content_type"] == "image/gif"  # bare type/subtype, parameter not glued on
    assert glued["filename"] == "glued.gif"


# --- TNEF ---------------------------------------------------------------------------------


def test_it_unpacks_a_winmail_dat_and_keeps_the_original():
    tnef = build_tnef([("report.pdf", b"%PDF-1.4 figures"), ("notes.txt", b"some notes\r\n")])
    raw = (
        b"From: outlook@example.com\r\nSubject: Rich text\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="t"\r\n\r\n--t\r\n'
        b"Content-Type: text/plain\r\n\r\nSee attached.\r\n--t\r\n"
        b'Content-Type: application/ms-tnef; name="winmail.dat"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\n"
        + base64.encodebytes(tnef).replace(b"\n", b"\r\n")
        + b"--t--\r\n"
    )
    result = build_payload(raw, envelope=ENVELOPE, auth=AuthResults())
    original, pdf, notes = result["attachments"]
    assert (original["filename"], content(original)) == ("winmail.dat", tnef)
    assert (pdf["filename"], pdf["content_type"], content(pdf)) == (
        "report.pdf",
        "application/pdf",
        b"%PDF-1.4 figures",
    )
    assert (notes["filename"], notes["content_type"], content(notes)) == (
        "notes.txt",
        "text/plain",
        b"some notes\r\n",
    )


def test_a_broken_tnef_stream_is_still_delivered_as_it_came():
    raw = b"Content-Type: application/ms-tnef\r\n\r\n\x78\x9f\x3e\x22garbage"
    (original,) = build_payload(raw, envelope=ENVELOPE, auth=AuthResults())["attachments"]
    assert content(original) == b"\x78\x9f\x3e\x22garbage"
