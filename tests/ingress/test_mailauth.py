"""SPF and DKIM after DATA, against the loopback test DNS server."""

from __future__ import annotations

import pytest

from tests.ingress.conftest import hook, make_policy
from tests.mailkeys import dkim_key_record, dkim_sign, shared_rsa_keypair
from tests.webhooks.test_delivery import wait_for
from webhooks.models import Delivery, InboundMessage

pytestmark = pytest.mark.django_db(transaction=True)

SENDER = "news@sender.example"
MESSAGE = (
    b"From: News <news@sender.example>\r\n"
    b"To: team@alice.example\r\n"
    b"Subject: Signed and sealed\r\n"
    b"Message-ID: <signed@sender.example>\r\n"
    b"\r\n"
    b"This message is what it says it is.\r\n"
)


@pytest.fixture
def dkim_key(dns_server):
    """A key published at sel1._domainkey.sender.example; returns the private PEM."""
    pem, public_b64 = shared_rsa_keypair()
    dns_server.add_txt("sel1._domainkey.sender.example", dkim_key_record(public_b64))
    return pem


@pytest.fixture
def guarded(alice, alice_domain, httpserver, delivery_settings, mailauth_settings):
    """Make team@alice.example's webhook demand what a test names."""

    def guard(**policy_fields):
        policy = make_policy(alice, **policy_fields)
        httpserver.expect_request("/team").respond_with_data("ok")
        return hook(
            alice,
            alice_domain,
            httpserver.url_for("/team"),
            "team@alice.example",
            smtp_security_policy=policy,
        )

    return guard


def send(ingress, raw: bytes = MESSAGE, mail_from: str = SENDER) -> tuple[int, bytes]:
    """MAIL, RCPT and DATA; the reply to DATA."""
    with ingress.smtp() as smtp:
        smtp.ehlo()
        smtp.mail(mail_from)
        code, text = smtp.rcpt("team@alice.example")
        assert code == 250, text
        return smtp.data(raw)


def test_it_delivers_mail_that_passes_spf_and_dkim_with_the_results(
    ingress, guarded, dns_server, dkim_key, httpserver, celery_worker
):
    guarded(require_spf=True, require_dkim=True)
    dns_server.add_txt("sender.example", "v=spf1 ip4:127.0.0.1 -all")

    code, text = send(
        ingress, dkim_sign(MESSAGE, dkim_key, selector="sel1", domain="sender.example")
    )

    assert code == 250, text
    message = InboundMessage.objects.get()
    assert (message.spf_result, message.dkim_domains) == ("pass", ["sender.example"])
    wait_for(lambda: Delivery.objects.filter(status=Delivery.Status.DELIVERED).exists())
    payload = httpserver.log[0][0].get_json()
    # With SPF and DKIM both checked, DMARC and ARC are evaluated too (no record: none).
    assert payload["authentication"] == {
        "spf": "pass",
        "dkim": ["sender.example"],
        "smtp_auth_user": None,
        "dmarc": {
            "result": "none",
            "domain": "sender.example",
            "policy": None,
            "record_domain": None,
            "spf_aligned": False,
            "dkim_aligned": False,
        },
        "arc": "none",
    }


def test_it_refuses_mail_that_fails_spf(ingress, guarded, dns_server):
    guarded(require_spf=True)
    dns_server.add_txt("sender.example", "v=spf1 ip4:192.0.2.1 -all")

    code, text = send(ingress)

    assert code == 550
    assert text.startswith(b"5.7.1 SPF check failed (fail) for sender.example from 127.0.0.1")
    assert not InboundMessage.objects.exists()


def test_it_refuses_mail_without_an_spf_record(ingress, guarded, dns_server):
    guarded(require_spf=True)
    dns_server.add_txt("sender.example", "unrelated-verification=1")

    code, text = send(ingress)

    assert code == 550
    assert text.startswith(b"5.7.1 SPF check failed (none) for sender.example")


