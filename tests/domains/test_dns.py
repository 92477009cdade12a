from __future__ import annotations

import os
import time

import dns.nameserver
import pytest

from domains.dns import CheckFailure, check_domain_ownership, make_resolver, parse_dns_servers

TOKEN = "conduit-verify=4f9c2e7a1b"
MX_HOST = "mx.conduit.email"


@pytest.fixture
def resolver(dns_server):
    return make_resolver(servers=dns_server.servers, timeout=2.0)


def publish_valid(server, domain="example.com"):
    server.add_txt(f"_conduit-verify.{domain}", TOKEN)
    server.add_mx(domain, 10, MX_HOST)


def check(resolver, domain="example.com", **kwargs):
    return check_domain_ownership(
        domain=domain, token=TOKEN, mx_host=MX_HOST, resolver=resolver, **kwargs
    )


# --- success --------------------------------------------------------------------------------


def test_it_verifies_a_domain_with_the_right_txt_and_mx(dns_server, resolver):
    publish_valid(dns_server)

    assert check(resolver) == []


def test_it_finds_the_token_among_several_txt_records(dns_server, resolver):
    dns_server.add_txt("_conduit-verify.example.com", "google-site-verification=abc")
    dns_server.add_txt("_conduit-verify.example.com", TOKEN)
    dns_server.add_mx("example.com", 10, MX_HOST)

    assert check(resolver) == []


def test_it_joins_a_txt_record_split_into_character_strings(dns_server, resolver):
    dns_server.add_txt("_conduit-verify.example.com", TOKEN[:10], TOKEN[10:])
    dns_server.add_mx("example.com", 10, MX_HOST)

    assert check(resolver) == []


def test_it_ignores_case_and_trailing_dots_of_mx_hosts(dns_server, resolver):
    dns_server.add_txt("_conduit-verify.example.com", TOKEN)
    dns_server.add_mx("example.com", 10, "MX.Conduit.EMAIL.")

    failures = check_domain_ownership(
        domain="Example.COM.", token=TOKEN, mx_host="mx.conduit.email.", resolver=resolver
    )

    assert failures == []


def test_it_accepts_a_matching_mx_among_others(dns_server, resolver):
    dns_server.add_txt("_conduit-verify.example.com", TOKEN)
    dns_server.add_mx("example.com", 5, "mx.other.net")
    dns_server.add_mx("example.com", 20, MX_HOST)

    assert check(resolver, mx_priority=20) == []


def test_it_queries_only_the_configured_server(dns_server, resolver):
    publish_valid(dns_server)

    check(resolver)

    assert {(q.name, q.qtype) for q in dns_server.queries} == {
        ("_conduit-verify.example.com", "TXT"),
        ("example.com", "MX"),
    }


# --- failures -------------------------------------------------------------------------------


def test_it_reports_nxdomain_for_both_checks(dns_server, resolver):
    failures = check(resolver, domain="missing.example")

    assert failures == [
        CheckFailure(
            check="txt",
            reason="nxdomain",
            expected=TOKEN,
            found="",
            message=(
                "No TXT record at _conduit-verify.missing.example (NXDOMAIN); "
                f"expected a TXT record with value {TOKEN}"
            ),
        ),
        CheckFailure(
            check="mx",
            reason="nxdomain",
            expected="mx.conduit.email (priority 10)",
            found="",
            message=(
                "No MX record for missing.example (NXDOMAIN); "
                "expected mx.conduit.email (priority 10)"
            ),
        ),
    ]


def test_it_reports_no_answer_when_the_names_exist_without_those_records(
    dns_server,
    resolver,
):
    dns_server.add_a("example.com", "192.0.2.1")
    dns_server.add_a("_conduit-verify.example.com", "192.0.2.1")

    failures = check(resolver)

    assert [(f.check, f.reason) for f in failures] == [("txt", "no_answer"), ("mx", "no_answer")]
    assert failures[0].message == (
        f"No TXT record at _conduit-verify.example.com; expected a TXT record with value {TOKEN}"
    )
    assert failures[1].message == (
        "No MX record for example.com; expected mx.conduit.email (priority 10)"
    )


def test_it_reports_a_wrong_txt_value_with_what_was_found(dns_server, resolver):
    dns_server.add_txt("_conduit-verify.example.com", "conduit-verify=old")
    dns_server.add_txt("_conduit-verify.example.com", "something-else")
    dns_server.add_mx("example.com", 10, MX_HOST)

    failures = check(resolver)

    assert len(failures) == 1
    assert failures[0].check == "txt"
    assert failures[0].reason == "wrong_value"
    assert failures[0].found in (
        '"conduit-verify=old", "something-else"',
        '"something-else", "conduit-verify=old"',
    )
    assert failures[0].message.startswith("TXT records at _conduit-verify.example.com have values")
    assert failures[0].message.endswith(f"expected a TXT record with value {TOKEN}")


def test_it_reports_a_wrong_mx_host_listing_what_was_found(dns_server, resolver):
    dns_server.add_txt("_conduit-verify.example.com", TOKEN)
    dns_server.add_mx("example.com", 10, "mx.other.net")

    failures = check(resolver)

    assert failures == [
        CheckFailure(
            check="mx",
            reason="wrong_host",
            expected="mx.conduit.email (priority 10)",
            found="mx.other.net (priority 10)",
            message=(
                "MX record for example.com points to mx.other.net (priority 10); "
                "expected mx.conduit.email (priority 10)"
            ),
        )
    ]


