"""Unit tests for webhooks.payload (plain Python: no Django, no database)."""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime

import pytest

from webhooks.compose import build_simulated_message
from webhooks.payload import AuthResults, Envelope, build_payload

ENVELOPE = Envelope(
    mail_from="bounce@sender.example",
    rcpt_to=["inbox@hooks.example"],
    client_ip="203.0.113.7",
    helo="mail.sender.example",
)
AUTH = AuthResults()

PAYLOAD_KEYS = {
    "envelope",
    "from",
    "to",
    "cc",
    "reply_to",
    "subject",
    "date",
    "message_id",
    "in_reply_to",
    "references",
    "thread_id",
    "text",
    "stripped_text",
    "stripped_signature",
    "html",
    "headers",
    "attachments",
    "auto_submitted",
    "bounce",
    "list",
    "authentication",
    "simulated",
}


def crlf(message: bytes) -> bytes:
    """Test messages are written with LF for readability; SMTP delivers CRLF."""
    return message.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def build(raw: bytes, **kwargs) -> dict:
    kwargs.setdefault("envelope", ENVELOPE)
    kwargs.setdefault("auth", AUTH)
    return build_payload(raw, **kwargs)


def decoded_content(attachment: dict) -> bytes:
    return base64.b64decode(attachment["content"])


# --- Test messages ------------------------------------------------------------------------

UTF8_8BIT = crlf(
    b"From: Zo\xc3\xab <zoe@example.com>\n"
    b"To: Bob <bob@example.org>\n"
    b"Subject: Caf\xc3\xa9 tonight?\n"
    b"Date: Thu, 02 Apr 2026 14:00:00 +0200\n"
    b"Message-ID: <8bit-1@example.com>\n"
    b"MIME-Version: 1.0\n"
    b"Content-Type: text/plain; charset=utf-8\n"
    b"Content-Transfer-Encoding: 8bit\n"
    b"\n"
    b"Gr\xc3\xbc\xc3\x9fe aus K\xc3\xb6ln \xe2\x82\xac \xf0\x9f\x98\x80\n"
    b"Second line\n"
)

QUOTED_PRINTABLE = crlf(
    b"From: sender@example.com\n"
    b"To: rcpt@example.org\n"
    b"Subject: qp\n"
    b"MIME-Version: 1.0\n"
    b'Content-Type: text/plain; charset="UTF-8"\n'
    b"Content-Transfer-Encoding: quoted-printable\n"
    b"\n"
    b"Caf=C3=A9 cr=C3=A8me br=C3=BBl=C3=A9e, a soft line break that continues=\n"
    b" here. Equals sign: =3D\n"
)

BASE64_BODY = crlf(
    b"From: sender@example.com\n"
    b"Subject: b64\n"
    b"MIME-Version: 1.0\n"
    b"Content-Type: text/plain; charset=utf-8\n"
    b"Content-Transfer-Encoding: base64\n"
    b"\n" + base64.encodebytes("日本語のテキスト\n二行目です。\n".encode())
)

ENCODED_WORD_HEADERS = crlf(
    b"From: =?ISO-8859-1?Q?Andr=E9?= Pirard <pirard@vm1.ulg.ac.be>\n"
    b'To: =?utf-8?q?Doe=2C_John?= <john@example.org>, "Smith, Anna" <anna@example.org>\n'
    b"Cc: =?UTF-8?B?5bGx55Sw5aSq6YOO?= <taro@example.jp>\n"
    b"Subject: =?ISO-8859-1?Q?Re=3A_R=E9sum=E9?= and\n"
    b" =?UTF-8?B?4oKs?= =?UTF-8?Q?_100?=\n"
    b"\n"
    b"body\n"
)

ALTERNATIVE = crlf(
    b"From: News <news@example.com>\n"
    b"To: reader@example.org\n"
    b"Subject: alternative\n"
    b"MIME-Version: 1.0\n"
    b'Content-Type: multipart/alternative; boundary="alt"\n'
    b"\n"
    b"This is a multi-part message in MIME format.\n"
    b"--alt\n"
    b"Content-Type: text/plain; charset=us-ascii\n"
    b"\n"
    b"Plain version\n"
    b"--alt\n"
    b"Content-Type: text/html; charset=utf-8\n"
    b"Content-Transfer-Encoding: quoted-printable\n"
    b"\n"
    b"<p>HTML <b>version</b> =E2=9C=93</p>\n"
    b"--alt--\n"
)

