"""Rules for what a webhook may be configured with (plain functions, no Django)."""

from __future__ import annotations

import base64
import binascii
import re
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from policies.checks import normalise_domain_name
from webhooks.targets import refusal_for_host

CATCH_ALL = "*"
_LOCAL_PART = re.compile(r"^[a-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*$")
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
# Headers Conduit sets itself or that would break the HTTP framing.
RESERVED_HEADERS = frozenset(
    {
        "host",
        "content-length",
        "content-type",
        "content-encoding",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "upgrade",
        "expect",
        "proxy-authorization",
        "proxy-connection",
        "user-agent",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
    }
)
MAX_HEADERS = 20
MAX_HEADER_VALUE = 1000


def split_address(value: str) -> tuple[str, str]:
    """``(local, domain)`` of a webhook address, normalised; ValueError says what is wrong.

    ``*@domain`` is a catch-all. Addresses are lower-case: mail systems treat
    local parts case-insensitively in practice, and so does recipient matching.
    """
    text = value.strip()
    local, at, domain = text.rpartition("@")
    if not at or not local or not domain:
        raise ValueError(f"'{text}' is not an email address; write it as name@your-domain.com")
    local = local.lower()
    if len(local) > 64:
        raise ValueError("The part before @ is longer than 64 characters")
    if local != CATCH_ALL and not _LOCAL_PART.match(local):
        raise ValueError(
            f"'{local}' is not a valid mailbox name; use letters, digits and . _ + - "
            "(or * for a catch-all)"
        )
    return local, normalise_domain_name(domain)


MASKED_PASSWORD = "****"
"""What a target URL's password is shown as; sent back unchanged, it keeps the stored one."""


def split_credentials(url: str) -> tuple[str, str | None]:
    """``(url without userinfo, "user:password" or None)``, percent-decoded: the
    basic-auth credentials of a target URL, which are stored apart from it."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url, None
    host = parts.netloc.rpartition("@")[2]
    bare = urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
    return bare, f"{unquote(parts.username or '')}:{unquote(parts.password or '')}"


def url_with_credentials(url: str, auth: str | None, *, masked: bool = True) -> str:
    """The target URL as shown: the username back in it, the password as ****."""
    if not auth:
        return url
    username, _, password = auth.partition(":")
    secret = MASKED_PASSWORD if masked else quote(password, safe="")
    parts = urlsplit(url)
    netloc = f"{quote(username, safe='')}:{secret}@{parts.netloc}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def check_target_url(
    url: str, *, allow_http: bool, allow_private: bool = False, name_setting: bool = False
) -> None:
    """Refuse a target URL that can never be delivered to.

    Without ``allow_private``, the host as written must not be a private address in
    any spelling nor a local name (``webhooks.targets.refusal_for_host``); the
    address actually connected to is checked again at send time. ``name_setting``
    lets the message name the setting that allows private targets.
    """
    if any(ch.isspace() or not ch.isprintable() for ch in url):
        raise ValueError(
            "The target URL contains spaces or control characters: a host name cannot "
            "contain them, and in the path or query write a space as %20"
        )
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ValueError(
            "The target URL is malformed (check the host and the port, 1 to 65535)"
        ) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("The target URL must be an absolute http(s) URL")
    if parts.scheme == "http" and not allow_http:
        raise ValueError("The target URL must use https")
    if (parts.username or parts.password) and ":" not in parts.netloc.rpartition("@")[0]:
        raise ValueError(
            "The target URL has a user name but no password: write https://user:password@host/"
        )
    if port == 0:
        raise ValueError("The target URL's port must be between 1 and 65535")
    if not allow_private:
        problem = refusal_for_host(parts.hostname, name_setting=name_setting)
        if problem:
            raise ValueError(f"The target URL's host {problem}")


def check_custom_headers(headers: dict) -> dict[str, str]:
    if len(headers) > MAX_HEADERS:
        raise ValueError(f"At most {MAX_HEADERS} custom headers are allowed")
    problems = []
    clean: dict[str, str] = {}
    for name, value in headers.items():
        if not isinstance(name, str) or not _TOKEN.match(name):
            problems.append(f"'{name}' is not a valid header name (letters, digits and -)")
            continue
        if name.lower() in RESERVED_HEADERS:
            problems.append(f"'{name}' is set by Conduit and cannot be overridden")
            continue
        if not isinstance(value, str):
            problems.append(f"The value of '{name}' must be a string")
            continue
        problem = _header_value_problem(value)
        if problem:
            problems.append(f"The value of '{name}' {problem}")
            continue
        if len(value) > MAX_HEADER_VALUE:
            problems.append(f"The value of '{name}' is longer than {MAX_HEADER_VALUE} characters")
            continue
        clean[name] = value
    if problems:
        raise ValueError("; ".join(problems))
    return clean


def _header_value_problem(value: str) -> str | None:
    """Why ``value`` cannot be sent as an HTTP header value, or None.

    HTTP/1.1 sends header values as Latin-1 bytes (``http.client`` encodes them so)
    and RFC 9110 allows no control characters but tab; ``requests`` also refuses
    leading whitespace.
    """
    if any(ch in value for ch in "\r\n\0"):
        return "contains a line break or NUL"
    if any((ord(ch) < 32 and ch != "\t") or ord(ch) == 127 for ch in value):
        return "contains a control character"
    if value[:1].isspace():
        return "starts with whitespace; remove it"
    outside = [ch for ch in value if ord(ch) > 255]
    if outside:
        shown = "".join(dict.fromkeys(outside[:10]))  # first few, in order
        return (
            f"contains characters that HTTP headers cannot carry ({shown}); header values "
            "must be Latin-1: percent-encode or base64-encode the text"
        )
    return None


def check_secret(secret: str) -> None:
    """A Standard Webhooks secret: ``whsec_`` + base64 of 24 to 64 random bytes."""
    if not secret.startswith("whsec_"):
        raise ValueError("The secret must start with whsec_ followed by base64 (or omit it)")
    try:
        key = base64.b64decode(secret[len("whsec_") :], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("The part after whsec_ must be valid base64") from None
    if not 24 <= len(key) <= 64:
        raise ValueError("The secret must encode 24 to 64 bytes (32 recommended)")
