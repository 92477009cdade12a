"""DMARC (policies.mailauth.check_dmarc) and ARC (check_arc) against the loopback DNS server."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import dkim
import pytest

from domains.dns import make_resolver
from policies.mailauth import (
    DMARC_CACHE,
    SpfResult,
    check_arc,
    check_dmarc,
    from_domain,
    organizational_domain,
)
from tests.mailkeys import dkim_key_record, shared_rsa_keypair

MESSAGE = (
    b"From: News <news@sender.example>\r\n"
    b"To: team@alice.example\r\n"
    b"Subject: Quarterly news\r\n"
    b"\r\n"
    b"All is well.\r\n"
)
SPF_NONE = SpfResult(result="none", domain="", explanation="")


@pytest.fixture
def resolver(dns_server):
    return make_resolver(servers=dns_server.servers, timeout=1.0)


def spf_pass(domain: str) -> SpfResult:
    return SpfResult(result="pass", domain=domain, explanation="")


def dmarc(resolver, *, raw=MESSAGE, spf=SPF_NONE, dkim_domains=()):
    return check_dmarc(raw=raw, spf=spf, dkim_domains=list(dkim_domains), resolver=resolver)


def test_it_passes_when_dkim_aligns(dns_server, resolver):
    dns_server.add_txt("_dmarc.sender.example", "v=DMARC1; p=reject")

    result = dmarc(resolver, dkim_domains=["sender.example"])

    assert result.as_payload() == {
        "result": "pass",
        "domain": "sender.example",
        "policy": "reject",
        "record_domain": "sender.example",
        "spf_aligned": False,
        "dkim_aligned": True,
    }


def test_it_passes_when_spf_aligns_relaxed_with_a_subdomain(dns_server, resolver):
    dns_server.add_txt("_dmarc.sender.example", "v=DMARC1; p=quarantine")

    result = dmarc(resolver, spf=spf_pass("bounces.sender.example"))

    assert (result.result, result.spf_aligned, result.dkim_aligned) == ("pass", True, False)


def test_it_fails_a_subdomain_under_strict_alignment(dns_server, resolver):
    dns_server.add_txt("_dmarc.sender.example", "v=DMARC1; p=reject; aspf=s; adkim=s")

    result = dmarc(
        resolver, spf=spf_pass("bounces.sender.example"), dkim_domains=["mail.sender.example"]
    )

    assert (result.result, result.spf_aligned, result.dkim_aligned) == ("fail", False, False)
    assert "neither SPF (pass for bounces.sender.example) nor DKIM" in result.explanation


def test_it_fails_when_only_another_domain_passes(dns_server, resolver):
    dns_server.add_txt("_dmarc.sender.example", "v=DMARC1; p=reject")

    result = dmarc(resolver, spf=spf_pass("esp.example"), dkim_domains=["esp.example"])

    assert (result.result, result.policy) == ("fail", "reject")


def test_it_falls_back_to_the_organisational_domain_and_its_subdomain_policy(dns_server, resolver):
    dns_server.add_txt("_dmarc.sender.example", "v=DMARC1; p=reject; sp=quarantine")
    raw = MESSAGE.replace(b"news@sender.example", b"news@mail.sender.example")

    result = dmarc(resolver, raw=raw, dkim_domains=["sender.example"])

    assert result.as_payload() == {
        "result": "pass",
        "domain": "mail.sender.example",
        "policy": "quarantine",
        "record_domain": "sender.example",
        "spf_aligned": False,
        "dkim_aligned": True,
    }


def test_it_uses_the_public_suffix_list_for_the_organisational_domain():
    assert organizational_domain("mail.sender.co.uk") == "sender.co.uk"
    assert organizational_domain("a.b.sender.example") == "sender.example"


def test_it_says_none_when_no_record_is_published(dns_server, resolver):
    dns_server.add_txt("_dmarc.sender.example", "v=spf1 -all")  # not a DMARC record

    result = dmarc(resolver, dkim_domains=["sender.example"])

    assert (result.result, result.policy, result.dkim_aligned) == ("none", None, False)


def test_it_ignores_two_records_at_once(dns_server, resolver):
    dns_server.add_txt("_dmarc.sender.example", "v=DMARC1; p=reject")
    dns_server.add_txt("_dmarc.sender.example", "v=DMARC1; p=none")

    assert dmarc(resolver, dkim_domains=["sender.example"]).result == "none"


def test_it_is_a_permerror_without_a_single_from_domain(resolver):
    two = b"From: a@one.example, b@two.example\r\n\r\nhi\r\n"
    assert dmarc(resolver, raw=two).result == "permerror"
    assert from_domain(b"Subject: none\r\n\r\nhi\r\n") is None
    assert from_domain(b"From: =?utf-8?q?Z=C3=B6e?= <zoe@Sender.Example>\r\n\r\n") == (
        "sender.example"
    )


def test_it_is_a_temperror_when_the_record_cannot_be_fetched(dns_server):
    dns_server.set_timeout("_dmarc.sender.example")
    short = make_resolver(servers=dns_server.servers, timeout=0.3)

    result = dmarc(short, dkim_domains=["sender.example"])

    assert result.result == "temperror"
    # A transient failure is not cached: the next message asks again.
    dns_server.clear()
    dns_server.add_txt("_dmarc.sender.example", "v=DMARC1; p=none")
    assert dmarc(short, dkim_domains=["sender.example"]).result == "pass"


def _dmarc_queries(dns_server) -> int:
    return sum(1 for q in dns_server.queries if q.name.rstrip(".").startswith("_dmarc."))


def test_a_burst_from_one_domain_costs_one_lookup(dns_server, resolver):
    dns_server.add_txt("_dmarc.sender.example", "v=DMARC1; p=reject")

    with ThreadPoolExecutor(8) as pool:
        results = list(
            pool.map(lambda _: dmarc(resolver, dkim_domains=["sender.example"]), range(40))
        )

    assert {r.result for r in results} == {"pass"}
    assert _dmarc_queries(dns_server) == 1
    DMARC_CACHE.clear()
    dmarc(resolver, dkim_domains=["sender.example"])
    assert _dmarc_queries(dns_server) == 2


def test_the_absence_of_a_record_is_cached_too(dns_server, resolver):
    for _ in range(5):
        assert dmarc(resolver, dkim_domains=["sender.example"]).result == "none"
    # _dmarc.sender.example once (the organisational domain is the same name).
    assert _dmarc_queries(dns_server) == 1


# --- ARC -----------------------------------------------------------------------------------


@pytest.fixture
def arc_sealed(dns_server):
    """MESSAGE as a list server forwards it: its verdict in Authentication-Results, sealed."""
    pem, public_b64 = shared_rsa_keypair()
    dns_server.add_txt("arc._domainkey.lists.example", dkim_key_record(public_b64))
    raw = (
        b"Authentication-Results: lists.example; dkim=pass header.d=sender.example;"
        b" spf=pass smtp.mailfrom=sender.example\r\n" + MESSAGE
    )
    headers = dkim.arc_sign(raw, b"arc", b"lists.example", pem, b"lists.example")
    return b"".join(headers) + raw


def test_it_passes_an_intact_arc_chain(arc_sealed, resolver):
    assert check_arc(raw=arc_sealed, resolver=resolver) == "pass"


def test_it_fails_an_arc_chain_over_a_changed_body(arc_sealed, resolver):
    assert check_arc(
        raw=arc_sealed.replace(b"All is well.", b"All is lost."), resolver=resolver
    ) == ("fail")


def test_it_says_none_without_arc_headers(resolver):
    assert check_arc(raw=MESSAGE, resolver=resolver) == "none"
