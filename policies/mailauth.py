"""SPF (pyspf) and DKIM (dkimpy) evaluation for the SMTP ingress, on OUR resolver.

Why wrappers: both libraries resolve through the system resolver by default. The
ingress must use the configured DNS servers and timeout (and tests a loopback
server), must never block on DNS longer than configured, and needs results as
plain values it can turn into policy decisions and Authentication-Results.

How the resolver reaches the libraries:

- pyspf calls the module-level function ``spf.DNSLookup(name, qtype, strict,
  timeout)`` for every query. On import this module replaces it, once, with a
  dispatcher that reads the resolver from a ContextVar set by check_spf for the
  duration of the call. Thread- and task-safe: each thread/task sees only its own
  resolver; code that calls pyspf without check_spf still gets pyspf's original
  lookup.
- dkimpy takes ``dnsfunc(name, timeout=5)`` per verify() call, so check_dkim
  passes a closure over the resolver: nothing global.
"""

from __future__ import annotations

import contextvars
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import dkim
import dns.exception
import dns.name
import dns.rdatatype
import dns.resolver
import spf

__all__ = [
    "SPF_TOTAL_LIFETIME",
    "DkimResult",
    "SpfResult",
    "check_dkim",
    "check_spf",
]

SPF_TOTAL_LIFETIME = 20.0
"""Seconds for a whole SPF evaluation (RFC 7208 4.6.4 suggests at least 20 s overall)."""


# --- SPF ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SpfResult:
    """Outcome of check_host() for the MAIL FROM (or HELO for a null sender).

    ``result`` is one of pass, fail, softfail, neutral, none, permerror, temperror;
    ``domain`` is the domain whose policy was evaluated ("" when there was none).
    """

    result: str
    domain: str
    explanation: str


_spf_resolver: contextvars.ContextVar[dns.resolver.Resolver | None] = contextvars.ContextVar(
    "conduit_spf_resolver", default=None
)


def _spf_lookup_with(
    resolver: dns.resolver.Resolver, name: str, qtype: str, timeout: float
) -> list[tuple[tuple[str, str], Any]]:
    """pyspf's DNSLookup_dnspython contract, on the given resolver.

    Returns [((name, qtype), value)]; [] for NXDOMAIN/no answer; raises spf.TempError
    on timeouts and server failures so pyspf reports "temperror".
    """
    lifetime = min(timeout, resolver.lifetime) if timeout and timeout > 0 else resolver.lifetime
    try:
        answer = resolver.resolve(dns.name.from_text(name), qtype, lifetime=lifetime, search=False)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return []
    except dns.exception.Timeout as exc:
        raise spf.TempError(f"DNS lookup of {name} ({qtype}) timed out: {exc}") from None
    except dns.exception.DNSException as exc:
        raise spf.TempError(f"DNS lookup of {name} ({qtype}) failed: {exc}") from None
    results: list[tuple[tuple[str, str], Any]] = []
    for rdata in answer:
        if qtype in ("A", "AAAA"):
            results.append(((name, qtype), rdata.address))
        elif qtype == "MX":
            results.append(((name, qtype), (rdata.preference, rdata.exchange)))
        elif qtype == "PTR":
            results.append(((name, qtype), rdata.target.to_text(True)))
        elif qtype in ("TXT", "SPF"):
            results.append(((name, qtype), rdata.strings))
    return results


def _install_spf_lookup() -> None:
    """Route pyspf's lookups through the ContextVar resolver; idempotent."""
    current = spf.DNSLookup
    if getattr(current, "_conduit_dispatch", False):
        return
    original: Callable[..., Any] = current

    def dispatch(name: str, qtype: str, strict: object = True, timeout: float = 30) -> Any:
        resolver = _spf_resolver.get()
        if resolver is None:
            return original(name, qtype, strict, timeout)
        return _spf_lookup_with(resolver, name, qtype, timeout)

    dispatch._conduit_dispatch = True  # type: ignore[attr-defined]
    spf.DNSLookup = dispatch


_install_spf_lookup()


def _spf_domain(identity: str) -> str:
    """Domain part of an address, or the value itself for a bare domain/HELO name."""
    return identity.rsplit("@", 1)[-1].strip().rstrip(".").lower()


def _is_checkable_helo(helo: str) -> bool:
    """RFC 7208 2.3: only a domain-name HELO can be checked, not an address literal."""
    if not helo or helo.startswith("["):
        return False
    try:
        ipaddress.ip_address(helo)
    except ValueError:
        return "." in helo
    return False


