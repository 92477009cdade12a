"""DNS checks that prove a user controls a domain before Conduit accepts its mail.

Ownership is shown by two records the user publishes:

- TXT ``_conduit-verify.<domain>`` holding the per-claim token (proves control);
- MX ``<domain>`` pointing at Conduit's SMTP host (proves mail will arrive here).

Both checks always run so the user sees every problem in one attempt. Plain
module: no Django, the resolver is injected so tests can use a loopback server.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Literal

import dns.exception
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver

__all__ = [
    "VERIFY_LABEL",
    "CheckFailure",
    "check_domain_ownership",
    "make_resolver",
    "parse_dns_servers",
]

VERIFY_LABEL = "_conduit-verify"
"""The TXT record lives at ``_conduit-verify.<domain>`` (underscore: never a host name)."""

DEFAULT_DNS_PORT = 53

CheckName = Literal["txt", "mx"]
FailureReason = Literal[
    "nxdomain", "no_answer", "wrong_value", "wrong_host", "wrong_priority", "timeout"
]


@dataclass(frozen=True)
class CheckFailure:
    """One failed check, with a message the user can act on.

    ``reason`` is "timeout" for every transient failure (lookup timed out, or all
    servers failed/refused): in each case the only advice is to try again later.
    ``found`` is empty when nothing was found.
    """

    check: CheckName
    reason: FailureReason
    expected: str
    found: str
    message: str


def make_resolver(
    *, servers: list[tuple[str, int]] | None, timeout: float
) -> dns.resolver.Resolver:
    """A resolver for verification lookups, bounded by ``timeout`` seconds per lookup.

    ``servers`` empty/None uses the system configuration (/etc/resolv.conf); otherwise
    only the given (ip, port) nameservers, each with its own port (dnspython
    Do53Nameserver objects), so tests and split-horizon setups can point elsewhere.
    No cache: verification must see a record the moment the user publishes it.
    """
    if timeout <= 0:
        raise ValueError(f"DNS timeout must be positive, got {timeout!r}")
    if servers:
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [dns.nameserver.Do53Nameserver(host, port) for host, port in servers]
    else:
        resolver = dns.resolver.Resolver(configure=True)
    resolver.timeout = timeout
    resolver.lifetime = timeout
    resolver.cache = None
    return resolver


def parse_dns_servers(value: str) -> list[tuple[str, int]]:
    """Parse the DNS servers setting: "ip[:port],ip[:port]" with IPv6 as "[::1]:5353".

    Only IP addresses are accepted: a resolver cannot resolve its own nameserver's
    name. A bare IPv6 address without brackets is accepted without a port.
    Blank value -> [] (use the system resolver).
    """
    servers: list[tuple[str, int]] = []
    for raw in value.split(","):
        entry = raw.strip()
        if entry:
            servers.append(_parse_dns_server(entry))
    return servers


def _parse_dns_server(entry: str) -> tuple[str, int]:
    host, port_text = entry, ""
    if entry.startswith("["):
        close = entry.find("]")
        if close == -1:
            raise ValueError(f"DNS server {entry!r} has '[' without ']'; write IPv6 as [::1]:53")
        host, rest = entry[1:close], entry[close + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"DNS server {entry!r}: expected ':port' after ']'")
            port_text = rest[1:]
            if not port_text:
                raise ValueError(f"DNS server {entry!r} has an empty port")
        if not _is_ip(host) or ipaddress.ip_address(host).version != 6:
            raise ValueError(f"DNS server {entry!r}: brackets must hold an IPv6 address")
    elif entry.count(":") == 1:
        host, port_text = entry.split(":")
        if not port_text:
            raise ValueError(f"DNS server {entry!r} has an empty port")
    if not _is_ip(host):
        hint = " (write IPv6 with a port as [::1]:53)" if ":" in entry else ""
        raise ValueError(f"DNS server {entry!r} is not an IP address{hint}")
    port = DEFAULT_DNS_PORT
    if port_text:
        if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            raise ValueError(f"DNS server {entry!r} has an invalid port; use 1-65535")
        port = int(port_text)
    return str(ipaddress.ip_address(host)), port


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def check_domain_ownership(
    *,
    domain: str,
    token: str,
    mx_host: str,
    resolver: dns.resolver.Resolver,
    mx_priority: int = 10,
) -> list[CheckFailure]:
    """Run the TXT and MX checks; an empty list means the domain is verified.

    ``domain`` is expected in A-label form (see policies.checks.normalise_domain_name).
    """
    domain = domain.strip().rstrip(".").lower()
    try:
        dns.name.from_text(domain)
    except dns.exception.DNSException:
        raise ValueError(f"{domain!r} is not a valid domain name") from None
    failures: list[CheckFailure] = []
    txt = _check_txt(domain=domain, token=token, resolver=resolver)
    if txt is not None:
        failures.append(txt)
    mx = _check_mx(domain=domain, mx_host=mx_host, mx_priority=mx_priority, resolver=resolver)
    if mx is not None:
        failures.append(mx)
    return failures


class _Transient(Exception):
    """A lookup could not be completed; carries the user-facing message."""


def _lookup(
    name: str, rdtype: str, resolver: dns.resolver.Resolver
) -> dns.resolver.Answer | Literal["nxdomain", "no_answer"]:
    qname = dns.name.from_text(name)  # absolute: never apply a search list
    try:
        return resolver.resolve(qname, rdtype, search=False)
    except dns.resolver.NXDOMAIN:
        return "nxdomain"
    except dns.resolver.NoAnswer:
        return "no_answer"
    except dns.exception.Timeout:
        raise _Transient(
            f"DNS lookup of {name} ({rdtype}) timed out after {resolver.lifetime:.1f} s; "
            "try again later"
        ) from None
    except dns.exception.DNSException as exc:
        raise _Transient(
            f"DNS lookup of {name} ({rdtype}) failed ({exc.__class__.__name__}); try again later"
        ) from None


def _check_txt(*, domain: str, token: str, resolver: dns.resolver.Resolver) -> CheckFailure | None:
    name = f"{VERIFY_LABEL}.{domain}"
    expected_text = f"a TXT record with value {token}"

    def fail(reason: FailureReason, found: str, message: str) -> CheckFailure:
        return CheckFailure(
            check="txt", reason=reason, expected=token, found=found, message=message
        )

    try:
        answer = _lookup(name, "TXT", resolver)
    except _Transient as exc:
        return fail("timeout", "", str(exc))
    if answer == "nxdomain":
        return fail("nxdomain", "", f"No TXT record at {name} (NXDOMAIN); expected {expected_text}")
    if answer == "no_answer":
        return fail("no_answer", "", f"No TXT record at {name}; expected {expected_text}")
    # One TXT record may be split into several character-strings: join them first.
    # Surrounding whitespace is ignored because DNS control panels often keep it.
    values = [b"".join(rdata.strings).decode("utf-8", errors="replace").strip() for rdata in answer]
    if token in values:
        return None
    found = ", ".join(f'"{v}"' for v in values)
    if len(values) == 1:
        message = f"TXT record at {name} has value {found}; expected {expected_text}"
    else:
        message = f"TXT records at {name} have values {found}; expected {expected_text}"
    return fail("wrong_value", found, message)


def _host(name: object) -> str:
    """Compare MX hosts without trailing dot or case; the null MX '.' stays visible."""
    return str(name).rstrip(".").lower() or "."


def _check_mx(
    *, domain: str, mx_host: str, mx_priority: int, resolver: dns.resolver.Resolver
) -> CheckFailure | None:
    want_host = _host(mx_host)
    expected = f"{want_host} (priority {mx_priority})"

    def fail(reason: FailureReason, found: str, message: str) -> CheckFailure:
        return CheckFailure(
            check="mx", reason=reason, expected=expected, found=found, message=message
        )

    try:
        answer = _lookup(domain, "MX", resolver)
    except _Transient as exc:
        return fail("timeout", "", str(exc))
    if answer == "nxdomain":
        return fail("nxdomain", "", f"No MX record for {domain} (NXDOMAIN); expected {expected}")
    if answer == "no_answer":
        return fail("no_answer", "", f"No MX record for {domain}; expected {expected}")
    records = sorted({(rdata.preference, _host(rdata.exchange)) for rdata in answer})
    if (mx_priority, want_host) in records:
        return None
    matching = [(prio, host) for prio, host in records if host == want_host]
    if matching:
        found = ", ".join(f"{host} (priority {prio})" for prio, host in matching)
        priorities = ", ".join(str(prio) for prio, _ in matching)
        return fail(
            "wrong_priority",
            found,
            f"MX record for {domain} points to {want_host} with priority {priorities}; "
            f"expected priority {mx_priority}",
        )
    found = ", ".join(f"{host} (priority {prio})" for prio, host in records)
    verb = "record for {d} points" if len(records) == 1 else "records for {d} point"
    return fail(
        "wrong_host",
        found,
        f"MX {verb.format(d=domain)} to {found}; expected {expected}",
    )