def test_it_refuses_an_spf_pass_for_a_domain_the_policy_does_not_allow(
    ingress, guarded, dns_server
):
    guarded(require_spf=True, allowed_spf_domains="partner.example")
    dns_server.add_txt("sender.example", "v=spf1 ip4:127.0.0.1 -all")

    code, text = send(ingress)

    assert code == 550
    assert text == (
        b"5.7.1 SPF passed for sender.example, which this address does not accept mail from"
    )


def test_it_accepts_an_spf_pass_for_a_subdomain_of_an_allowed_domain(ingress, guarded, dns_server):
    guarded(require_spf=True, allowed_spf_domains="sender.example")
    dns_server.add_txt("bounces.sender.example", "v=spf1 ip4:127.0.0.1 -all")

    code, _ = send(ingress, mail_from="list@bounces.sender.example")

    assert code == 250
    assert InboundMessage.objects.get().spf_result == "pass"


def test_it_refuses_mail_whose_dkim_signature_does_not_verify(ingress, guarded, dkim_key):
    guarded(require_dkim=True)
    signed = dkim_sign(MESSAGE, dkim_key, selector="sel1", domain="sender.example")
    tampered = signed.replace(b"what it says it is", b"a forgery, honestly")

    code, text = send(ingress, tampered)

    assert code == 550
    assert text.startswith(b"5.7.1 DKIM check failed: DKIM signature 1 (d=sender.example, s=sel1)")
    assert not InboundMessage.objects.exists()


def test_it_refuses_unsigned_mail_when_dkim_is_required(ingress, guarded):
    guarded(require_dkim=True)

    code, text = send(ingress)

    assert (code, text) == (550, b"5.7.1 DKIM check failed: no DKIM signature")


def test_it_refuses_a_dkim_signature_from_a_domain_the_policy_does_not_allow(
    ingress, guarded, dkim_key
):
    guarded(require_dkim=True, allowed_dkim_domains="partner.example")

    code, text = send(
        ingress, dkim_sign(MESSAGE, dkim_key, selector="sel1", domain="sender.example")
    )

    assert code == 550
    assert text == (
        b"5.7.1 DKIM check failed: signed by sender.example, which this address does not accept"
    )


def test_it_asks_the_sender_to_retry_when_spf_dns_times_out(ingress, guarded, dns_server):
    guarded(require_spf=True)
    dns_server.set_timeout("sender.example")

    code, text = send(ingress)

    assert code == 451
    assert text.startswith(b"4.7.0 Temporary DNS failure checking SPF")
    assert not InboundMessage.objects.exists()


def test_it_asks_the_sender_to_retry_when_the_dkim_key_lookup_times_out(
    ingress, guarded, dns_server, dkim_key
):
    guarded(require_dkim=True)
    dns_server.clear()  # the key is gone: its lookup never gets an answer
    dns_server.set_timeout("sel1._domainkey.sender.example")

    code, text = send(
        ingress, dkim_sign(MESSAGE, dkim_key, selector="sel1", domain="sender.example")
    )

    assert code == 451
    assert text.startswith(b"4.7.0 Temporary DNS failure checking DKIM")
    assert not InboundMessage.objects.exists()


# --- DMARC -----------------------------------------------------------------------------------


def test_it_delivers_mail_that_passes_dmarc_with_the_verdict(
    ingress, guarded, dns_server, dkim_key, httpserver, celery_worker
):
    guarded(require_dmarc=True)
    dns_server.add_txt("_dmarc.sender.example", "v=DMARC1; p=reject; adkim=s")
    # SPF passes for another domain (an ESP's bounce address); the aligned DKIM carries it.
    dns_server.add_txt("esp.example", "v=spf1 ip4:127.0.0.1 -all")

    code, text = send(
        ingress,
        dkim_sign(MESSAGE, dkim_key, selector="sel1", domain="sender.example"),
        mail_from="bounce@esp.example",
    )

    assert code == 250, text
    message = InboundMessage.objects.get()
    assert (message.spf_result, message.dkim_domains, message.arc_result) == (
        "pass",
        ["sender.example"],
        "none",
    )
    wait_for(lambda: Delivery.objects.filter(status=Delivery.Status.DELIVERED).exists())
    payload = httpserver.log[0][0].get_json()
    assert payload["authentication"]["dmarc"] == {
        "result": "pass",
        "domain": "sender.example",
        "policy": "reject",
        "record_domain": "sender.example",
        "spf_aligned": False,
        "dkim_aligned": True,
    }