NESTED = crlf(
    b"From: Alice <alice@example.com>\n"
    b"To: bob@example.org\n"
    b"Subject: nested\n"
    b"MIME-Version: 1.0\n"
    b'Content-Type: multipart/mixed; boundary="mixed"\n'
    b"\n"
    b"--mixed\n"
    b'Content-Type: multipart/related; boundary="rel"; type="multipart/alternative"\n'
    b"\n"
    b"--rel\n"
    b'Content-Type: multipart/alternative; boundary="alt"\n'
    b"\n"
    b"--alt\n"
    b"Content-Type: text/plain; charset=utf-8\n"
    b"Content-Transfer-Encoding: quoted-printable\n"
    b"\n"
    b"See the logo =E2=86=92\n"
    b"--alt\n"
    b"Content-Type: text/html; charset=utf-8\n"
    b"\n"
    b'<p>See the logo <img src="cid:logo.123@example.com"></p>\n'
    b"--alt--\n"
    b"--rel\n"
    b"Content-Type: image/png\n"
    b"Content-Transfer-Encoding: base64\n"
    b"Content-ID: <logo.123@example.com>\n"
    b"\n"
    b"iVBORw0KGgoAAAANSUhEUg==\n"
    b"--rel--\n"
    b"--mixed\n"
    b'Content-Type: application/pdf; name="report.pdf"\n'
    b'Content-Disposition: attachment; filename="report.pdf"\n'
    b"Content-Transfer-Encoding: base64\n"
    b"\n"
    b"JVBERi0xLjQKJcfsj6IK\n"
    b"--mixed--\n"
)

CALENDAR_INVITE = crlf(
    b"From: Organizer <organizer@example.com>\n"
    b"To: attendee@example.org\n"
    b"Subject: Invitation: Planning @ Thu 2 Apr 2026\n"
    b"MIME-Version: 1.0\n"
    b'Content-Type: multipart/mixed; boundary="outer"\n'
    b"\n"
    b"--outer\n"
    b'Content-Type: multipart/alternative; boundary="inner"\n'
    b"\n"
    b"--inner\n"
    b"Content-Type: text/plain; charset=UTF-8\n"
    b"\n"
    b"You have been invited to Planning.\n"
    b"--inner\n"
    b"Content-Type: text/html; charset=UTF-8\n"
    b"\n"
    b"<p>You have been invited to <b>Planning</b>.</p>\n"
    b"--inner\n"
    b"Content-Type: text/calendar; charset=UTF-8; method=REQUEST\n"
    b"Content-Transfer-Encoding: 7bit\n"
    b"\n"
    b"BEGIN:VCALENDAR\n"
    b"METHOD:REQUEST\n"
    b"BEGIN:VEVENT\n"
    b"SUMMARY:Planning\n"
    b"END:VEVENT\n"
    b"END:VCALENDAR\n"
    b"--inner--\n"
    b"--outer\n"
    b'Content-Type: application/ics; name="invite.ics"\n'
    b'Content-Disposition: attachment; filename="invite.ics"\n'
    b"Content-Transfer-Encoding: base64\n"
    b"\n"
    b"QkVHSU46VkNBTEVOREFSDQpFTkQ6VkNBTEVOREFSDQo=\n"
    b"--outer--\n"
)

NON_ASCII_FILENAMES = crlf(
    b"From: sender@example.com\n"
    b"Subject: files\n"
    b"MIME-Version: 1.0\n"
    b'Content-Type: multipart/mixed; boundary="b"\n'
    b"\n"
    b"--b\n"
    b"Content-Type: text/plain\n"
    b"\n"
    b"Two files attached.\n"
    b"--b\n"
    b"Content-Type: application/pdf\n"
    b"Content-Disposition: attachment;\n"
    b" filename*=UTF-8''R%C3%A9sum%C3%A9%20%E2%82%AC.pdf\n"
    b"Content-Transfer-Encoding: base64\n"
    b"\n"
    b"JVBERi0=\n"
    b"--b\n"
    b'Content-Type: application/vnd.ms-excel; name="=?UTF-8?B?0L7RgtGH0ZHRgi54bHM=?="\n'
    b'Content-Disposition: attachment; filename="=?UTF-8?B?0L7RgtGH0ZHRgi54bHM=?="\n'
    b"Content-Transfer-Encoding: base64\n"
    b"\n"
    b"AAECAw==\n"
    b"--b\n"
    b"Content-Type: text/plain; charset=iso-8859-1\n"
    b"Content-Disposition: attachment;\n"
    b" filename*0*=iso-8859-1''na%EFve%20;\n"
    b' filename*1="notes.txt"\n'
    b"\n"
    b"caf\xe9\n"
    b"--b--\n"
)

MALFORMED_HEADERS = crlf(
    b'From: =?utf-8?q?unterminated <bad@@example..com>, "open quote\n'
    b"To: <<<>>>, ,,, @@@, real@example.org\n"
    b"Cc: undisclosed-recipients:;\n"
    b"Date: sometime last week, probably\n"
    b"Subject: =?utf-8?B?###?= =?no-such-charset?Q?caf=E9?= =?utf-8?q?ok?=\n"
    b"Message-ID:\n"
    b"X-Latin1: caf\xe9\n"
    b"\n"
    b"Still delivered.\n"
)

