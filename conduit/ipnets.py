"""Is an address inside a set of networks: the one rule, shared by API token
allow-lists, trusted proxies and SMTP source-IP policies. No Django inside."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def to_networks(entries: Iterable[str]) -> tuple[IPNetwork, ...]:
    """IPs and CIDRs (host bits allowed) as networks; ValueError on a bad entry."""
    return tuple(ipaddress.ip_network(entry.strip(), strict=False) for entry in entries)


def ip_in_networks(ip: str | None, networks: Iterable[IPNetwork]) -> bool:
    """True when ``ip`` lies in one of ``networks``.

    An IPv4-mapped IPv6 address (::ffff:192.0.2.1, what a dual-stack socket
    reports for IPv4 peers) also counts as its IPv4 address. An address that
    cannot be parsed is in no network.
    """
    if not ip:
        return False
    try:
        address = ipaddress.ip_address(ip.strip().strip("[]").split("%", 1)[0])
    except ValueError:
        return False
    candidates: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = [address]
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        candidates.append(address.ipv4_mapped)
    return any(
        candidate in network
        for network in networks
        for candidate in candidates
        if candidate.version == network.version
    )
