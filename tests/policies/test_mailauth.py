from __future__ import annotations

import base64
import secrets
import time
from concurrent.futures import ThreadPoolExecutor

import dkim
import pytest

from domains.dns import make_resolver
from policies.mailauth import DkimResult, SpfResult, check_dkim, check_spf
from tests.dns_fixtures import dns_server  # noqa: F401
from tests.dnsserver import LocalDNSServer


@pytest.fixture
def resolver(dns_server):  # noqa: F811
    return make_resolver(servers=dns_server.servers, timeout=2.0)


@pytest.fixture
def short_resolver(dns_server):  # noqa: F811
    return make_resolver(servers=dns_server.servers, timeout=0.5)


# --- SPF ------------------------------------------------------------------------------------


def test_it_passes_spf_for_an_authorised_ip(dns_server, resolver):  # noqa: F811
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


def test_it_fails_spf_for_another_ip_under_dash_all(dns_server, resolver):  # noqa: F811
    dns_server.add_txt("example.com", "v=spf1 ip4:127.0.0.1 -all")

    result = check_spf(
        client_ip="192.0.2.99",
        mail_from="alice@example.com",
        helo="mx.example.com",
        resolver=resolver,
    )

    assert result.result == "fail"
    assert result.domain == "example.com"


def test_it_softfails_spf_under_tilde_all(dns_server, resolver):  # noqa: F811
    dns_server.add_txt("example.com", "v=spf1 ip4:127.0.0.1 ~all")

    result = check_spf(
        client_ip="192.0.2.99",
        mail_from="alice@example.com",
        helo="mx.example.com",
        resolver=resolver,
    )

    assert result.result == "softfail"


def test_it_returns_none_when_the_domain_has_no_spf_record(dns_server, resolver):  # noqa: F811
    dns_server.add_txt("example.com", "some-other-verification=1")

    result = check_spf(
        client_ip="127.0.0.1",
        mail_from="alice@example.com",
        helo="mx.example.com",
        resolver=resolver,
    )

    assert result.result == "none"
    assert result.domain == "example.com"


def test_it_follows_a_mechanism_that_needs_more_lookups(dns_server, resolver):  # noqa: F811
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


def test_it_checks_the_helo_domain_for_a_null_sender(dns_server, resolver):  # noqa: F811
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


def test_it_returns_temperror_when_dns_times_out(dns_server, short_resolver):  # noqa: F811
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


def test_it_returns_permerror_for_a_broken_record(dns_server, resolver):  # noqa: F811
    dns_server.add_txt("example.com", "v=spf1 ip4:127.0.0.1 bogus -all")

    result = check_spf(
        client_ip="127.0.0.1",
        mail_from="alice@example.com",
        helo="mx.example.com",
        resolver=resolver,
    )

    assert result.result == "permerror"


def test_it_keeps_concurrent_checks_on_their_own_resolvers(dns_server, resolver):  # noqa: F811
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
# No `cryptography` in the venv: make a real RSA key in pure Python and DER-encode it.

_SMALL_PRIMES = [p for p in range(3, 2000) if all(p % d for d in range(2, int(p**0.5) + 1))]


def _is_probable_prime(n: int) -> bool:
    if any(n % p == 0 for p in _SMALL_PRIMES):
        return n in _SMALL_PRIMES
    d, r = n - 1, 0
    while d % 2 == 0:
        d, r = d // 2, r + 1
    for _ in range(20):
        x = pow(secrets.randbelow(n - 3) + 2, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(r - 1):
            x = pow(x, 2, n)
            if x == n - 1:
                break
        else:
            return False
    return True


def _prime(bits: int) -> int:
    while True:
        candidate = secrets.randbits(bits) | (1 << (bits - 1)) | (1 << (bits - 2)) | 1
        if _is_probable_prime(candidate):
            return candidate


def _der_len(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def _der(tag: int, body: bytes) -> bytes:
    return bytes([tag]) + _der_len(len(body)) + body


def _der_int(n: int) -> bytes:
    return _der(0x02, n.to_bytes(n.bit_length() // 8 + 1, "big"))


def _rsa_keypair(bits: int = 2048) -> tuple[bytes, str]:
    """(PKCS#1 PEM private key, base64 SubjectPublicKeyInfo for the p= tag)."""
    e = 65537
    while True:
        p, q = _prime(bits // 2), _prime(bits // 2)
        phi = (p - 1) * (q - 1)
        if p != q and phi % e:
            break
    n, d = p * q, pow(e, -1, phi)
    private = _der(
        0x30,
        b"".join(_der_int(v) for v in (0, n, e, d, p, q, d % (p - 1), d % (q - 1), pow(q, -1, p))),
    )
    pem_body = base64.encodebytes(private).replace(b"\n", b"")
    lines = b"\n".join(pem_body[i : i + 64] for i in range(0, len(pem_body), 64))
    pem = b"-----BEGIN RSA PRIVATE KEY-----\n" + lines + b"\n-----END RSA PRIVATE KEY-----\n"
    rsa_public = _der(0x30, _der_int(n) + _der_int(e))
    algorithm = _der(0x30, _der(0x06, bytes.fromhex("2a864886f70d010101")) + _der(0x05, b""))
    spki = _der(0x30, algorithm + _der(0x03, b"\x00" + rsa_public))
    return pem, base64.b64encode(spki).decode("ascii")


@pytest.fixture(scope="module")
def rsa_key() -> tuple[bytes, str]:
    return _rsa_keypair(2048)


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
    dns_server,  # noqa: F811
    resolver,
    rsa_key,
):
    _pem, public_b64 = rsa_key
    _publish_key(dns_server, public_b64)

    (rdata,) = resolver.resolve("sel1._domainkey.example.com", "TXT")

    assert len(rdata.strings) > 1
    assert b"".join(rdata.strings) == f"v=DKIM1; k=rsa; p={public_b64}".encode()


def test_it_verifies_a_valid_dkim_signature(dns_server, resolver, rsa_key):  # noqa: F811
    pem, public_b64 = rsa_key
    _publish_key(dns_server, public_b64)

    result = check_dkim(raw=_signed(MESSAGE, pem), resolver=resolver)

    assert result == DkimResult(valid_domains=["example.com"], failures=[], temperror=False)


def test_it_reports_a_tampered_body(dns_server, resolver, rsa_key):  # noqa: F811
    pem, public_b64 = rsa_key
    _publish_key(dns_server, public_b64)
    tampered = _signed(MESSAGE, pem).replace(b"Numbers attached.", b"Pay this invoice.")

    result = check_dkim(raw=tampered, resolver=resolver)

    assert result.valid_domains == []
    assert result.temperror is False
    assert len(result.failures) == 1
    assert result.failures[0].startswith("DKIM signature 1 (d=example.com, s=sel1): body hash")


def test_it_reports_a_tampered_signed_header(dns_server, resolver, rsa_key):  # noqa: F811
    pem, public_b64 = rsa_key
    _publish_key(dns_server, public_b64)
    tampered = _signed(MESSAGE, pem).replace(b"Quarterly report", b"Urgent wire transfer")

    result = check_dkim(raw=tampered, resolver=resolver)

    assert result.valid_domains == []
    assert result.failures == [
        "DKIM signature 1 (d=example.com, s=sel1): "
        "signature does not verify (bad signature or unusable key)"
    ]


def test_it_reports_a_missing_key(dns_server, resolver, rsa_key):  # noqa: F811
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
    dns_server,  # noqa: F811
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


def test_it_checks_every_signature(dns_server, resolver, rsa_key):  # noqa: F811
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
