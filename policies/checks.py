"""Parsing/validation of SMTP security policy fields, and the checks the ingress runs.

Why a plain module: the same rules serve the web forms, the API and the SMTP
ingress hot path, and must be testable without Django. Parsers collect *every*
problem in a field so the user fixes them in one round, and raise
PolicyValueError(field, messages); normalisers return the canonical text to store.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import idna

from conduit import ipnets
from conduit.ipnets import IPNetwork, ip_in_networks

__all__ = [
    "DUMMY_PASSWORD_HASH",
    "MASKED_PASSWORD",
    "MIN_PASSWORD_LENGTH",
    "Credential",
    "IPNetwork",
    "PolicyValueError",
    "credentials_valid",
    "domain_allowed",
    "ip_allowed",
    "normalise_domain_list",
    "normalise_domain_name",
    "normalise_ip_list",
    "parse_credentials",
    "parse_domain_list",
    "parse_ip_networks",
]


MIN_PASSWORD_LENGTH = 12
MASKED_PASSWORD = "********"
"""What forms show instead of a stored password; submitting it back keeps the password."""

DUMMY_PASSWORD_HASH = (
    "pbkdf2_sha256$1000000$conduitdummysalt$2T8bTNNLR3Yrk0X4pZ8H8bmOwUQbOJpA6r7bGc4fq1E="
)
"""A well-formed Django PBKDF2 hash (Django 5.2 iteration count) that matches no password.

