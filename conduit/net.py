"""The client address of a request, honouring only proxies the operator trusts."""

from __future__ import annotations

import ipaddress
from functools import lru_cache

from django.conf import settings
from django.http import HttpRequest


@lru_cache(maxsize=8)
def _networks(
    entries: tuple[str, ...],
) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(entry, strict=False) for entry in entries)


def _trusted(address: str, networks: tuple) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return any(ip in network for network in networks)


def client_ip(request: HttpRequest) -> str | None:
    """REMOTE_ADDR, or the first untrusted hop of X-Forwarded-For from the right.

    X-Forwarded-For is read only when the direct peer is a trusted proxy
    (CONDUIT_TRUSTED_PROXIES); anyone else could write any address into it.
    """
    remote = request.META.get("REMOTE_ADDR") or None
    networks = _networks(tuple(settings.CONDUIT_TRUSTED_PROXIES))
    if not networks or remote is None or not _trusted(remote, networks):
        return remote
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
    for hop in reversed(hops):
        if not _trusted(hop, networks):
            try:
                return str(ipaddress.ip_address(hop))
            except ValueError:
                return remote
    return hops[0] if hops else remote
