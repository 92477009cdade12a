"""IP lists: how an entry is read and written back, and whether an address is
inside a set of networks. The one rule, shared by API token allow-lists,
trusted proxies and SMTP source-IP policies. No Django inside."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class BadNetworks(ValueError):
    """Entries that are neither an IP address nor a CIDR network, in the order given."""

    def __init__(self, entries: list[str]) -> None:
        self.entries = entries
        super().__init__(", ".join(repr(entry) for entry in entries))


def parse_networks(entries: Iterable[str]) -> list[IPNetwork]:
    """IPs and CIDRs as networks, de-duplicated in first-seen order.

    Blanks around an entry are ignored, and empty entries skipped. A single IP
    becomes a /32 or /128. Host bits are accepted and cleared ("10.0.0.1/24"
    -> 10.0.0.0/24): users paste an interface address more often than they
    mean something else, and the network is unambiguous. Every bad entry is
    named at once (BadNetworks), so the user fixes them in one round.
    """
    networks: list[IPNetwork] = []
    bad: list[str] = []
    for entry in entries:
        text = entry.strip()
        if not text:
            continue
        try:
            network = ipaddress.ip_network(text, strict=False)
        except ValueError:
            bad.append(text)
            continue
        if network not in networks:
            networks.append(network)
    if bad:
        raise BadNetworks(bad)
    return networks


def network_text(network: IPNetwork) -> str:
    """The canonical text of a network: a single host as its plain address."""
    if network.prefixlen == network.max_prefixlen:
        return str(network.network_address)
    return str(network)


def normalise_networks(entries: Iterable[str]) -> list[str]:
    """``parse_networks``, written back as canonical text (what is stored)."""
    return [network_text(network) for network in parse_networks(entries)]


def to_networks(entries: Iterable[str]) -> tuple[IPNetwork, ...]:
    """``parse_networks`` as a tuple (hashable, for caches); BadNetworks on a bad entry."""
    return tuple(parse_networks(entries))


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
