"""DKIM test keys without the `cryptography` package.

`cryptography` is not installed, and dkimpy signs with a PEM private key, so a
real RSA key pair is built here in pure Python and DER-encoded by hand: the
private key as PKCS#1 PEM (what ``dkim.sign`` takes), the public key as the
base64 SubjectPublicKeyInfo that goes in the ``p=`` tag of the DNS record.

The same construction as tests/policies/test_mailauth.py (which keeps its own
copy); new tests should import from here.
"""

from __future__ import annotations

import base64
import secrets
from functools import cache

import dkim

__all__ = ["dkim_key_record", "dkim_sign", "rsa_keypair", "shared_rsa_keypair"]

_SMALL_PRIMES = [p for p in range(3, 2000) if all(p % d for d in range(2, int(p**0.5) + 1))]


def _is_probable_prime(n: int) -> bool:
    if any(n % p == 0 for p in _SMALL_PRIMES):
        return n in _SMALL_PRIMES
    d, r = n - 1, 0
    while d % 2 == 0:
        d, r = d // 2, r + 1
    for _ in range(20):
        x = pow(secrets.randbelow(n - 3) + 2, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(r - 1):
            x = pow(x, 2, n)
            if x == n - 1:
                break
        else:
            return False
    return True


def _prime(bits: int) -> int:
    while True:
        candidate = secrets.randbits(bits) | (1 << (bits - 1)) | (1 << (bits - 2)) | 1
        if _is_probable_prime(candidate):
            return candidate


def _der_len(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def _der(tag: int, body: bytes) -> bytes:
    return bytes([tag]) + _der_len(len(body)) + body


def _der_int(n: int) -> bytes:
    return _der(0x02, n.to_bytes(n.bit_length() // 8 + 1, "big"))


def rsa_keypair(bits: int = 2048) -> tuple[bytes, str]:
    """(PKCS#1 PEM private key, base64 SubjectPublicKeyInfo for the p= tag)."""
    e = 65537
    while True:
        p, q = _prime(bits // 2), _prime(bits // 2)
        phi = (p - 1) * (q - 1)
        if p != q and phi % e:
            break
    n, d = p * q, pow(e, -1, phi)
    private = _der(
        0x30,
        b"".join(_der_int(v) for v in (0, n, e, d, p, q, d % (p - 1), d % (q - 1), pow(q, -1, p))),
    )
    pem_body = base64.encodebytes(private).replace(b"\n", b"")
    lines = b"\n".join(pem_body[i : i + 64] for i in range(0, len(pem_body), 64))
    pem = b"-----BEGIN RSA PRIVATE KEY-----\n" + lines + b"\n-----END RSA PRIVATE KEY-----\n"
    rsa_public = _der(0x30, _der_int(n) + _der_int(e))
    algorithm = _der(0x30, _der(0x06, bytes.fromhex("2a864886f70d010101")) + _der(0x05, b""))
    spki = _der(0x30, algorithm + _der(0x03, b"\x00" + rsa_public))
    return pem, base64.b64encode(spki).decode("ascii")


@cache
def shared_rsa_keypair() -> tuple[bytes, str]:
    """One 2048-bit key per test process: making one costs up to a second."""
    return rsa_keypair(2048)


def dkim_key_record(public_b64: str) -> str:
    """The TXT record to publish at <selector>._domainkey.<domain>."""
    return f"v=DKIM1; k=rsa; p={public_b64}"


def dkim_sign(message: bytes, pem: bytes, *, selector: str, domain: str) -> bytes:
    """The message with a DKIM-Signature header (over From, To, Subject) prepended."""
    signature = dkim.sign(
        message,
        selector.encode("ascii"),
        domain.encode("ascii"),
        pem,
        include_headers=[b"from", b"to", b"subject"],
    )
    return signature + message