HTML_ONLY = crlf(
    b"From: shop@example.com\n"
    b"Subject: Your order\n"
    b"MIME-Version: 1.0\n"
    b"Content-Type: text/html; charset=windows-1252\n"
    b"\n"
    b"<!DOCTYPE html><html><head><title>Ignored title</title>\n"
    b"<style>p { color: red; }</style></head>\n"
    b"<body><!--[if mso]><p>Outlook only</p><![endif]-->\n"
    b"<h1>Thanks,&nbsp;Zo&euml;!</h1>\n"
    b"<p>Your   order\n   #42 &amp; more</p>\n"
    b"<div>Line one<br>Line two<br/>Line three</div>\n"
    b"<ul><li>Apples</li><li>Pears \x80 5</li></ul>\n"
    b"<table><tr><td>Total</td><td>10</td></tr></table>\n"
    b"<script>if (a < b) { document.write('<p>no</p>'); }</script>\n"
    b"<p>1 < 2 is true</p></body></html>\n"
)

NO_BODY_PARTS = crlf(
    b"From: empty@example.com\n"
    b"To: rcpt@example.org\n"
    b"Subject: nothing inside\n"
    b"MIME-Version: 1.0\n"
    b'Content-Type: multipart/mixed; boundary="empty"\n'
    b"\n"
    b"--empty--\n"
)

FORWARDED = crlf(
    b"From: fwd@example.com\n"
    b"Subject: Fwd: original\n"
    b"MIME-Version: 1.0\n"
    b'Content-Type: multipart/mixed; boundary="f"\n'
    b"\n"
    b"--f\n"
    b"Content-Type: text/plain\n"
    b"\n"
    b"See below.\n"
    b"--f\n"
    b"Content-Type: message/rfc822\n"
    b"Content-Disposition: attachment\n"
    b"\n"
    b"From: original@example.com\n"
    b"Subject: original\n"
    b"\n"
    b"Original body.\n"
    b"--f--\n"
)

APPLE_SPLIT_BODY = crlf(
    b"From: mac@example.com\n"
    b"Subject: split\n"
    b"MIME-Version: 1.0\n"
    b'Content-Type: multipart/mixed; boundary="s"\n'
    b"\n"
    b"--s\n"
    b"Content-Type: text/plain; charset=us-ascii\n"
    b"\n"
    b"Before the picture.\n"
    b"--s\n"
    b'Content-Type: image/jpeg; name="photo.jpg"\n'
    b'Content-Disposition: inline; filename="photo.jpg"\n'
    b"Content-Transfer-Encoding: base64\n"
    b"\n"
    b"/9j/4AAQ\n"
    b"--s\n"
    b"Content-Type: text/plain; charset=us-ascii\n"
    b"Content-Disposition: inline\n"
    b"\n"
    b"After the picture.\n"
    b"--s--\n"
)

ALL_MESSAGES = [
    UTF8_8BIT,
    QUOTED_PRINTABLE,
    BASE64_BODY,
    ENCODED_WORD_HEADERS,
    ALTERNATIVE,
    NESTED,
    CALENDAR_INVITE,
    NON_ASCII_FILENAMES,
    MALFORMED_HEADERS,
    HTML_ONLY,
    NO_BODY_PARTS,
    FORWARDED,
    APPLE_SPLIT_BODY,
]


# --- Bodies and charsets ------------------------------------------------------------------


def test_it_decodes_an_8bit_utf8_body_and_headers():
    payload = build(UTF8_8BIT)

    assert payload["text"] == "Grüße aus Köln € 😀\nSecond line\n"
    assert payload["html"] is None
    assert payload["subject"] == "Café tonight?"
    assert payload["from"] == {"address": "zoe@example.com", "name": "Zoë"}
    assert payload["to"] == [{"address": "bob@example.org", "name": "Bob"}]
    assert payload["attachments"] == []


def test_it_decodes_a_quoted_printable_body():
    payload = build(QUOTED_PRINTABLE)

    assert payload["text"] == (
        "Café crème brûlée, a soft line break that continues here. Equals sign: =\n"
    )


def test_it_decodes_a_base64_body():
    assert build(BASE64_BODY)["text"] == "日本語のテキスト\n二行目です。\n"


def test_it_decodes_iso_8859_1_and_utf8_encoded_word_headers():
    payload = build(ENCODED_WORD_HEADERS)

    assert payload["subject"] == "Re: Résumé and € 100"
    assert payload["from"] == {"address": "pirard@vm1.ulg.ac.be", "name": "André Pirard"}
    assert payload["to"] == [
        {"address": "john@example.org", "name": "Doe, John"},
        {"address": "anna@example.org", "name": "Smith, Anna"},
    ]
    assert payload["cc"] == [{"address": "taro@example.jp", "name": "山田太郎"}]


def test_it_joins_a_multibyte_character_split_across_encoded_words():
    raw = crlf(b"Subject: =?utf-8?b?4o?= =?utf-8?q?=82=AC?= =?utf-8?q?=C3?= =?utf-8?q?=A9?=\n\nx")

    # "\u20ac" is E2 82 AC; "\xe9" is C3 A9: each split across two encoded words.
    assert build(raw)["subject"] == "€é"


