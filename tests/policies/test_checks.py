from __future__ import annotations

import ipaddress

import pytest

from policies.checks import (
    DUMMY_PASSWORD_HASH,
    Credential,
    PolicyValueError,
    credentials_valid,
    domain_allowed,
    ip_allowed,
    normalise_domain_list,
    normalise_domain_name,
    normalise_ip_list,
    parse_credentials,
    parse_domain_list,
    parse_ip_networks,
)

# --- parse_ip_networks / normalise_ip_list -----------------------------------------------


def test_it_parses_ips_and_networks_separated_by_commas_spaces_and_newlines():
    networks = parse_ip_networks("10.0.0.0/8, 192.0.2.1\n2001:db8::/32  ::1")

    assert networks == [
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("192.0.2.1/32"),
        ipaddress.ip_network("2001:db8::/32"),
        ipaddress.ip_network("::1/128"),
    ]


def test_it_clears_host_bits_of_a_network():
    assert parse_ip_networks("10.0.0.1/24") == [ipaddress.ip_network("10.0.0.0/24")]


def test_it_returns_no_networks_for_a_blank_value():
    assert parse_ip_networks("  \n , ") == []


def test_it_rejects_every_bad_ip_entry_at_once():
    with pytest.raises(PolicyValueError) as info:
        parse_ip_networks("10.0.0.0/33, 192.0.2.1, not-an-ip", field="allowed_networks")

    assert info.value.field == "allowed_networks"
    assert info.value.messages == [
        "'10.0.0.0/33' is not a valid IP address or CIDR network",
        "'not-an-ip' is not a valid IP address or CIDR network",
    ]
    assert isinstance(info.value, ValueError)


def test_it_normalises_an_ip_list_to_canonical_text():
    value = "192.0.2.1/32\n10.0.0.1/8, 2001:DB8::/32 192.0.2.1 10.0.0.0/8"

    assert normalise_ip_list(value) == "192.0.2.1,10.0.0.0/8,2001:db8::/32"


def test_it_normalises_a_blank_ip_list_to_an_empty_string():
    assert normalise_ip_list("") == ""


# --- ip_allowed -----------------------------------------------------------------------------


def test_it_allows_any_ip_when_no_networks_are_set():
    assert ip_allowed("203.0.113.9", []) is True


def test_it_allows_an_ipv4_client_inside_a_network():
    networks = parse_ip_networks("192.0.2.0/24")

    assert ip_allowed("192.0.2.77", networks) is True
    assert ip_allowed("198.51.100.1", networks) is False


def test_it_allows_an_ipv6_client_inside_a_network():
    networks = parse_ip_networks("2001:db8::/32")

    assert ip_allowed("2001:db8:1::25", networks) is True
    assert ip_allowed("2001:db9::1", networks) is False


def test_it_matches_an_ipv4_mapped_ipv6_client_against_ipv4_networks():
    networks = parse_ip_networks("192.0.2.0/24")

    assert ip_allowed("::ffff:192.0.2.10", networks) is True
    assert ip_allowed("::ffff:198.51.100.10", networks) is False


def test_it_refuses_an_unparsable_client_ip_when_networks_are_set():
    assert ip_allowed("bogus", parse_ip_networks("0.0.0.0/0")) is False


# --- domain names ---------------------------------------------------------------------------


def test_it_normalises_an_international_domain_to_its_a_label():
    assert normalise_domain_name("Bücher.Example") == "xn--bcher-kva.example"


def test_it_lowercases_and_drops_one_trailing_dot():
    assert normalise_domain_name("  Mail.Example.COM. ") == "mail.example.com"


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("example", "needs at least two labels"),
        ("-bad-.com", "must not start or end with a hyphen"),
        ("a..b.com", "empty label"),
        ("192.0.2.1", "is an IP address"),
        ("[2001:db8::1]", "is an IP address"),
        ("a" * 63 + "." + "b" * 63 + "." + "c" * 63 + "." + "d" * 61 + ".com", "longer than 253"),
        ("a" * 64 + ".com", "longer than 63 characters"),
        ("foo_bar.com", "only contain letters, digits and hyphens"),
        ("*.example.com", "wildcards are not supported"),
        ("xn--zz.com", "not valid punycode"),
        ("example.123", "last label cannot be numeric"),
        ("", "Enter a domain name"),
    ],
)
def test_it_rejects_an_invalid_domain_name_with_a_clear_message(value, fragment):
    with pytest.raises(ValueError, match=fragment):
        normalise_domain_name(value)


def test_it_accepts_a_name_of_exactly_253_characters():
    name = "a" * 63 + "." + "b" * 63 + "." + "c" * 63 + "." + "d" * 57 + ".com"
    assert len(name) == 253

    assert normalise_domain_name(name) == name


def test_it_parses_a_domain_list_normalised_and_deduplicated():
    assert parse_domain_list("Example.com, bücher.example\nEXAMPLE.com. other.org") == [
        "example.com",
        "xn--bcher-kva.example",
        "other.org",
    ]


