"""Standard Webhooks (https://www.standardwebhooks.com/) signing for outbound deliveries.

Receivers verify our POSTs with any Standard Webhooks library, so the signed content,
header names and secret format follow that spec exactly:

    signature = base64(HMAC-SHA256(key, f"{msg_id}.{timestamp}." + body))

Secrets we generate look like ``whsec_<base64 of 32 random bytes>``; the HMAC key is
the decoded bytes after the prefix, which is what the reference libraries do.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping

SECRET_PREFIX = "whsec_"
_SECRET_BYTES = 32
TOLERANCE_SECONDS = 5 * 60
"""How far a receiver lets webhook-timestamp be from its clock (the spec's suggestion)."""


def generate_secret() -> str:
    """Return a new ``whsec_``-prefixed secret with 256 bits of entropy."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(_SECRET_BYTES)).decode("ascii")


def _secret_key(secret: str) -> bytes:
    """Turn a secret into HMAC key bytes.

    ``whsec_<base64>`` secrets (the only kind we generate) use the decoded bytes, so any
    Standard Webhooks library verifies them.  Missing padding is tolerated, like the
    reference libraries do.  A secret without the prefix, or whose remainder is not
    valid base64, is used as the UTF-8 bytes of the *whole* string: this keeps
    hand-typed/imported secrets usable, but receivers using a Standard Webhooks library
    must then be given key bytes themselves (the libraries base64-decode any string).
    """
    if not secret:
        raise ValueError("Webhook secret must not be empty.")
    if secret.startswith(SECRET_PREFIX):
        encoded = secret[len(SECRET_PREFIX) :]
        try:
            key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
        except (binascii.Error, ValueError):
            key = b""
        if key:
            return key
    return secret.encode("utf-8")


def sign(*, secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """Return the ``v1,<base64 signature>`` value for the ``webhook-signature`` header."""
    to_sign = f"{msg_id}.{int(timestamp)}.".encode() + body
    digest = hmac.new(_secret_key(secret), to_sign, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def signature_headers(*, secret: str, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """Return the three Standard Webhooks headers to send along with ``body``."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(timestamp)),
        "webhook-signature": sign(secret=secret, msg_id=msg_id, timestamp=timestamp, body=body),
    }


class SignatureProblem(ValueError):
    """A delivery that does not verify; the message says what is wrong."""


def verify(
    *,
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    now: int | None = None,
    tolerance: int = TOLERANCE_SECONDS,
) -> None:
    """Check a delivery as a Standard Webhooks receiver does, or raise SignatureProblem.

    For ``manage.py webhook_receiver``; receivers elsewhere use any Standard
    Webhooks library.
    """
    given = {name.lower(): value for name, value in headers.items()}
    msg_id = given.get("webhook-id", "")
    stamp = given.get("webhook-timestamp", "")
    signatures = given.get("webhook-signature", "")
    if not (msg_id and stamp and signatures):
        raise SignatureProblem(
            "the webhook-id, webhook-timestamp and webhook-signature headers are not all there"
        )
    try:
        timestamp = int(stamp)
    except ValueError:
        raise SignatureProblem(f"webhook-timestamp {stamp!r} is not a Unix time") from None
    skew = (int(time.time()) if now is None else now) - timestamp
    if abs(skew) > tolerance:
        raise SignatureProblem(
            f"webhook-timestamp is {skew:+d} s from this machine's clock "
            f"(at most {tolerance} s either way)"
        )
    expected = sign(secret=secret, msg_id=msg_id, timestamp=timestamp, body=body)
    for candidate in signatures.split():
        if hmac.compare_digest(candidate, expected):
            return
    raise SignatureProblem("no v1 signature in webhook-signature matches the secret")


def mask_secret(secret: str) -> str:
    """Return a display form that identifies a secret without revealing it.

    Only the ``whsec_`` prefix (if any) and the last 4 characters are kept, and the
    last 4 only when the secret is long enough (16+ characters after the prefix) that
    they are a small part of it.
    """
    prefix = SECRET_PREFIX if secret.startswith(SECRET_PREFIX) else ""
    rest = secret[len(prefix) :]
    tail = rest[-4:] if len(rest) >= 16 else ""
    return f"{prefix}****{tail}"
