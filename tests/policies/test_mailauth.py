from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import dkim
import pytest

from domains.dns import make_resolver
from policies.mailauth import DkimResult, SpfResult, check_dkim, check_spf
from tests.dnsserver import LocalDNSServer
from tests.mailkeys import shared_rsa_keypair


@pytest.fixture
def resolver(dns_server):
    return make_resolver(servers=dns_server.servers, timeout=2.0)


@pytest.fixture
def short_resolver(dns_server):
    return make_resolver(servers=dns_server.servers, timeout=0.5)


# --- SPF ------------------------------------------------------------------------------------


def test_it_passes_spf_for_an_authorised_ip(dns_server, resolver):
    dns_server.add_txt("example.com", "v=spf1 ip4:127.0.0.1 -all")

    result = check_spf(
        client_ip="127.0.0.1",
        mail_from="alice@example.com",
        helo="mx.example.com",
        resolver=resolver,
    )

    assert result == SpfResult(
        result="pass", domain="example.com", explanation="sender SPF authorized"
    )
    assert ("example.com", "TXT") in {(q.name, q.qtype) for q in dns_server.queries}


def test_it_fails_spf_for_another_ip_under_dash_all(dns_server, resolver):
    dns_server.add_txt("example.com", "v=spf1 ip4:127.0.0.1 -all")

    result = check_spf(
        client_ip="192.0.2.99",
        mail_from="alice@example.com",
        helo="mx.example.com",
        resolver=resolver,
    )

    assert result.result == "fail"
    assert result.domain == "example.com"


def test_it_softfails_spf_under_tilde_all(dns_server, resolver):
    dns_server.add_txt("example.com", "v=spf1 ip4:127.0.0.1 ~all")

    result = check_spf(
        client_ip="192.0.2.99",
        mail_from="alice@example.com",
        helo="mx.example.com",
        resolver=resolver,
    )

    assert result.result == "softfail"


def test_it_returns_none_when_the_domain_has_no_spf_record(dns_server, resolver):
    dns_server.add_txt("example.com", "some-other-verification=1")

    result = check_spf(
        client_ip="127.0.0.1",
        mail_from="alice@example.com",
        helo="mx.example.com",
        resolver=resolver,
    )

    assert result.result == "none"
    assert result.domain == "example.com"


def test_it_follows_a_mechanism_that_needs_more_lookups(dns_server, resolver):
    dns_server.add_txt("example.com", "v=spf1 include:_spf.example.net a:relay.example.com -all")
    dns_server.add_txt("_spf.example.net", "v=spf1 ip4:198.51.100.0/24 -all")
    dns_server.add_a("relay.example.com", "203.0.113.5")

    via_include = check_spf(
        client_ip="198.51.100.7", mail_from="a@example.com", helo="h.example.com", resolver=resolver
    )
    via_a = check_spf(
        client_ip="203.0.113.5", mail_from="a@example.com", helo="h.example.com", resolver=resolver
    )

    assert (via_include.result, via_a.result) == ("pass", "pass")


def test_it_checks_the_helo_domain_for_a_null_sender(dns_server, resolver):
    dns_server.add_txt("mx.sender.example", "v=spf1 ip4:127.0.0.1 -all")

    passing = check_spf(
        client_ip="127.0.0.1", mail_from="", helo="mx.sender.example", resolver=resolver
    )
    failing = check_spf(
        client_ip="192.0.2.1", mail_from="<>", helo="mx.sender.example", resolver=resolver
    )

    assert (passing.result, passing.domain) == ("pass", "mx.sender.example")
    assert (failing.result, failing.domain) == ("fail", "mx.sender.example")


def test_it_returns_none_for_a_null_sender_with_an_address_literal_helo(resolver):
    result = check_spf(client_ip="127.0.0.1", mail_from="", helo="[127.0.0.1]", resolver=resolver)

    assert result == SpfResult(
        result="none", domain="", explanation="null sender and no HELO domain to check"
    )


def test_it_returns_temperror_when_dns_times_out(dns_server, short_resolver):
    dns_server.set_timeout("example.com")

    started = time.monotonic()
    result = check_spf(
        client_ip="127.0.0.1",
        mail_from="alice@example.com",
        helo="mx.example.com",
        resolver=short_resolver,
    )

    assert result.result == "temperror"
    assert result.domain == "example.com"
    assert time.monotonic() - started < 3.0


def test_it_returns_permerror_for_a_broken_record(dns_server, resolver):
    dns_server.add_txt("example.com", "v=spf1 ip4:127.0.0.1 bogus -all")

    result = check_spf(
        client_ip="127.0.0.1",
        mail_from="alice@example.com",
        helo="mx.example.com",
        resolver=resolver,
    )

    assert result.result == "permerror"


def test_it_keeps_concurrent_checks_on_their_own_resolvers(dns_server, resolver):
    dns_server.add_txt("example.com", "v=spf1 ip4:127.0.0.1 -all")
    with LocalDNSServer() as other_server:
        other_server.add_txt("example.com", "v=spf1 ip4:192.0.2.0/24 -all")
        other = make_resolver(servers=other_server.servers, timeout=2.0)

        def run(use_other: bool) -> str:
            return check_spf(
                client_ip="127.0.0.1",
                mail_from="alice@example.com",
                helo="mx.example.com",
                resolver=other if use_other else resolver,
            ).result

        flags = [i % 2 == 1 for i in range(40)]
        with ThreadPoolExecutor(max_workers=8) as pool:
            results = list(pool.map(run, flags))

    assert results == ["fail" if flag else "pass" for flag in flags]


