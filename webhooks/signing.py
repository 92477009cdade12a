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

SECRET_PREFIX = "whsec_"
_SECRET_BYTES = 32


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
