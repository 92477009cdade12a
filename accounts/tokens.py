"""Random bearer secrets and their stored form.

Tokens carry 256 bits of randomness, so a single SHA-256 is enough to store
them: unlike passwords they cannot be guessed, and a fast hash keeps every
authenticated request cheap. The prefix tells a reader (and secret scanners)
what kind of credential leaked.
"""

from __future__ import annotations

import hashlib
import secrets

ACCESS_PREFIX = "cda_"
REFRESH_PREFIX = "cdr_"
API_TOKEN_PREFIX = "cdt_"
RESET_PREFIX = "cdp_"
TOTP_CHALLENGE_PREFIX = "cdc_"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token(prefix: str) -> tuple[str, str]:
    """A fresh token and its hash."""
    token = prefix + secrets.token_urlsafe(32)
    return token, hash_token(token)


def mask_token(token_start: str) -> str:
    """What lists show instead of a token: its first characters, then stars."""
    return f"{token_start}{'*' * 8}"
