"""SPF (pyspf), DKIM and ARC (dkimpy) and DMARC evaluation for the SMTP ingress, on OUR resolver.

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
  (and check_arc, for arc_verify) passes a closure over the resolver: nothing global.
- DMARC (RFC 7489) is a few rules over the SPF and DKIM results, written here: the
  From domain's ``_dmarc`` record, falling back to its organisational domain (the
  Public Suffix List, from the ``publicsuffixlist`` package), and whether SPF or DKIM
  passed for a domain aligned with From (relaxed or strict, per ``aspf``/``adkim``).
  Records are cached (DMARC_CACHE) so a burst of mail from one domain costs one lookup.
"""

from __future__ import annotations

import contextvars
import email.utils
import functools
import ipaddress
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import dkim
import dns.exception
import dns.name
import dns.rdatatype
import dns.resolver
import spf
from publicsuffixlist import PublicSuffixList

__all__ = [
    "DMARC_CACHE",
    "SPF_TOTAL_LIFETIME",
    "DkimResult",
    "DmarcResult",
    "SpfResult",
    "check_arc",
    "check_dkim",
    "check_dmarc",
    "check_spf",
    "from_domain",
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


# --- ARC ---------------------------------------------------------------------------------


def check_arc(*, raw: bytes, resolver: dns.resolver.Resolver) -> str:
    """The ARC chain's validation (RFC 8617): "pass", "fail" or "none" (no ARC sets).

    A key that cannot be fetched for a transient reason is "temperror".
    """
    state = _KeyLookup()
    try:
        result, _sets, _reason = dkim.arc_verify(
            raw, dnsfunc=_make_dnsfunc(resolver, state), timeout=resolver.lifetime
        )
    except dkim.DnsTimeoutError:
        return "temperror"
    except Exception:  # dkimpy raises its own and parsing errors on malformed sets
        return "fail"
    value = result.decode("ascii", "replace") if isinstance(result, bytes) else str(result)
    return value.lower() or "none"


# --- DMARC -------------------------------------------------------------------------------

DMARC_CACHE_SECONDS = 300.0
"""The longest a DMARC record (or its absence) is reused; a shorter DNS TTL wins."""


@dataclass(frozen=True)
class DmarcRecord:
    """The record that applies to a From domain, or ``found=False`` when none was published."""

    found: bool
    domain: str  # where the record was found (the From domain or its organisational domain)
    tags: dict[str, str] = field(default_factory=dict)
    temperror: str = ""  # why the lookup failed transiently ("" when it did not)


class DmarcCache:
    """TXT answers at ``_dmarc.<domain>``, kept per name for the record's TTL (at most
    DMARC_CACHE_SECONDS). Concurrent lookups of the same name wait for one query
    (one lock per name), so a burst from one domain costs one lookup. Thread-safe.
    Transient failures are not kept."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[tuple, tuple[float, list[str]]] = {}
        self._name_locks: dict[tuple, threading.Lock] = {}

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._name_locks.clear()

    def txt(self, name: str, resolver: dns.resolver.Resolver) -> list[str]:
        """The TXT strings at ``name`` ([] for none); raises dns.exception.DNSException
        on a transient failure."""
        # Per server set (str: dnspython makes new nameserver objects per resolver).
        key = (tuple(str(server) for server in resolver.nameservers), resolver.port, name)
        with self._lock:
            cached = self._entries.get(key)
            if cached is not None and cached[0] > time.monotonic():
                return cached[1]
            name_lock = self._name_locks.setdefault(key, threading.Lock())
        with name_lock:
            with self._lock:
                cached = self._entries.get(key)
                if cached is not None and cached[0] > time.monotonic():
                    return cached[1]
            records, ttl = _fetch_txt(name, resolver)
            with self._lock:
                self._entries[key] = (time.monotonic() + min(ttl, DMARC_CACHE_SECONDS), records)
            return records


DMARC_CACHE = DmarcCache()


def _fetch_txt(name: str, resolver: dns.resolver.Resolver) -> tuple[list[str], float]:
    try:
        answer = resolver.resolve(
            dns.name.from_text(name), dns.rdatatype.TXT, search=False, raise_on_no_answer=False
        )
    except dns.resolver.NXDOMAIN:
        return [], DMARC_CACHE_SECONDS
    if answer.rrset is None:
        return [], DMARC_CACHE_SECONDS
    records = [b"".join(rdata.strings).decode("utf-8", "replace") for rdata in answer.rrset]
    return records, float(answer.rrset.ttl)


@functools.cache
def _public_suffixes() -> PublicSuffixList:
    # Built on first use: reading the list takes a few hundred milliseconds, which
    # every process that imports this module (web, worker) would pay for nothing.
    return PublicSuffixList()


def organizational_domain(domain: str) -> str:
    """The registered domain (one label below the public suffix; RFC 7489 3.2)."""
    return _public_suffixes().privatesuffix(domain) or domain


def _dmarc_tags(text: str) -> dict[str, str] | None:
    """The tags of a ``v=DMARC1`` record, or None if the text is no DMARC record."""
    tags: dict[str, str] = {}
    for item in text.split(";"):
        name, sep, value = item.partition("=")
        if sep:
            tags.setdefault(name.strip().lower(), value.strip())
    if tags.get("v", "").upper() != "DMARC1" or not text.lstrip().lower().startswith("v"):
        return None
    return tags


def _dmarc_record_at(domain: str, resolver: dns.resolver.Resolver) -> dict[str, str] | None:
    records = [
        tags
        for text in DMARC_CACHE.txt(f"_dmarc.{domain}.", resolver)
        if (tags := _dmarc_tags(text)) is not None
    ]
    # RFC 7489 6.6.3: several records are as good as none.
    return records[0] if len(records) == 1 else None


def dmarc_record(domain: str, resolver: dns.resolver.Resolver) -> DmarcRecord:
    """The DMARC record for ``domain``: its own, else its organisational domain's."""
    organizational = organizational_domain(domain)
    try:
        for candidate in dict.fromkeys((domain, organizational)):
            tags = _dmarc_record_at(candidate, resolver)
            if tags is not None:
                return DmarcRecord(found=True, domain=candidate, tags=tags)
    except dns.exception.DNSException as exc:
        return DmarcRecord(found=False, domain=domain, temperror=f"{type(exc).__name__}: {exc}")
    return DmarcRecord(found=False, domain=organizational)


@dataclass(frozen=True)
class DmarcResult:
    """The DMARC verdict for one message.

    ``result``: pass (SPF or DKIM passed aligned with From), fail, none (the From
    domain publishes no record), temperror (the record could not be fetched) or
    permerror (no single From domain to check). ``policy`` is what the domain asks
    receivers to do with failing mail (``p=``, or ``sp=`` for a subdomain).
    """

    result: str
    domain: str  # the RFC5322.From domain
    policy: str | None = None
    record_domain: str | None = None
    spf_aligned: bool = False
    dkim_aligned: bool = False
    explanation: str = ""

    def as_payload(self) -> dict[str, object]:
        return {
            "result": self.result,
            "domain": self.domain or None,
            "policy": self.policy,
            "record_domain": self.record_domain,
            "spf_aligned": self.spf_aligned,
            "dkim_aligned": self.dkim_aligned,
        }


def from_domain(raw: bytes) -> str | None:
    """The domain of the message's single From address, or None (no From, several
    From fields or addresses, or an address without a domain)."""
    try:
        headers, _body = dkim.rfc822_parse(raw)
    except Exception:
        return None
    values = [value for name, value in headers if name.lower() == b"from"]
    if len(values) != 1:
        return None
    text = values[0].decode("utf-8", "replace").replace("\r\n", "").replace("\n", "")
    found = [address for _name, address in email.utils.getaddresses([text]) if address]
    if len(found) != 1 or "@" not in found[0]:
        return None
    domain = found[0].rsplit("@", 1)[1].strip().rstrip(".").lower()
    return domain or None


def _aligned(domain: str, with_domain: str, mode: str) -> bool:
    domain, with_domain = domain.lower().rstrip("."), with_domain.lower().rstrip(".")
    if not domain or not with_domain:
        return False
    if mode == "s":
        return domain == with_domain
    return organizational_domain(domain) == organizational_domain(with_domain)


def check_dmarc(
    *,
    raw: bytes,
    spf: SpfResult,
    dkim_domains: list[str],
    resolver: dns.resolver.Resolver,
) -> DmarcResult:
    """DMARC for the message, from the SPF and DKIM results already computed."""
    domain = from_domain(raw)
    if domain is None:
        return DmarcResult(
            result="permerror", domain="", explanation="the message has no single From domain"
        )
    record = dmarc_record(domain, resolver)
    if record.temperror:
        return DmarcResult(
            result="temperror",
            domain=domain,
            explanation=f"DMARC record of {domain} could not be fetched: {record.temperror}",
        )
    if not record.found:
        return DmarcResult(
            result="none", domain=domain, explanation=f"{domain} publishes no DMARC record"
        )
    tags = record.tags
    policy = tags.get("p", "").lower()
    if record.domain != domain and tags.get("sp"):
        policy = tags["sp"].lower()
    if policy not in ("none", "quarantine", "reject"):
        policy = "none"  # RFC 7489 6.6.3: an unknown policy is treated as none
    spf_aligned = spf.result == "pass" and _aligned(spf.domain, domain, tags.get("aspf", "r"))
    dkim_aligned = any(_aligned(d, domain, tags.get("adkim", "r")) for d in dkim_domains)
    passed = spf_aligned or dkim_aligned
    if passed:
        explanation = f"{'SPF' if spf_aligned else 'DKIM'} passed aligned with {domain}"
    else:
        explanation = (
            f"neither SPF ({spf.result} for {spf.domain or 'no domain'}) nor DKIM "
            f"({', '.join(dkim_domains) or 'no valid signature'}) passed aligned with {domain}"
            f" (policy p={policy})"
        )
    return DmarcResult(
        result="pass" if passed else "fail",
        domain=domain,
        policy=policy,
        record_domain=record.domain,
        spf_aligned=spf_aligned,
        dkim_aligned=dkim_aligned,
        explanation=explanation,
    )