def test_it_decodes_iso_8859_1_bodies_as_windows_1252():
    raw = crlf(
        b"Subject: latin\nContent-Type: text/plain; charset=ISO-8859-1\n\n"
        b"na\xefve \x80 \x93quoted\x94\n"
    )

    assert build(raw)["text"] == "naïve € \u201cquoted\u201d\n"


def test_it_decodes_an_unlabelled_8bit_body_as_utf8_then_windows_1252():
    utf8 = crlf(b"Subject: a\n\nK\xc3\xb6ln\n")
    legacy = crlf(b"Subject: b\n\nK\xf6ln \x80\n")

    assert build(utf8)["text"] == "Köln\n"
    assert build(legacy)["text"] == "Köln €\n"


def test_it_falls_back_to_utf8_for_an_unknown_or_bogus_charset():
    unknown = crlf(b"Subject: a\nContent-Type: text/plain; charset=x-klingon\n\nCaf\xc3\xa9\n")
    not_a_charset = crlf(b"Subject: b\nContent-Type: text/plain; charset=zlib\n\nabc\n")
    escape_codec = crlf(b"Subject: c\nContent-Type: text/plain; charset=unicode_escape\n\n\\x41\n")

    assert build(unknown)["text"] == "Café\n"
    assert build(not_a_charset)["text"] == "abc\n"
    assert build(escape_codec)["text"] == "\\x41\n"


def test_it_replaces_invalid_bytes_in_a_declared_charset():
    raw = crlf(b"Subject: a\nContent-Type: text/plain; charset=utf-8\n\nok \xff\xfe end\n")

    assert build(raw)["text"] == "ok \ufffd\ufffd end\n"


def test_it_uses_superset_codecs_for_chinese_and_korean_labels():
    chinese = "中文 𠀀"  # the second character exists only in GB18030, not GB2312
    raw = crlf(
        b"Subject: =?gb2312?b?" + base64.b64encode(chinese.encode("gb18030")) + b"?=\n"
        b"Content-Type: text/plain; charset=gb2312\n\n" + chinese.encode("gb18030")
    )

    payload = build(raw)

    assert payload["subject"] == chinese
    assert payload["text"] == chinese


# --- MIME structure -----------------------------------------------------------------------


def test_it_picks_text_and_html_from_multipart_alternative():
    payload = build(ALTERNATIVE)

    assert payload["text"] == "Plain version"
    assert payload["html"] == "<p>HTML <b>version</b> ✓</p>"
    assert payload["attachments"] == []


def test_it_walks_nested_mixed_related_alternative_with_an_inline_image():
    payload = build(NESTED)

    assert payload["text"] == "See the logo →"
    assert payload["html"] == '<p>See the logo <img src="cid:logo.123@example.com"></p>'
    image, pdf = payload["attachments"]
    assert image == {
        "filename": None,
        "content_type": "image/png",
        "size": 16,
        "content_id": "logo.123@example.com",
        "disposition": "inline",
        "content": "iVBORw0KGgoAAAANSUhEUg==",
        "content_url": None,
        "content_url_expires_at": None,
    }
    assert decoded_content(image) == b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"
    assert pdf["filename"] == "report.pdf"
    assert pdf["content_type"] == "application/pdf"
    assert pdf["disposition"] == "attachment"
    assert pdf["content_id"] is None
    assert decoded_content(pdf) == b"%PDF-1.4\n%\xc7\xec\x8f\xa2\n"
    assert pdf["size"] == 15


def test_it_delivers_a_calendar_invitation_as_an_attachment():
    payload = build(CALENDAR_INVITE)

    assert payload["text"] == "You have been invited to Planning."
    assert payload["html"] == "<p>You have been invited to <b>Planning</b>.</p>"
    calendar, ics_file = payload["attachments"]
    assert calendar["content_type"] == "text/calendar"
    assert calendar["filename"] is None
    assert calendar["disposition"] == "attachment"
    assert decoded_content(calendar) == (
        b"BEGIN:VCALENDAR\r\nMETHOD:REQUEST\r\nBEGIN:VEVENT\r\nSUMMARY:Planning\r\n"
        b"END:VEVENT\r\nEND:VCALENDAR"
    )
    assert calendar["size"] == len(decoded_content(calendar))
    assert ics_file["filename"] == "invite.ics"
    assert ics_file["content_type"] == "application/ics"
    assert decoded_content(ics_file) == b"BEGIN:VCALENDAR\r\nEND:VCALENDAR\r\n"


def test_it_decodes_rfc2231_and_rfc2047_attachment_file_names():
    payload = build(NON_ASCII_FILENAMES)

    assert payload["text"] == "Two files attached."
    pdf, sheet, notes = payload["attachments"]
    assert pdf["filename"] == "Résumé €.pdf"
    assert decoded_content(pdf) == b"%PDF-"
    assert pdf["size"] == 5
    assert sheet["filename"] == "отчёт.xls"
    assert sheet["content_type"] == "application/vnd.ms-excel"
    assert decoded_content(sheet) == b"\x00\x01\x02\x03"
    assert notes["filename"] == "naïve notes.txt"
    assert notes["content_type"] == "text/plain"
    assert decoded_content(notes) == b"caf\xe9"