def test_it_rejects_every_bad_domain_in_a_list():
    with pytest.raises(PolicyValueError) as info:
        parse_domain_list("example, good.com, -bad-.com, a..b.com, 10.0.0.1")

    assert info.value.field == "allowed_domains"
    assert len(info.value.messages) == 4
    assert info.value.messages[0].startswith("'example' is not a full domain name")
    assert "'-bad-.com'" in info.value.messages[1]
    assert "'a..b.com'" in info.value.messages[2]
    assert info.value.messages[3].startswith("'10.0.0.1' is an IP address")


def test_it_normalises_a_domain_list_to_comma_separated_text():
    assert normalise_domain_list("B.example\na.example, b.example") == "b.example,a.example"


# --- domain_allowed -------------------------------------------------------------------------


def test_it_allows_any_domain_when_the_list_is_empty():
    assert domain_allowed("anything.example", []) is True
    assert domain_allowed(None, []) is True


def test_it_allows_the_exact_domain_and_its_subdomains():
    allowed = ["example.com"]

    assert domain_allowed("example.com", allowed) is True
    assert domain_allowed("Mail.Example.com.", allowed) is True
    assert domain_allowed("badexample.com", allowed) is False
    assert domain_allowed("example.com.evil.net", allowed) is False


def test_it_refuses_a_missing_sender_domain_when_a_list_is_set():
    assert domain_allowed(None, ["example.com"]) is False
    assert domain_allowed("", ["example.com"]) is False


def test_it_matches_an_international_sender_domain_against_its_a_label():
    assert domain_allowed("post.bücher.example", ["xn--bcher-kva.example"]) is True


# --- parse_credentials ----------------------------------------------------------------------


def test_it_parses_credentials_splitting_on_the_first_colon():
    creds = parse_credentials("alice:correct:horse:battery\nbob:staple-staple-1, carol:********")

    assert creds == [
        Credential(username="alice", password="correct:horse:battery"),
        Credential(username="bob", password="staple-staple-1"),
        Credential(username="carol", password=None),
    ]


def test_it_reports_every_credential_problem_at_once():
    value = "user\nbob:long-enough-pw\nBob:another-long-pw\ncarol:short\n:nobody-password"

    with pytest.raises(PolicyValueError) as info:
        parse_credentials(value)

    assert info.value.field == "credentials"
    assert info.value.messages == [
        "'user' has no password: write it as user:password",
        "duplicate username 'Bob'",
        "password for 'carol' is shorter than 12 characters",
        "an entry has an empty username: write it as user:password",
    ]


def test_it_rejects_an_empty_password_like_a_missing_one():
    with pytest.raises(PolicyValueError) as info:
        parse_credentials("dave:")

    assert info.value.messages == ["'dave' has no password: write it as dave:password"]


def test_it_rejects_a_username_with_whitespace():
    with pytest.raises(PolicyValueError) as info:
        parse_credentials("bob smith:long-enough-pw")

    assert info.value.messages == ["username 'bob smith' must not contain spaces"]


def test_it_never_repeats_a_password_in_error_messages():
    with pytest.raises(PolicyValueError) as info:
        parse_credentials("carol:s3cr3t")

    assert "s3cr3t" not in str(info.value)


def test_it_parses_blank_credentials_as_an_empty_list():
    assert parse_credentials(" \n ") == []


# --- credentials_valid ----------------------------------------------------------------------


class RecordingVerify:
    def __init__(self, good: tuple[str, str]) -> None:
        self.good = good
        self.calls: list[tuple[str, str]] = []

    def __call__(self, password: str, encoded: str) -> bool:
        self.calls.append((password, encoded))
        return (password, encoded) == self.good


def test_it_accepts_the_right_password():
    verify = RecordingVerify(good=("pw-for-alice-1", "hash-a"))

    ok = credentials_valid(
        username="alice", password="pw-for-alice-1", stored={"alice": "hash-a"}, verify=verify
    )

    assert ok is True
    assert verify.calls == [("pw-for-alice-1", "hash-a")]


def test_it_rejects_a_wrong_password():
    verify = RecordingVerify(good=("pw-for-alice-1", "hash-a"))

    ok = credentials_valid(
        username="alice", password="guess", stored={"alice": "hash-a"}, verify=verify
    )

    assert ok is False
    assert verify.calls == [("guess", "hash-a")]


def test_it_runs_verify_against_a_dummy_hash_for_an_unknown_user():
    verify = RecordingVerify(good=("anything", DUMMY_PASSWORD_HASH))

    ok = credentials_valid(
        username="mallory", password="anything", stored={"alice": "hash-a"}, verify=verify
    )

    assert ok is False  # even if the dummy hash "matched"
    assert verify.calls == [("anything", DUMMY_PASSWORD_HASH)]


def test_it_matches_usernames_case_sensitively():
    verify = RecordingVerify(good=("pw-for-alice-1", "hash-a"))

    ok = credentials_valid(
        username="Alice", password="pw-for-alice-1", stored={"alice": "hash-a"}, verify=verify
    )

    assert ok is False
    assert len(verify.calls) == 1


def test_it_uses_a_caller_supplied_dummy_hash():
    verify = RecordingVerify(good=("x", "y"))

    credentials_valid(username="nobody", password="pw", stored={}, verify=verify, dummy_hash="d$1")

    assert verify.calls == [("pw", "d$1")]
