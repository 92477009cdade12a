"""Where a webhook may point: the one address rule, checked on write and on send.

Plain functions, no Django. Two moments use them:

* On write (create/update), ``refusal_for_host`` looks only at the URL's host as
  written, without DNS: IP literals in every spelling a URL parser or
  ``inet_aton`` accepts (``10.0.0.1``, ``[::ffff:10.0.0.1]``, ``2130706433``,
  ``0x7f.1``, ``017700000001``...), IPv6 forms that embed an IPv4 address
  (IPv4-mapped, IPv4-compatible, 6to4, NAT64, Teredo), names that are local by
  definition or convention (``localhost``, ``*.local``, ``*.internal``, single-label
  names...) and malformed hosts.
* On send, ``webhooks.outbound`` applies ``is_forbidden_ip`` to the address it
  actually connects to, so a public-looking name that resolves (or later
  rebinds) to a private address is still refused.

Messages never contain an address the host resolved to: they name the host the
user wrote and, for literals, what that literal means.
"""

from __future__ import annotations

import ipaddress
import re

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

PRIVATE_TARGETS_SETTING = "CONDUIT_ALLOW_PRIVATE_TARGETS"

_SHARED_ADDRESS_SPACE = ipaddress.ip_network("100.64.0.0/10")
# IPv6 ranges that carry an IPv4 address (or lead to a translator): refused as a
# whole, as requests-hardened does at send time, whatever IPv4 address they embed.
_TRANSLATION_RANGES = (
    ipaddress.ip_network("2002::/16"),  # 6to4
    ipaddress.ip_network("64:ff9b::/96"),  # NAT64, well-known prefix
    ipaddress.ip_network("64:ff9b:1::/48"),  # NAT64, local use
    ipaddress.ip_network("2001::/32"),  # Teredo
)

# Names that never reach the public internet: RFC 6761 (localhost), RFC 6762
# (.local for mDNS, and the private suffixes of its appendix G), RFC 8375
# (home.arpa), ICANN's .internal, and the common "localdomain".
LOCAL_SUFFIXES = (
    "localhost",
    "local",
    "internal",
    "intranet",
    "private",
    "corp",
    "home",
    "lan",
    "localdomain",
    "home.arpa",
)
_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")
_NUMBER = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$")


def is_forbidden_ip(ip: IPAddress) -> bool:
    """True when ``ip`` is not a public unicast address we may deliver to."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return is_forbidden_ip(ip.ipv4_mapped)
        if ip.is_site_local or any(ip in net for net in _TRANSLATION_RANGES):
            return True
    return (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or not ip.is_global
        or ip in _SHARED_ADDRESS_SPACE
    )


def embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, compatible, 6to4, NAT64)."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    value = int(ip)
    if ip in _TRANSLATION_RANGES[1] or (value >> 32 == 0 and value > 1):
        return ipaddress.IPv4Address(value & 0xFFFFFFFF)
    return None


def private_target_hint(*, name_setting: bool) -> str:
    """The "what to do" half of every private-target refusal."""
    hint = "webhook targets must be public internet addresses"
    if name_setting:
        hint += f" (set {PRIVATE_TARGETS_SETTING}=true to allow private targets in development)"
    return hint


def parse_ipv4_number(host: str) -> ipaddress.IPv4Address | None:
    """The IPv4 address a numeric host stands for, in any inet_aton/URL spelling.

    ``2130706433``, ``0x7f.1``, ``0177.0.0.1`` and ``017700000001`` all mean
    127.0.0.1 to ``getaddrinfo``. Returns None when ``host`` is not numeric;
    raises ValueError when it is numeric but out of range (WHATWG URL rules: a
    host whose last label is a number is an IPv4 address or nothing).
    """
    labels = host.lower().split(".")
    if labels and labels[-1] == "":
        labels.pop()  # a trailing dot
    if not labels or not _NUMBER.match(labels[-1]):
        return None
    if len(labels) > 4 or not all(_NUMBER.match(label) for label in labels):
        raise ValueError(f"{host} is neither a host name nor an IPv4 address")
    numbers = []
    for label in labels:
        if label.startswith("0x"):
            numbers.append(int(label[2:] or "0", 16))
        elif len(label) > 1 and label.startswith("0"):
            if not set(label) <= set("01234567"):
                raise ValueError(f"{host} is neither a host name nor an IPv4 address")
            numbers.append(int(label, 8))
        else:
            numbers.append(int(label))
    *head, last = numbers
    if any(n > 255 for n in head) or last >= 256 ** (5 - len(numbers)):
        raise ValueError(f"{host} is neither a host name nor an IPv4 address")
    value = last
    for position, number in enumerate(head):
        value += number << (8 * (3 - position))
    return ipaddress.IPv4Address(value)


def refusal_for_host(host: str, *, name_setting: bool = False) -> str | None:
    """Why a webhook may not target ``host`` (as written in the URL), or None.

    ``host`` is the URL's host without brackets or port; no DNS is consulted.
    ``name_setting`` adds the setting that allows private targets to the message
    (development servers).
    """
    hint = private_target_hint(name_setting=name_setting)
    if not host or any(ch.isspace() or not ch.isprintable() for ch in host):
        return f"{host!r} is not a valid host name; remove spaces and control characters"
    text = host.rstrip(".").lower()
    if "%" in text:  # an IPv6 zone index (fe80::1%eth0) names a local interface
        return f"{host} is an address on a local interface; {hint}"
    try:
        literal: IPAddress | None = ipaddress.ip_address(text)
    except ValueError:
        try:
            literal = parse_ipv4_number(text)
        except ValueError as exc:
            return f"{exc}; use a host name or a dotted IPv4 address"
    if literal is not None:
        if is_forbidden_ip(literal):
            shown = host
            inner = embedded_ipv4(literal) if literal.version == 6 else literal
            if inner is not None and str(inner) != text:
                shown += f" (the IP address {inner})"
            return f"{shown} is not a public internet address; {hint}"
        if literal.version == 4 and text != str(literal):
            return f"{host} is an unusual spelling of {literal}; write the address as {literal}"
        return None
    try:
        ascii_name = text.encode("idna").decode("ascii")
    except UnicodeError:
        return f"'{host}' is not a valid host name"
    labels = ascii_name.split(".")
    if len(ascii_name) > 253 or not all(_LABEL.match(label) for label in labels):
        return (
            f"'{host}' is not a valid host name: use letters, digits and hyphens in "
            "dot-separated labels of at most 63 characters"
        )
    if any(ascii_name == s or ascii_name.endswith("." + s) for s in LOCAL_SUFFIXES):
        return f"{host} is a local network name; {hint}"
    if len(labels) == 1:
        return f"{host} is a single-label name that resolves only on a local network; {hint}"
    return None