def test_it_does_not_concatenate_extra_inline_text_parts():
    payload = build(APPLE_SPLIT_BODY)

    assert payload["text"] == "Before the picture."
    photo, after = payload["attachments"]
    assert (photo["filename"], photo["disposition"], photo["size"]) == ("photo.jpg", "inline", 6)
    assert after["content_type"] == "text/plain"
    assert after["disposition"] == "inline"
    assert after["filename"] is None
    assert decoded_content(after) == b"After the picture."


def test_it_delivers_a_forwarded_message_as_a_message_rfc822_attachment():
    payload = build(FORWARDED)

    assert payload["text"] == "See below."
    assert payload["subject"] == "Fwd: original"
    (forwarded,) = payload["attachments"]
    assert forwarded["content_type"] == "message/rfc822"
    assert forwarded["disposition"] == "attachment"
    assert decoded_content(forwarded) == (
        b"From: original@example.com\r\nSubject: original\r\n\r\nOriginal body."
    )


def test_it_defaults_the_disposition_from_the_content_id():
    raw = crlf(
        b"Subject: d\nContent-Type: multipart/mixed; boundary=b\n\n"
        b"--b\nContent-Type: image/gif\nContent-ID: <a@b>\n\nGIF\n"
        b"--b\nContent-Type: application/zip\n\nPK\n"
        b"--b--\n"
    )

    gif, archive = build(raw)["attachments"]

    assert (gif["disposition"], gif["content_id"]) == ("inline", "a@b")
    assert (archive["disposition"], archive["content_id"]) == ("attachment", None)
    assert decoded_content(archive) == b"PK"


def test_it_treats_a_named_text_part_as_an_attachment_not_the_body():
    raw = crlf(
        b"Subject: n\nContent-Type: multipart/mixed; boundary=b\n\n"
        b'--b\nContent-Type: text/plain; name="log.txt"\n\nlog line\n'
        b"--b\nContent-Type: text/plain\n\nthe body\n"
        b"--b--\n"
    )

    payload = build(raw)

    assert payload["text"] == "the body"
    assert [a["filename"] for a in payload["attachments"]] == ["log.txt"]


def test_it_parses_a_non_mime_plain_message():
    raw = b"From: old@example.com\nSubject: no MIME headers\n\nJust text.\nMore text.\n"

    payload = build(raw)

    assert payload["text"] == "Just text.\nMore text.\n"
    assert payload["html"] is None
    assert payload["attachments"] == []


def test_it_treats_a_multipart_without_boundary_as_text():
    raw = crlf(b"Subject: nb\nContent-Type: multipart/mixed\n\nraw body\n")

    payload = build(raw)

    assert payload["text"] == "raw body\n"
    assert payload["attachments"] == []


def test_it_returns_empty_text_for_a_message_without_body_parts():
    payload = build(NO_BODY_PARTS)

    assert payload["text"] == ""
    assert payload["html"] is None
    assert payload["attachments"] == []
    assert payload["subject"] == "nothing inside"


# --- HTML to text -------------------------------------------------------------------------


def test_it_derives_text_from_an_html_only_message():
    payload = build(HTML_ONLY)

    assert payload["html"].startswith("<!DOCTYPE html>")
    assert payload["text"] == (
        "Thanks, Zoë!\n"
        "\n"
        "Your order #42 & more\n"
        "\n"
        "Line one\n"
        "Line two\n"
        "Line three\n"
        "Apples\n"
        "Pears € 5\n"
        "Total 10\n"
        "\n"
        "1 < 2 is true"
    )


def test_it_keeps_preformatted_whitespace_and_counts_each_br():
    raw = crlf(
        b"Subject: pre\nContent-Type: text/html\n\n"
        b"<div><div><div>deep</div></div></div>a<br><br>b<pre>  x  y\n  z</pre>end"
    )

    assert build(raw)["text"] == "deep\na\n\nb\n\n  x  y\n  z\n\nend"


def test_it_recovers_body_text_after_an_unclosed_head():
    raw = crlf(b"Subject: h\nContent-Type: text/html\n\n<head><title>t<body><p>visible</p>")

    assert build(raw)["text"] == "visible"


def test_it_converts_hostile_html_in_linear_time():
    hostile = b"<a " * 50_000 + b"<!--" * 50_000 + b'<a b="' * 50_000
    raw = crlf(b"Subject: slow\nContent-Type: text/html\n\n") + hostile

    started = time.perf_counter()
    payload = build(raw)
    elapsed = time.perf_counter() - started

    assert payload["text"].startswith("<a <a <a")
    assert elapsed < 5  # html.parser alone needs minutes for this input


# --- Headers ------------------------------------------------------------------------------


