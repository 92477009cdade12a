"""The client address of a request, honouring only proxies the operator trusts."""

from __future__ import annotations

import ipaddress
from functools import lru_cache

from django.conf import settings
from django.http import HttpRequest

from conduit.ipnets import IPNetwork, ip_in_networks, to_networks


@lru_cache(maxsize=8)
def _networks(entries: tuple[str, ...]) -> tuple[IPNetwork, ...]:
    return to_networks(entries)


def client_ip(request: HttpRequest) -> str | None:
    """REMOTE_ADDR, or the first untrusted hop of X-Forwarded-For from the right.

    X-Forwarded-For is read only when the direct peer is a trusted proxy
    (CONDUIT_TRUSTED_PROXIES); anyone else could write any address into it.
    """
    remote = request.META.get("REMOTE_ADDR") or None
    networks = _networks(tuple(settings.CONDUIT_TRUSTED_PROXIES))
    if not networks or remote is None or not ip_in_networks(remote, networks):
        return remote
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
    for hop in reversed(hops):
        if not ip_in_networks(hop, networks):
            try:
                return str(ipaddress.ip_address(hop))
            except ValueError:
                return remote
    return hops[0] if hops else remote
