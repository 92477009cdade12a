"""Reply and signature stripping (stripped_text, stripped_signature) on the reply corpus.

tests/mail/replies/ holds replies as the mail clients write them, in the languages
docs/payload.md lists (see its README). Plain tests: no Django, no database.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.payload_schema import assert_valid_payload
from webhooks.mail.reply import MAX_SCAN_CHARS, split_reply
from webhooks.payload import AuthResults, Envelope, build_payload

REPLIES = Path(__file__).parent / "replies"
ENVELOPE = Envelope(
    mail_from="bob@example.org", rcpt_to=["alice@example.com"], client_ip=None, helo=None
)

# file -> (stripped_text, stripped_signature)
EXPECTED = {
    "android-es": ("Llego en diez minutos.", "Enviado desde mi smartphone Samsung Galaxy."),
    "android-gmail-en": ("Sure, I'll bring it.", "Sent from my Galaxy"),
    "android-outlook-en": (
        "Received, thank you.",
        "Get Outlook for Android<https://aka.ms/AAb9ysg>",
    ),
    "apple-mail-en": ("I can do Tuesday instead.", None),
    "apple-mail-ja": ("承知しました。", None),
    "bottom-posted-en": ("6.2, since Friday.", "Bob"),
    "gmail-de": ("Passt, bis morgen.\n\nViele Grüße\nBob", None),
    "gmail-en-wrapped": ("Yes, the numbers look right to me.", "Bob Builder\nBuilder & Sons Ltd."),
    "gmail-en": ("Sounds good, see you at noon.\n\nBob", None),
    "gmail-es": ("Perfecto, nos vemos el martes.", None),
    "gmail-fr": ("D'accord, je m'en occupe.", None),
    "gmail-ja": ("了解しました。明日伺います。", None),
    "gmail-nl": ("Prima, dan plannen we het zo in.", None),
    "gmail-no": ("Det passer fint, vi sees.", None),
    "gmail-pt": ("Combinado, até amanhã.", None),
    "gmail-sv": ("Det låter bra, vi ses då.", None),
    "iphone-de": ("Bin gleich da.", "Von meinem iPhone gesendet"),
    "iphone-en": ("Yes! On my way.", "Sent from my iPhone"),
    "iphone-fr": ("Oui, à tout de suite.", "Envoyé de mon iPhone"),
    "iphone-ja": ("今向かっています。", "iPhoneから送信"),
    "iphone-nl": ("Ik ben er over vijf minuten.", "Verzonden vanaf mijn iPhone"),
    "iphone-no": ("Kommer straks.", "Sendt fra min iPhone"),
    "iphone-pt": ("Já estou a caminho.", "Enviado do meu iPhone"),
    "iphone-sv": ("Kommer strax.", "Skickat från min iPhone"),
    "no-quote-en": (
        "Here is what I found:\nthe build breaks on Tuesdays only.\n\nThanks,\nBob",
        None,
    ),
    "outlook-de": ("Danke, erledigt.", None),
    "outlook-en-html": ("Looks fine to me, ship it.\n\nBob", None),
    "outlook-en-original-message": ("Approved.\n\nBob Builder\nHead of Operations", None),
    "outlook-en": ("Thanks, I'll review it today.\n\nBob", None),
    "outlook-es": ("Recibido, gracias.", None),
    "outlook-fr": ("C'est noté, merci.\n\nBob", None),
    "outlook-ja": ("ありがとうございます。確認します。", None),
    "outlook-nl": ("Dank je, ik kijk ernaar.", None),
    "outlook-no": ("Takk, jeg ser på det.", None),
    "outlook-pt": ("Obrigado, vou verificar.", None),
    "outlook-sv": ("Tack, jag tittar på det.", None),
    "thunderbird-de": (
        "Ich habe die Zahlen geprüft, alles in Ordnung.",
        "Bob Builder\nBuilder GmbH, Musterstraße 1, 12345 Berlin",
    ),
    "thunderbird-en": (
        "Here are my comments inline below the fold; short version: yes.",
        "Bob Builder\nhttps://builder.example.org",
    ),
}


def test_it_covers_every_file_of_the_corpus():
    assert {path.stem for path in REPLIES.glob("*.eml")} == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_it_strips_the_quote_and_the_signature(name):
    payload = build_payload(
        (REPLIES / f"{name}.eml").read_bytes(), envelope=ENVELOPE, auth=AuthResults()
    )
    assert (payload["stripped_text"], payload["stripped_signature"]) == EXPECTED[name]
    assert_valid_payload(payload)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", ("", None)),
        ("Just a note.\n", ("Just a note.", None)),
        # A sentence that ends in a colon is no quote header without a date or an address.
        ("As I wrote:\nthe plan stands.\n", ("As I wrote:\nthe plan stands.", None)),
        # Any line ending in a colon that introduces quoted lines is a quote header.
        ("Fine.\n\nQuelqu'un a dit :\n> bonjour\n", ("Fine.", None)),
        # A forward with nothing above it is all history.
        ("-------- Original Message --------\nFrom: a@example.com\n\nhi\n", ("", None)),
        ("Ok\n-- \n", ("Ok", None)),
        ("Yes\n\n-- \nBob\n\n> On Mon, X <x@y> wrote:\n> q\n", ("Yes", "Bob")),
        # Bottom-posted below a quote header.
        ("On 1 Jan 2024, X <x@example.com> wrote:\n> q?\n\nAnswer.\n", ("Answer.", None)),
        # A "From:" line alone is no Outlook block.
        ("From: the team\nWelcome aboard.\n", ("From: the team\nWelcome aboard.", None)),
    ],
)
def test_it_splits_plain_texts(text, expected):
    assert split_reply(text) == expected


def test_it_reads_only_the_start_of_a_huge_body():
    line = "All figures are in the sheet; see the totals at the bottom.\n"
    huge = line * (4 * MAX_SCAN_CHARS // len(line))
    started = time.perf_counter()
    assert split_reply(huge + "\n> quoted\n") == (huge.strip("\n") + "\n\n> quoted", None)
    assert time.perf_counter() - started < 0.5
    # Within the bound the quote is found.
    assert split_reply("New.\n\n> old\n" + huge) == ("New.", None)