def test_it_survives_malformed_headers():
    payload = build(MALFORMED_HEADERS)

    assert payload["subject"] == "=?utf-8?B?###?= caféok"
    assert payload["date"] is None
    assert payload["message_id"] is None
    assert payload["to"] == [{"address": "real@example.org", "name": ""}]
    assert payload["cc"] == []
    assert payload["from"] is not None
    assert payload["from"]["address"] == "bad@@example..com"
    assert payload["text"] == "Still delivered.\n"
    assert {"name": "X-Latin1", "value": "café"} in payload["headers"]
    assert {"name": "Date", "value": "sometime last week, probably"} in payload["headers"]


def test_it_keeps_a_broken_encoded_word_verbatim():
    raw = crlf(b"Subject: =?utf-8?q?never closed and =?utf-8?x?bad-encoding?=\n\nx")

    assert build(raw)["subject"] == "=?utf-8?q?never closed and =?utf-8?x?bad-encoding?="


def test_it_repairs_raw_utf8_and_latin1_header_bytes():
    raw = crlf(
        b"From: J\xc3\xb6rg M\xc3\xbcller <j\xc3\xb6rg@b\xc3\xbccher.example>\n"
        b"Subject: UTF-8 \xe2\x9c\x93 then latin-1 caf\xe9\n\nx"
    )

    payload = build(raw)

    assert payload["from"] == {"address": "jörg@bücher.example", "name": "Jörg Müller"}
    assert payload["subject"] == "UTF-8 ✓ then latin-1 café"


def test_it_lists_all_headers_in_order_decoded_with_duplicates():
    raw = crlf(
        b"Received: from a.example by b.example;\n"
        b"\tThu, 02 Apr 2026 12:00:00 +0000\n"
        b"Received: from c.example by a.example\n"
        b"Subject: =?utf-8?q?caf=C3=A9?=\n"
        b"X-Empty:\n"
        b"\n"
        b"x"
    )

    assert build(raw)["headers"] == [
        {
            "name": "Received",
            "value": "from a.example by b.example;\tThu, 02 Apr 2026 12:00:00 +0000",
        },
        {"name": "Received", "value": "from c.example by a.example"},
        {"name": "Subject", "value": "café"},
        {"name": "X-Empty", "value": ""},
    ]


def test_it_reports_missing_headers_as_empty_values():
    payload = build(b"\r\nonly a body\r\n")

    assert payload["from"] is None
    assert payload["to"] == []
    assert payload["cc"] == []
    assert payload["reply_to"] == []
    assert payload["subject"] == ""
    assert payload["date"] is None
    assert payload["message_id"] is None
    assert payload["in_reply_to"] is None
    assert payload["references"] == []
    assert payload["headers"] == []
    assert payload["text"] == "only a body\r\n".replace("\r\n", "\n")


def test_it_extracts_threading_headers():
    raw = crlf(
        b"Message-ID:  <reply.3@example.com> \n"
        b"In-Reply-To: <orig.2@example.com>\n"
        b"References: <root.1@example.com>\n"
        b"  <orig.2@example.com><glued.9@example.com>,<comma.8@example.com>\n"
        b"\n"
        b"x"
    )

    payload = build(raw)

    assert payload["message_id"] == "<reply.3@example.com>"
    assert payload["in_reply_to"] == "<orig.2@example.com>"
    assert payload["references"] == [
        "<root.1@example.com>",
        "<orig.2@example.com>",
        "<glued.9@example.com>",
        "<comma.8@example.com>",
    ]


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (b"Thu, 02 Apr 2026 14:00:00 +0200", "2026-04-02T12:00:00Z"),
        (b"2 Apr 2026 07:00:00 -0500 (EST)", "2026-04-02T12:00:00Z"),
        (b"Thu, 02 Apr 2026 12:00:00 -0000", "2026-04-02T12:00:00Z"),
        (b"Thu, 02 Apr 2026 12:00:00 GMT", "2026-04-02T12:00:00Z"),
        (b"Thu, 31 Dec 2026 23:30:00 -0100", "2027-01-01T00:30:00Z"),
        (b"Thu, 02 Apr 26 12:00:00 +0000", "2026-04-02T12:00:00Z"),
        (b"yesterday", None),
        (b"Thu, 45 Foo 2026 99:99:99 +0000", None),
        (b"", None),
    ],
)
def test_it_normalises_the_date_to_utc_iso_8601(header, expected):
    raw = b"Date: " + header + b"\r\n\r\nx"

    assert build(raw)["date"] == expected


def test_it_parses_address_groups_and_combines_repeated_headers():
    raw = crlf(
        b'To: Team: a@example.com, "B, Bee" <b@example.com>;\n'
        b"To: c@example.com (comment)\n"
        b"Reply-To: =?utf-8?q?Support_=E2=9C=89?= <support@example.com>\n"
        b"\n"
        b"x"
    )

    payload = build(raw)

    assert payload["to"] == [
        {"address": "a@example.com", "name": ""},
        {"address": "b@example.com", "name": "B, Bee"},
        {"address": "c@example.com", "name": "comment"},
    ]
    assert payload["reply_to"] == [{"address": "support@example.com", "name": "Support ✉"}]