def test_it_refuses_mail_that_fails_dmarc_with_the_reason(ingress, guarded, dns_server):
    guarded(require_dmarc=True)
    dns_server.add_txt("_dmarc.sender.example", "v=DMARC1; p=quarantine")
    dns_server.add_txt("esp.example", "v=spf1 ip4:127.0.0.1 -all")

    code, text = send(ingress, mail_from="bounce@esp.example")

    assert code == 550
    assert text.decode() == (
        "5.7.1 DMARC check failed (fail): neither SPF (pass for esp.example) nor DKIM "
        "(no valid signature) passed aligned with sender.example (policy p=quarantine)"
    )
    assert not InboundMessage.objects.exists()


def test_it_refuses_mail_from_a_domain_without_dmarc(ingress, guarded, dns_server):
    guarded(require_dmarc=True)
    dns_server.add_txt("sender.example", "v=spf1 ip4:127.0.0.1 -all")

    code, text = send(ingress)

    assert code == 550
    assert text.startswith(b"5.7.1 DMARC check failed (none): sender.example publishes no DMARC")


def test_it_passes_dmarc_on_relaxed_spf_alignment_under_the_organisational_record(
    ingress, guarded, dns_server
):
    guarded(require_dmarc=True)
    dns_server.add_txt("_dmarc.sender.example", "v=DMARC1; p=reject")
    dns_server.add_txt("bounces.sender.example", "v=spf1 ip4:127.0.0.1 -all")

    code, text = send(ingress, mail_from="b@bounces.sender.example")

    assert code == 250, text
    dmarc = InboundMessage.objects.get().dmarc_result
    assert (dmarc["result"], dmarc["spf_aligned"]) == ("pass", True)


def test_it_defers_mail_when_the_dmarc_record_cannot_be_fetched(ingress, guarded, dns_server):
    guarded(require_dmarc=True)
    dns_server.add_txt("sender.example", "v=spf1 ip4:127.0.0.1 -all")
    dns_server.set_timeout("_dmarc.sender.example")

    code, text = send(ingress)

    assert code == 451
    assert text == b"4.7.0 Temporary DNS failure checking DMARC; try again later"


def test_a_burst_from_one_domain_looks_the_dmarc_record_up_once(ingress, guarded, dns_server):
    guarded(require_dmarc=True)
    dns_server.add_txt("_dmarc.sender.example", "v=DMARC1; p=reject")
    dns_server.add_txt("sender.example", "v=spf1 ip4:127.0.0.1 -all")

    for _ in range(5):
        code, text = send(ingress)
        assert code == 250, text

    assert InboundMessage.objects.count() == 5
    dmarc_queries = [q for q in dns_server.queries if q.name.rstrip(".") == "_dmarc.sender.example"]
    assert len(dmarc_queries) == 1


def test_it_does_not_look_dmarc_up_when_no_policy_asks(
    ingress,
    alice,
    alice_domain,
    httpserver,
    delivery_settings,
    mailauth_settings,
    dns_server,
    celery_worker,
):
    httpserver.expect_request("/team").respond_with_data("ok")
    hook(alice, alice_domain, httpserver.url_for("/team"), "team@alice.example")

    code, text = send(ingress)

    assert code == 250, text
    wait_for(lambda: Delivery.objects.filter(status=Delivery.Status.DELIVERED).exists())
    assert dns_server.queries == []
    authentication = httpserver.log[0][0].get_json()["authentication"]
    assert (authentication["dmarc"], authentication["arc"]) == (None, None)