# --- DKIM -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def rsa_key() -> tuple[bytes, str]:
    return shared_rsa_keypair()


MESSAGE = (
    b"From: Alice <alice@example.com>\r\n"
    b"To: inbox@conduit.test\r\n"
    b"Subject: Quarterly report\r\n"
    b"Date: Fri, 21 Nov 2025 10:00:00 +0000\r\n"
    b"Message-ID: <1@example.com>\r\n"
    b"\r\n"
    b"Numbers attached.\r\n"
)


def _signed(message: bytes, pem: bytes, *, selector=b"sel1", domain=b"example.com") -> bytes:
    signature = dkim.sign(message, selector, domain, pem, include_headers=[b"from", b"subject"])
    return signature + message


def _publish_key(server, public_b64: str, name="sel1._domainkey.example.com") -> None:
    server.add_txt(name, f"v=DKIM1; k=rsa; p={public_b64}")


def test_it_serves_the_2048_bit_key_as_several_character_strings(
    dns_server,
    resolver,
    rsa_key,
):
    _pem, public_b64 = rsa_key
    _publish_key(dns_server, public_b64)

    (rdata,) = resolver.resolve("sel1._domainkey.example.com", "TXT")

    assert len(rdata.strings) > 1
    assert b"".join(rdata.strings) == f"v=DKIM1; k=rsa; p={public_b64}".encode()


def test_it_verifies_a_valid_dkim_signature(dns_server, resolver, rsa_key):
    pem, public_b64 = rsa_key
    _publish_key(dns_server, public_b64)

    result = check_dkim(raw=_signed(MESSAGE, pem), resolver=resolver)

    assert result == DkimResult(valid_domains=["example.com"], failures=[], temperror=False)


def test_it_reports_a_tampered_body(dns_server, resolver, rsa_key):
    pem, public_b64 = rsa_key
    _publish_key(dns_server, public_b64)
    tampered = _signed(MESSAGE, pem).replace(b"Numbers attached.", b"Pay this invoice.")

    result = check_dkim(raw=tampered, resolver=resolver)

    assert result.valid_domains == []
    assert result.temperror is False
    assert len(result.failures) == 1
    assert result.failures[0].startswith("DKIM signature 1 (d=example.com, s=sel1): body hash")


def test_it_reports_a_tampered_signed_header(dns_server, resolver, rsa_key):
    pem, public_b64 = rsa_key
    _publish_key(dns_server, public_b64)
    tampered = _signed(MESSAGE, pem).replace(b"Quarterly report", b"Urgent wire transfer")

    result = check_dkim(raw=tampered, resolver=resolver)

    assert result.valid_domains == []
    assert result.failures == [
        "DKIM signature 1 (d=example.com, s=sel1): "
        "signature does not verify (bad signature or unusable key)"
    ]


def test_it_reports_a_missing_key(dns_server, resolver, rsa_key):
    pem, _public_b64 = rsa_key

    result = check_dkim(raw=_signed(MESSAGE, pem), resolver=resolver)

    assert result == DkimResult(
        valid_domains=[],
        failures=[
            "DKIM signature 1 (d=example.com, s=sel1): "
            "no DKIM key published at sel1._domainkey.example.com"
        ],
        temperror=False,
    )


def test_it_reports_temperror_when_the_key_lookup_times_out(
    dns_server,
    short_resolver,
    rsa_key,
):
    pem, _public_b64 = rsa_key
    dns_server.set_timeout("sel1._domainkey.example.com")

    started = time.monotonic()
    result = check_dkim(raw=_signed(MESSAGE, pem), resolver=short_resolver)

    assert result.temperror is True
    assert result.valid_domains == []
    assert result.failures == [
        "DKIM signature 1 (d=example.com, s=sel1): "
        "key lookup at sel1._domainkey.example.com failed temporarily"
    ]
    assert time.monotonic() - started < 3.0


def test_it_checks_every_signature(dns_server, resolver, rsa_key):
    pem, public_b64 = rsa_key
    _publish_key(dns_server, public_b64)
    _publish_key(dns_server, public_b64, name="esp._domainkey.mailer.example")
    once = _signed(MESSAGE, pem)
    twice = _signed(once, pem, selector=b"esp", domain=b"mailer.example")
    thrice = _signed(twice, pem, selector=b"gone", domain=b"other.example")

    result = check_dkim(raw=thrice, resolver=resolver)

    assert result.valid_domains == ["mailer.example", "example.com"]
    assert result.failures == [
        "DKIM signature 1 (d=other.example, s=gone): "
        "no DKIM key published at gone._domainkey.other.example"
    ]


def test_it_returns_an_empty_result_for_an_unsigned_message(resolver):
    assert check_dkim(raw=MESSAGE, resolver=resolver) == DkimResult(
        valid_domains=[], failures=[], temperror=False
    )