def test_it_decodes_many_encoded_words_in_linear_time():
    raw = b"Subject: " + b" ".join([b"=?utf-8?q?caf=C3=A9?="] * 40_000) + b"\r\n\r\nx"

    started = time.perf_counter()
    subject = build(raw)["subject"]
    elapsed = time.perf_counter() - started

    assert subject == "café" * 40_000
    assert elapsed < 5  # the stdlib header parser needs ~40 s for this


# --- Robustness ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x00\xff\xfe\r\n\r\n\x80",
        b"no colon header line\r\n\r\nbody",
        b'Content-Type: text/plain; charset="\r\n\r\nbody',
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\nContent-Type: image/png\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\n!!!not base64!!!\r\n",
        b"Content-Type: text/plain\r\nContent-Transfer-Encoding: x-uuencode\r\n\r\nbegin 644 x\r\n",
        b"Content-Disposition: attachment; filename*=bogus''%ZZ%\r\n\r\nbody",
        b"To: " + b":" * 5000 + b"\r\n\r\nrecursion in getaddresses",
    ],
)
def test_it_never_raises_on_garbage(raw):
    payload = build(raw)

    assert set(payload) == PAYLOAD_KEYS
    assert isinstance(payload["text"], str)
    json.dumps(payload)


def test_it_falls_back_to_plain_text_for_absurdly_deep_nesting():
    depth = 2000
    body = b"".join(
        b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i)
        for i in range(depth)
    )
    raw = b"Subject: deep\r\n" + body + b"Content-Type: text/plain\r\n\r\nhello\r\n"

    payload = build(raw)

    assert payload["subject"] == "deep"
    assert "hello" in payload["text"]


def test_it_limits_work_on_oversized_content_disposition_headers():
    params = b"".join(b"; filename*%d*=utf-8''a%%C3%%A9" % i for i in range(8000))
    raw = crlf(
        b"Content-Type: multipart/mixed; boundary=b\n\n--b\n"
        b"Content-Type: application/pdf\nContent-Disposition: attachment"
    )
    raw += params + b"\r\n\r\nPDF\r\n--b--\r\n"

    started = time.perf_counter()
    (attachment,) = build(raw)["attachments"]
    elapsed = time.perf_counter() - started

    assert attachment["content_type"] == "application/pdf"
    assert attachment["disposition"] == "attachment"
    assert decoded_content(attachment) == b"PDF"
    assert elapsed < 5


@pytest.mark.parametrize("raw", ALL_MESSAGES)
def test_it_always_builds_a_complete_json_serialisable_payload(raw):
    payload = build(raw)

    assert set(payload) == PAYLOAD_KEYS
    assert json.loads(json.dumps(payload)) == payload
    # Strict UTF-8 encoding fails on lone surrogates, which some JSON consumers reject.
    json.dumps(payload, ensure_ascii=False).encode("utf-8")


# --- Envelope, authentication, simulation -------------------------------------------------


def test_it_passes_envelope_auth_and_simulated_through():
    envelope = Envelope(
        mail_from="", rcpt_to=["a@hooks.example", "b@hooks.example"], client_ip=None, helo=None
    )
    dmarc = {
        "result": "fail",
        "domain": "example.com",
        "policy": "reject",
        "record_domain": "example.com",
        "spf_aligned": False,
        "dkim_aligned": False,
    }
    auth = AuthResults(
        spf="softfail",
        dkim=["example.com", "esp.example"],
        smtp_auth_user="api",
        dmarc=dmarc,
        arc="pass",
    )

    payload = build_payload(UTF8_8BIT, envelope=envelope, auth=auth, simulated=True)

    assert payload["envelope"] == {
        "mail_from": "",
        "rcpt_to": ["a@hooks.example", "b@hooks.example"],
        "client_ip": None,
        "helo": None,
    }
    assert payload["authentication"] == {
        "spf": "softfail",
        "dkim": ["example.com", "esp.example"],
        "smtp_auth_user": "api",
        "dmarc": dmarc,
        "arc": "pass",
    }
    assert payload["simulated"] is True
    assert payload["envelope"]["rcpt_to"] is not envelope.rcpt_to
    assert payload["authentication"]["dkim"] is not auth.dkim


def test_it_defaults_to_unchecked_authentication_and_not_simulated():
    payload = build(UTF8_8BIT)

    assert payload["envelope"] == {
        "mail_from": "bounce@sender.example",
        "rcpt_to": ["inbox@hooks.example"],
        "client_ip": "203.0.113.7",
        "helo": "mail.sender.example",
    }
    assert payload["authentication"] == {
        "spf": None,
        "dkim": [],
        "smtp_auth_user": None,
        "dmarc": None,
        "arc": None,
    }
    assert payload["simulated"] is False