def check_spf(
    *, client_ip: str, mail_from: str, helo: str, resolver: dns.resolver.Resolver
) -> SpfResult:
    """Evaluate SPF for the connecting client.

    A null sender ("" or "<>") is checked against the HELO name as postmaster@helo
    (RFC 7208 2.4); with no usable HELO either, the result is "none". Every DNS
    query uses ``resolver`` with its lifetime per query, and SPF_TOTAL_LIFETIME
    caps the whole evaluation; a timeout yields "temperror".
    """
    sender = mail_from.strip()
    if sender.startswith("<") and sender.endswith(">"):
        sender = sender[1:-1].strip()
    helo = helo.strip().rstrip(".")
    if sender:
        domain = _spf_domain(sender)
    elif _is_checkable_helo(helo):
        domain = helo.lower()
    else:
        return SpfResult(
            result="none", domain="", explanation="null sender and no HELO domain to check"
        )
    if not domain:
        return SpfResult(result="none", domain="", explanation="sender has no domain")

    token = _spf_resolver.set(resolver)
    try:
        try:
            query = spf.query(
                i=client_ip,
                s=sender,
                h=helo,
                timeout=resolver.lifetime,
                querytime=SPF_TOTAL_LIFETIME,
            )
        except spf.PermError as exc:  # e.g. the client IP does not parse
            return SpfResult(result="permerror", domain=domain, explanation=str(exc))
        result, _code, explanation = query.check()
    finally:
        _spf_resolver.reset(token)
    return SpfResult(result=str(result), domain=domain, explanation=str(explanation))


# --- DKIM --------------------------------------------------------------------------------


@dataclass(frozen=True)
class DkimResult:
    """Every DKIM-Signature checked: d= domains that verified, one message per failure.

    ``temperror`` is True when some key could not be fetched for a transient reason
    (timeout or server failure), so a failure may pass on a later attempt.
    """

    valid_domains: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    temperror: bool = False


@dataclass
class _KeyLookup:
    """What the last key lookup saw; reset before each signature."""

    name: str = ""
    outcome: str = ""  # "found", "missing", "temperror"


def _make_dnsfunc(
    resolver: dns.resolver.Resolver, state: _KeyLookup
) -> Callable[..., bytes | None]:
    """dkimpy's dnsfunc(name, timeout=5) -> key record bytes or None, on our resolver."""

    def dnsfunc(name: bytes, timeout: float = 5) -> bytes | None:
        try:
            text = name.decode("ascii")
        except UnicodeDecodeError:
            state.outcome = "missing"
            return None
        state.name = text.rstrip(".")
        lifetime = min(timeout, resolver.lifetime) if timeout and timeout > 0 else resolver.lifetime
        try:
            answer = resolver.resolve(
                dns.name.from_text(text),
                dns.rdatatype.TXT,
                lifetime=lifetime,
                search=False,
                raise_on_no_answer=False,
            )
        except dns.resolver.NXDOMAIN:
            state.outcome = "missing"
            return None
        except dns.exception.Timeout as exc:
            state.outcome = "temperror"
            raise dkim.DnsTimeoutError(f"DNS lookup of {state.name} timed out: {exc}") from None
        except dns.exception.DNSException as exc:
            state.outcome = "temperror"
            raise dkim.DnsTimeoutError(f"DNS lookup of {state.name} failed: {exc}") from None
        # A character-string is at most 255 bytes; a key record is their concatenation.
        records = [b"".join(rdata.strings) for rdata in answer.rrset or ()]
        if not records:
            state.outcome = "missing"
            return None
        state.outcome = "found"
        # Prefer a record that carries a key if unrelated TXT records share the name.
        return next((r for r in records if b"p=" in r), records[0])

    return dnsfunc


def _signature_count(raw: bytes) -> int:
    _headers, _body = dkim.rfc822_parse(raw)
    return sum(1 for name, _value in _headers if name.lower() == b"dkim-signature")


def check_dkim(*, raw: bytes, resolver: dns.resolver.Resolver) -> DkimResult:
    """Verify every DKIM-Signature in the raw message, fetching keys with ``resolver``."""
    try:
        count = _signature_count(raw)
        verifier = dkim.DKIM(raw, timeout=resolver.lifetime)
    except dkim.DKIMException as exc:
        return DkimResult(failures=[f"message could not be parsed for DKIM: {exc}"])
    valid: list[str] = []
    failures: list[str] = []
    temperror = False
    state = _KeyLookup()
    dnsfunc = _make_dnsfunc(resolver, state)
    for idx in range(count):
        state.name, state.outcome = "", ""
        verifier.domain = verifier.selector = None
        try:
            ok = verifier.verify(idx=idx, dnsfunc=dnsfunc)
            error = ""
        except dkim.DKIMException as exc:
            ok, error = False, str(exc)
        label = _signature_label(idx, verifier.domain, verifier.selector)
        if ok:
            domain = (verifier.domain or b"").decode("ascii", errors="replace").lower()
            if domain not in valid:
                valid.append(domain)
            continue
        if state.outcome == "temperror":
            temperror = True
            failures.append(f"{label}: key lookup at {state.name} failed temporarily")
        elif state.outcome == "missing":
            failures.append(f"{label}: no DKIM key published at {state.name}")
        elif error:
            failures.append(f"{label}: {error}")
        elif state.outcome == "found":
            failures.append(f"{label}: signature does not verify (bad signature or unusable key)")
        else:
            failures.append(f"{label}: signature could not be checked")
    return DkimResult(valid_domains=valid, failures=failures, temperror=temperror)


def _signature_label(idx: int, domain: bytes | None, selector: bytes | None) -> str:
    if domain is None:
        return f"DKIM signature {idx + 1}"
    d = domain.decode("ascii", errors="replace")
    s = (selector or b"").decode("ascii", errors="replace")
    return f"DKIM signature {idx + 1} (d={d}, s={s})"
