"""IP lists are read by one rule (conduit.ipnets), whoever reads them: API token
allow-lists, trusted proxies and SMTP source-IP policies."""

from __future__ import annotations

import ast
import ipaddress
from pathlib import Path

import pytest

from accounts.services import normalise_ip_entries
from conduit import ipnets
from policies.checks import PolicyValueError, normalise_ip_list, parse_ip_networks

ROOT = Path(__file__).resolve().parent.parent
APPS = ("accounts", "conduit", "domains", "ingress", "policies", "webhooks")

ENTRIES = [" 192.0.2.1/32", "10.0.0.1/8", "2001:DB8::/32", "192.0.2.1", "10.0.0.0/8", "::1"]
CANONICAL = ["192.0.2.1", "10.0.0.0/8", "2001:db8::/32", "::1"]


def test_it_reads_ips_and_cidrs_deduplicated_in_first_seen_order():
    assert ipnets.parse_networks(ENTRIES) == [
        ipaddress.ip_network("192.0.2.1/32"),
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("2001:db8::/32"),
        ipaddress.ip_network("::1/128"),
    ]
    assert ipnets.normalise_networks(ENTRIES) == CANONICAL


def test_it_names_every_bad_entry():
    with pytest.raises(ipnets.BadNetworks) as info:
        ipnets.parse_networks(["10.0.0.0/33", "192.0.2.1", " not-an-ip ", ""])

    assert info.value.entries == ["10.0.0.0/33", "not-an-ip"]


def test_every_reader_of_an_ip_list_follows_the_one_rule():
    """Token allow-lists, trusted proxies and policies give the same networks."""
    assert normalise_ip_entries(ENTRIES) == CANONICAL
    assert normalise_ip_list(",".join(ENTRIES)) == ",".join(CANONICAL)
    assert parse_ip_networks(" ".join(e.strip() for e in ENTRIES)) == ipnets.parse_networks(ENTRIES)
    assert list(ipnets.to_networks(ENTRIES)) == ipnets.parse_networks(ENTRIES)


def test_every_reader_refuses_the_same_entries():
    bad = ["10.0.0.0/33"]
    with pytest.raises(ipnets.BadNetworks):
        ipnets.to_networks(bad)
    with pytest.raises(ValueError, match=r"'10\.0\.0\.0/33' is not an IP address or CIDR network"):
        normalise_ip_entries(bad)
    with pytest.raises(PolicyValueError):
        normalise_ip_list(bad[0])


def _network_parsing_calls(path: Path) -> list[int]:
    """Lines calling ipaddress.ip_network on something other than a literal."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "ip_network"
            and not all(isinstance(arg, ast.Constant) for arg in node.args)
        ):
            lines.append(node.lineno)
    return lines


def test_no_module_but_ipnets_parses_ip_lists():
    found = {
        str(path.relative_to(ROOT)): lines
        for app in APPS
        for path in (ROOT / app).rglob("*.py")
        if path != ROOT / "conduit" / "ipnets.py" and (lines := _network_parsing_calls(path))
    }
    assert found == {}, f"parse IP lists with conduit.ipnets, not ipaddress.ip_network: {found}"