def test_it_round_trips_a_simulated_message_with_non_ascii_subject_and_text():
    raw = build_simulated_message(
        mail_from="Zoë <zoe@example.com>",
        to="hooks@example.org",
        subject="Grüße, 日本語 😀",
        text="Héllo wörld\nSecond line €\n",
        message_id="<sim-1@example.com>",
    )

    payload = build_payload(raw, envelope=ENVELOPE, auth=AUTH, simulated=True)

    assert raw.isascii()
    assert payload["subject"] == "Grüße, 日本語 😀"
    assert payload["text"] == "Héllo wörld\nSecond line €\n"
    assert payload["from"] == {"address": "zoe@example.com", "name": "Zoë"}
    assert payload["to"] == [{"address": "hooks@example.org", "name": ""}]
    assert payload["message_id"] == "<sim-1@example.com>"
    assert payload["html"] is None
    assert payload["attachments"] == []
    assert payload["simulated"] is True


def test_it_stamps_simulated_messages_with_a_date_and_message_id():
    before = datetime.now(UTC).replace(microsecond=0)
    raw = build_simulated_message(
        mail_from="sender@example.com", to="hooks@example.org", subject="hi", text="body"
    )
    after = datetime.now(UTC)

    payload = build(raw)

    stamped = datetime.strptime(payload["date"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert before <= stamped <= after
    assert payload["message_id"].startswith("<")
    assert payload["message_id"].endswith("@example.com>")
    assert payload["text"] == "body\n"
    assert b"\r\nMIME-Version: 1.0\r\n" in raw


def test_it_neutralises_header_injection_and_surrogates_in_simulated_input():
    raw = build_simulated_message(
        mail_from="a@example.com\r\nBcc: victim@example.net",
        to="b@example.org",
        subject="line one\nX-Injected: yes \ud800",
        text="lone \udcff surrogate",
        message_id="not a valid id",
    )

    payload = build(raw)

    assert [h["name"] for h in payload["headers"]] == [
        "From",
        "To",
        "Subject",
        "Date",
        "Message-ID",
        "Content-Type",
        "Content-Transfer-Encoding",
        "MIME-Version",
    ]
    assert payload["subject"] == "line one X-Injected: yes \ufffd"
    assert payload["text"] == "lone \ufffd surrogate\n"
    assert payload["message_id"] == "<notavalidid>"


def test_it_writes_non_ascii_addresses_in_simulated_messages_as_utf8():
    raw = build_simulated_message(
        mail_from="Jörg <jörg@bücher.example>",
        to="ünï@exämple.org",
        subject="Grüße",
        text="",
    )

    payload = build(raw)

    assert "jörg@bücher.example".encode() in raw
    assert payload["from"] == {"address": "jörg@bücher.example", "name": "Jörg"}
    assert payload["to"] == [{"address": "ünï@exämple.org", "name": ""}]
    assert payload["subject"] == "Grüße"
    assert payload["text"] == "\n"
    assert payload["message_id"].endswith("@conduit.invalid>")


def test_it_builds_a_simulated_message_from_empty_input():
    raw = build_simulated_message(mail_from="", to="", subject="", text="")

    payload = build(raw)

    assert payload["from"] is None
    assert payload["to"] == []
    assert payload["subject"] == ""
    assert payload["text"] == "\n"
    assert payload["message_id"].endswith("@conduit.invalid>")


def test_it_keeps_every_space_when_folding_a_long_non_ascii_subject():
    # policy.default would fold this into encoded words separated only by the original
    # space, which decoders must drop: "meeting tomorrow" would arrive as "meetingtomorrow".
    subject = (
        "café 日本語 #42 tomorrow order meeting tomorrow café tomorrow Grüße invoice 😀 "
        "Rechnung aus at 😀 ok bitte ok invoice meeting tomorrow"
    )

    raw = build_simulated_message(
        mail_from="a@example.com", to="b@example.org", subject=subject, text="x"
    )

    assert raw.isascii()
    assert max(len(line) for line in raw.split(b"\r\n")) <= 78
    assert build(raw)["subject"] == subject


def test_it_hand_builds_the_simulated_message_when_the_email_package_cannot():
    # The stdlib address parser raises IndexError on this "To"; the fallback writer is used.
    raw = build_simulated_message(
        mail_from="Zoë <zoe@example.com>",
        to='"a" <',
        subject="Grüße aus Köln",
        text="Héllo\r\nwörld",
        message_id="fallback-1@example.com",
    )

    payload = build(raw)

    assert raw.startswith('From: Zoë <zoe@example.com>\r\nTo: "a" <\r\nSubject: =?'.encode())
    assert b"\r\nContent-Transfer-Encoding: quoted-printable\r\n" in raw
    assert payload["from"] == {"address": "zoe@example.com", "name": "Zoë"}
    assert payload["subject"] == "Grüße aus Köln"
    assert payload["text"] == "Héllo\nwörld\n"
    assert payload["message_id"] == "<fallback-1@example.com>"
    assert payload["date"] is not None
