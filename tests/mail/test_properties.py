"""Properties of build_payload on generated messages (hypothesis).

Messages are written by the standard library's email package, which writes correct MIME;
the payload must give back every field that went in: the attachments' bytes exactly, the
names and texts unchanged. And on any bytes at all, build_payload never raises.
"""

from __future__ import annotations

import base64
import json
from email.message import EmailMessage
from email.policy import SMTP

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.payload_schema import assert_valid_payload
from webhooks.payload import AuthResults, Envelope, build_payload

ENVELOPE = Envelope(mail_from="", rcpt_to=["inbox@hooks.example"], client_ip=None, helo=None)
SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Printable text in any script: no control characters or line separators (a header is one
# line; splitlines() would treat those as line ends in a body).
PRINTABLE = st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp", "Co", "Cn"))
words = st.text(PRINTABLE, min_size=1, max_size=40).map(str.strip).filter(bool)
addresses = st.from_regex(r"\A[a-z][a-z0-9.]{0,10}[a-z0-9]@example\.(com|org)\Z")
# Short names: the email package's folder writes the comma between two long encoded
# display names as an encoded word of its own, which no reader can take for a separator.
names = st.text("abcxyzABCXYZ019éüßøЖ中", min_size=1, max_size=10)
lines = st.lists(st.text(PRINTABLE, max_size=80).map(str.rstrip), min_size=1, max_size=8)
attachment = st.tuples(
    st.text(st.characters(whitelist_categories=("L", "N")), min_size=1, max_size=12),
    st.sampled_from(["pdf", "png", "txt", "bin"]),
    st.binary(max_size=2000),
)


def squash(text: str) -> str:
    return " ".join(text.split())


@st.composite
def messages(draw):
    message = EmailMessage(policy=SMTP)
    sender = (draw(names), draw(addresses))
    recipients = draw(st.lists(st.tuples(names, addresses), min_size=1, max_size=2))
    subject = draw(words)
    text = "\n".join(draw(lines)) + "\n"
    message["From"] = f"{sender[0]} <{sender[1]}>"
    message["To"] = ", ".join(f"{name} <{address}>" for name, address in recipients)
    message["Subject"] = subject
    message.set_content(text)
    html = draw(st.none() | words)
    if html is not None:
        message.add_alternative(f"<p>{html}</p>", subtype="html")
    files = []
    for stem, extension, data in draw(st.lists(attachment, max_size=3)):
        files.append((f"{stem}.{extension}", data))
        message.add_attachment(
            data, maintype="application", subtype=extension, filename=files[-1][0]
        )
    # A fixed boundary: the email package would draw one from the random module.
    for number, part in enumerate(message.walk()):
        if part.is_multipart():
            part.set_boundary(f"=_boundary_{number}")
    expected = {
        "from": sender,
        "to": recipients,
        "subject": subject,
        "text": text,
        "html": html,
        "files": files,
    }
    return message.as_bytes(), expected


@SETTINGS
@given(messages())
def test_it_gives_back_every_field_of_a_well_formed_message(generated):
    raw, expected = generated
    payload = build_payload(raw, envelope=ENVELOPE, auth=AuthResults())

    assert_valid_payload(payload)
    assert payload["from"] == {"address": expected["from"][1], "name": expected["from"][0]}
    assert payload["to"] == [{"address": a, "name": n} for n, a in expected["to"]]
    assert squash(payload["subject"]) == squash(expected["subject"])
    assert payload["text"] == expected["text"]
    if expected["html"] is not None:
        assert payload["html"].strip() == f"<p>{expected['html']}</p>"
    files = [(a["filename"], base64.b64decode(a["content"])) for a in payload["attachments"]]
    assert files == expected["files"]
    assert [a["size"] for a in payload["attachments"]] == [len(d) for _, d in expected["files"]]


@SETTINGS
@given(st.binary(max_size=3000))
def test_it_never_raises_on_any_bytes(raw):
    payload = build_payload(raw, envelope=ENVELOPE, auth=AuthResults())
    json.dumps(payload)
    assert_valid_payload(payload)


mime_fragments = st.sampled_from(
    [
        b"Content-Type: multipart/mixed; boundary=b\r\n",
        b'Content-Type: multipart/alternative; boundary="b"\r\n',
        b"Content-Type: message/rfc822\r\n",
        b"Content-Type: application/ms-tnef\r\n",
        b"Content-Transfer-Encoding: base64\r\n",
        b"Content-Transfer-Encoding: quoted-printable\r\n",
        b"Content-Disposition: attachment; filename*0*=utf-8''%C3; filename*1=x\r\n",
        b'From: a <b@c>, (x) "y\\" <z\r\n',
        b"Subject: =?utf-8?b?w6k=?= =?x?q?\xff?=\r\n",
        b"--b\r\n",
        b"--b--\r\n",
        b"\r\n",
        b" folded\r\n",
        b"junk line\r\n",
        b"\xef\xbb\xbf",
        b"SGVsbG8=x\r\n",
    ]
)


@SETTINGS
@given(st.lists(mime_fragments | st.binary(max_size=20), max_size=40))
def test_it_never_raises_on_mime_shaped_garbage(fragments):
    payload = build_payload(b"".join(fragments), envelope=ENVELOPE, auth=AuthResults())
    json.dumps(payload)
    assert_valid_payload(payload)