def test_it_lists_every_wrong_mx_host_sorted_by_priority(dns_server, resolver):
    dns_server.add_txt("_conduit-verify.example.com", TOKEN)
    dns_server.add_mx("example.com", 20, "mx2.other.net")
    dns_server.add_mx("example.com", 10, "mx1.other.net")

    (failure,) = check(resolver)

    assert failure.found == "mx1.other.net (priority 10), mx2.other.net (priority 20)"
    assert failure.message.startswith("MX records for example.com point to mx1.other.net")


def test_it_reports_a_wrong_priority_when_the_host_matches(dns_server, resolver):
    dns_server.add_txt("_conduit-verify.example.com", TOKEN)
    dns_server.add_mx("example.com", 20, MX_HOST)

    failures = check(resolver)

    assert failures == [
        CheckFailure(
            check="mx",
            reason="wrong_priority",
            expected="mx.conduit.email (priority 10)",
            found="mx.conduit.email (priority 20)",
            message=(
                "MX record for example.com points to mx.conduit.email with priority 20; "
                "expected priority 10"
            ),
        )
    ]


def test_it_reports_both_failures_together(dns_server, resolver):
    dns_server.add_txt("_conduit-verify.example.com", "wrong")
    dns_server.add_mx("example.com", 10, "mx.other.net")

    failures = check(resolver)

    assert [(f.check, f.reason) for f in failures] == [("txt", "wrong_value"), ("mx", "wrong_host")]


def test_it_reports_a_timeout_with_the_configured_limit(dns_server):
    dns_server.set_timeout("_conduit-verify.example.com")
    dns_server.add_mx("example.com", 10, MX_HOST)
    resolver = make_resolver(servers=dns_server.servers, timeout=0.3)

    started = time.monotonic()
    failures = check(resolver)
    elapsed = time.monotonic() - started

    assert failures == [
        CheckFailure(
            check="txt",
            reason="timeout",
            expected=TOKEN,
            found="",
            message=(
                "DNS lookup of _conduit-verify.example.com (TXT) timed out after 0.3 s; "
                "try again later"
            ),
        )
    ]
    assert elapsed < 2.0


def test_it_rejects_an_invalid_domain():
    resolver = make_resolver(servers=[("127.0.0.1", 9)], timeout=0.1)

    with pytest.raises(ValueError, match="not a valid domain name"):
        check_domain_ownership(domain="a..b", token=TOKEN, mx_host=MX_HOST, resolver=resolver)


# --- make_resolver --------------------------------------------------------------------------


def test_it_makes_a_resolver_with_per_server_ports():
    resolver = make_resolver(servers=[("127.0.0.1", 5353), ("::1", 53)], timeout=1.5)

    assert [(ns.address, ns.port) for ns in resolver.nameservers] == [
        ("127.0.0.1", 5353),
        ("::1", 53),
    ]
    assert all(isinstance(ns, dns.nameserver.Do53Nameserver) for ns in resolver.nameservers)
    assert resolver.lifetime == 1.5
    assert resolver.timeout == 1.5
    assert resolver.cache is None


@pytest.mark.skipif(not os.path.exists("/etc/resolv.conf"), reason="no system resolver config")
def test_it_makes_a_system_resolver_when_no_servers_are_given():
    resolver = make_resolver(servers=[], timeout=3.0)

    assert resolver.nameservers  # read from /etc/resolv.conf
    assert resolver.lifetime == 3.0


def test_it_rejects_a_non_positive_timeout():
    with pytest.raises(ValueError, match="must be positive"):
        make_resolver(servers=[("127.0.0.1", 53)], timeout=0)


# --- parse_dns_servers ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", []),
        ("  ", []),
        ("127.0.0.1", [("127.0.0.1", 53)]),
        ("127.0.0.1:5353", [("127.0.0.1", 5353)]),
        ("[::1]:5353", [("::1", 5353)]),
        ("[::1]", [("::1", 53)]),
        ("::1", [("::1", 53)]),
        ("[2001:DB8::1]:53", [("2001:db8::1", 53)]),
        ("10.0.0.1:53, 10.0.0.2 ,[::1]:54", [("10.0.0.1", 53), ("10.0.0.2", 53), ("::1", 54)]),
    ],
)
def test_it_parses_dns_server_settings(value, expected):
    assert parse_dns_servers(value) == expected


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("dns.google", "is not an IP address"),
        ("dns.google:53", "is not an IP address"),
        ("127.0.0.1:0", "invalid port"),
        ("127.0.0.1:65536", "invalid port"),
        ("127.0.0.1:dns", "invalid port"),
        ("127.0.0.1:", "empty port"),
        ("[::1]:", "empty port"),
        ("[::1", "without ']'"),
        ("[::1]5353", "expected ':port'"),
        ("[127.0.0.1]:53", "must hold an IPv6 address"),
        ("::1:5353:x", "is not an IP address"),
        ("300.1.1.1", "is not an IP address"),
    ],
)
def test_it_rejects_bad_dns_server_settings(value, fragment):
    with pytest.raises(ValueError, match=fragment):
        parse_dns_servers(value)