Verifying against it costs as much as against a real hash, so an unknown username
takes as long to reject as a wrong password. Callers can pass their own, e.g. one
made once with django.contrib.auth.hashers.make_password, to follow hasher upgrades.
"""

_SEPARATORS = re.compile(r"[,\s]+")
_ENTRY_SEPARATORS = re.compile(r"[,\r\n]+")
_LABEL = re.compile(r"^[a-z0-9-]+$")
_MAX_NAME = 253
_MAX_LABEL = 63


class PolicyValueError(ValueError):
    """A policy field holds bad values; ``messages`` lists each problem for the form."""

    def __init__(self, field: str, messages: list[str]) -> None:
        self.field = field
        self.messages = list(messages)
        super().__init__(f"{field}: " + "; ".join(self.messages))


def _show(value: str, limit: int = 60) -> str:
    """Quote a user value for an error message without flooding it."""
    if len(value) > limit:
        value = value[: limit - 1] + "…"
    return repr(value)


# --- IP networks -------------------------------------------------------------------------


def parse_ip_networks(value: str, *, field: str = "allowed_networks") -> list[IPNetwork]:
    """IPs or CIDR networks separated by commas, spaces or newlines, read by the
    shared rule (``conduit.ipnets.parse_networks``: de-duplicated in order, a
    single IP as a /32 or /128, host bits cleared)."""
    try:
        return ipnets.parse_networks(_SEPARATORS.split(value.strip()))
    except ipnets.BadNetworks as exc:
        problems = [
            f"{_show(entry)} is not a valid IP address or CIDR network" for entry in exc.entries
        ]
        raise PolicyValueError(field, problems) from None


def normalise_ip_list(value: str, *, field: str = "allowed_networks") -> str:
    """Canonical text: comma-separated, first-seen order, single hosts as plain addresses."""
    return ",".join(ipnets.network_text(n) for n in parse_ip_networks(value, field=field))


def ip_allowed(ip: str, networks: Sequence[IPNetwork]) -> bool:
    """Is the SMTP client address inside one of the networks? Empty list allows all.

    An IPv4-mapped IPv6 address (::ffff:192.0.2.1, what a dual-stack socket reports
    for IPv4 clients) is also tested as the IPv4 address. An unparsable address is
    refused when a list is set.
    """
    return not networks or ip_in_networks(ip, networks)


# --- Domain names ------------------------------------------------------------------------


def normalise_domain_name(value: str) -> str:
    """Lower-case A-label (IDNA 2008/UTS 46) form of a domain name, or ValueError.

    'Bücher.Example' -> 'xn--bcher-kva.example'. One trailing dot is allowed. Needs at
    least two labels: Conduit deals in mail domains, never bare TLDs or host names.
    """
    text = value.strip()
    if text.endswith("."):
        text = text[:-1]
    if not text:
        raise ValueError("Enter a domain name")
    shown = _show(value.strip())
    try:
        ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        pass
    else:
        raise ValueError(f"{shown} is an IP address; enter a domain name such as example.com")
    labels = text.split(".")
    if "" in labels:
        raise ValueError(f"{shown} is not a valid domain name: it has an empty label (two dots)")
    if "*" in labels:
        raise ValueError(f"{shown}: wildcards are not supported; subdomains are already included")
    if text.isascii():
        ascii_name = text.lower()
    else:
        try:
            ascii_name = idna.encode(text, uts46=True).decode("ascii")
        except idna.IDNAError as exc:
            raise ValueError(f"{shown} is not a valid international domain name: {exc}") from None
    labels = ascii_name.split(".")
    for label in labels:
        if len(label) > _MAX_LABEL:
            raise ValueError(
                f"{shown} is not a valid domain name: label {_show(label, 20)} "
                f"is longer than {_MAX_LABEL} characters"
            )
        if not _LABEL.match(label):
            raise ValueError(
                f"{shown} is not a valid domain name: label {_show(label)} may only contain "
                "letters, digits and hyphens"
            )
        if label.startswith("-") or label.endswith("-"):
            raise ValueError(
                f"{shown} is not a valid domain name: label {_show(label)} "
                "must not start or end with a hyphen"
            )
        if label.startswith("xn--"):
            try:
                idna.decode(label)
            except (idna.IDNAError, UnicodeError):
                raise ValueError(
                    f"{shown} is not a valid domain name: {_show(label)} is not valid punycode"
                ) from None
    if len(ascii_name) > _MAX_NAME:
        raise ValueError(f"{shown} is longer than {_MAX_NAME} characters")
    if len(labels) < 2:
        raise ValueError(
            f"{shown} is not a full domain name: it needs at least two labels, like example.com"
        )
    if labels[-1].isdigit():
        raise ValueError(f"{shown} is not a valid domain name: the last label cannot be numeric")
    return ascii_name


def parse_domain_list(value: str, *, field: str = "allowed_domains") -> list[str]:
    """Domain names separated by commas, spaces or newlines; normalised, de-duplicated."""
    domains: list[str] = []
    errors: list[str] = []
    for token in _SEPARATORS.split(value.strip()):
        if not token:
            continue
        try:
            domain = normalise_domain_name(token)
        except ValueError as exc:
            errors.append(str(exc))
            continue
        if domain not in domains:
            domains.append(domain)
    if errors:
        raise PolicyValueError(field, errors)
    return domains


def normalise_domain_list(value: str, *, field: str = "allowed_domains") -> str:
    """Canonical text: comma-separated A-labels in first-seen order."""
    return ",".join(parse_domain_list(value, field=field))


def domain_allowed(domain: str | None, allowed: Sequence[str]) -> bool:
    """Is the sender domain permitted? Empty ``allowed`` permits any (even none).

    A domain matches an allowed entry when equal to it or a subdomain of it:
    "example.com" permits "example.com" and "mail.example.com" but not
    "badexample.com". A missing or unparsable domain (null sender) is refused
    when a list is set.
    """
    if not allowed:
        return True
    if not domain:
        return False
    try:
        candidate = normalise_domain_name(domain)
    except ValueError:
        return False
    for entry in allowed:
        base = entry.strip().rstrip(".").lower()
        if base and (candidate == base or candidate.endswith("." + base)):
            return True
    return False


# --- SMTP AUTH credentials -----------------------------------------------------------------


@dataclass
class Credential:
    """A username and its new plain password; None means keep the stored password."""

    username: str
    password: str | None


def parse_credentials(value: str, *, field: str = "credentials") -> list[Credential]:
    """Parse "username:password" entries separated by commas or newlines.

    The password is everything after the first ':' (so it may contain ':'), but it
    cannot contain commas or newlines, which separate entries, nor start with a
    space (trailing spaces are dropped with the entry's). Usernames are
    compared case-insensitively for duplicates, so "Bob" and "bob" cannot both exist.
    "username:********" (the masked form forms display) keeps the stored password.
    Messages never repeat a password.
    """
    credentials: list[Credential] = []
    errors: list[str] = []
    seen: dict[str, str] = {}
    duplicates: list[str] = []
    for raw in _ENTRY_SEPARATORS.split(value):
        entry = raw.strip()
        if not entry:
            continue
        username, sep, password = entry.partition(":")
        if not sep or not password:
            shown = username or "user"
            errors.append(
                f"{_show(shown)} has no password: write it as {shown}:password"
                if username
                else "an entry has no username or password: write it as user:password"
            )
            continue
        if not username:
            errors.append("an entry has an empty username: write it as user:password")
            continue
        if re.search(r"\s", username):
            errors.append(f"username {_show(username)} must not contain spaces")
            continue
        key = username.casefold()
        if key in seen:
            if key not in duplicates:
                duplicates.append(key)
                errors.append(f"duplicate username {_show(username)}")
            continue
        seen[key] = username
        if password == MASKED_PASSWORD:
            credentials.append(Credential(username=username, password=None))
            continue
        if password != password.lstrip():
            errors.append(f"password for {_show(username)} must not start with a space")
            continue
        if len(password) < MIN_PASSWORD_LENGTH:
            errors.append(
                f"password for {_show(username)} is shorter than {MIN_PASSWORD_LENGTH} characters"
            )
            continue
        credentials.append(Credential(username=username, password=password))
    if errors:
        raise PolicyValueError(field, errors)
    return credentials


def credentials_valid(
    *,
    username: str,
    password: str,
    stored: Mapping[str, str],
    verify: Callable[[str, str], bool],
    dummy_hash: str = DUMMY_PASSWORD_HASH,
) -> bool:
    """Check SMTP AUTH credentials against stored hashes (username -> hash).

    ``verify(password, hash)`` is injected (Django's check_password in production).
    It always runs exactly once, against ``dummy_hash`` for an unknown username, so
    response time does not reveal which usernames exist. Usernames match exactly.
    """
    encoded = stored.get(username)
    matches = verify(password, encoded if encoded is not None else dummy_hash)
    return encoded is not None and bool(matches)
