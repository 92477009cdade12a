"""Secrets at rest: what must be stored readable (webhook signing secrets, TOTP seeds)
is stored encrypted, so that a copy of the database alone cannot sign a webhook or
make a 2FA code.

Fernet (AES-128-CBC + HMAC-SHA256, from ``cryptography``) with the keys of
CONDUIT_ENCRYPTION_KEYS: the first key encrypts, every key decrypts. To rotate,
put a new key first, keep the old ones after it, restart, run
``manage.py reencrypt_secrets``, then drop the old keys. With the variable
unset a key is derived from SECRET_KEY (HKDF-SHA256), so the embedded default
works with nothing set; changing SECRET_KEY then needs the old derived key
listed (``manage.py reencrypt_secrets --print-derived-key`` shows it).
"""

from __future__ import annotations

import base64
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

__all__ = ["InvalidToken", "decrypt", "derived_key", "encrypt"]


def derived_key(secret_key: str) -> str:
    """The Fernet key used when CONDUIT_ENCRYPTION_KEYS is unset."""
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"conduit secrets at rest")
    return base64.urlsafe_b64encode(hkdf.derive(secret_key.encode())).decode("ascii")


def parse_keys(keys: list[str], *, variable: str = "CONDUIT_ENCRYPTION_KEYS") -> list[Fernet]:
    fernets = []
    for position, key in enumerate(keys, start=1):
        try:
            fernets.append(Fernet(key))
        except ValueError:
            raise ImproperlyConfigured(
                f"{variable}: key {position} is not a Fernet key (32 url-safe base64-encoded "
                "bytes); make one with python -c 'from cryptography.fernet import Fernet; "
                "print(Fernet.generate_key().decode())'"
            ) from None
    return fernets


@lru_cache(maxsize=4)
def _box(keys: tuple[str, ...], secret_key: str) -> MultiFernet:
    return MultiFernet(parse_keys(list(keys) or [derived_key(secret_key)]))


def _current() -> MultiFernet:
    return _box(tuple(settings.CONDUIT_ENCRYPTION_KEYS), settings.SECRET_KEY)


def encrypt(plaintext: str) -> str:
    return _current().encrypt(plaintext.encode()).decode("ascii")


def decrypt(token: str) -> str:
    """The plaintext; InvalidToken when no configured key opens it."""
    return _open(_current(), token)


# A row read again (every message's webhook, at the ingress and in the worker)
# costs a dictionary look-up instead of an HMAC check and a decryption. Keyed
# by the key set too, so a changed CONDUIT_ENCRYPTION_KEYS is obeyed at once.
@lru_cache(maxsize=4096)
def _open(box: MultiFernet, token: str) -> str:
    return box.decrypt(token.encode("ascii")).decode()
