"""Ed25519 signing and verification (PyNaCl), behind two small functions and a class.

This is the only core module that imports PyNaCl; its exceptions never leave it.
"""

from __future__ import annotations

from collections.abc import Callable

import nacl.exceptions
import nacl.signing

__all__ = ["Identity", "Verifier", "verify"]

Verifier = Callable[[bytes, bytes, bytes, bytes], bool]
"""A signature check: ``(public_key, signature, domain, data) -> bool``."""


class Identity:
    """A node's (or an author's) Ed25519 key pair.

    Args:
        signing_key: a ``nacl.signing.SigningKey``, or its 32-byte seed.
    """

    __slots__ = ("_signing_key", "public_key")

    def __init__(self, signing_key: nacl.signing.SigningKey | bytes) -> None:
        if isinstance(signing_key, bytes):
            if len(signing_key) != 32:
                raise ValueError("an Ed25519 seed is 32 bytes")
            signing_key = nacl.signing.SigningKey(signing_key)
        if not isinstance(signing_key, nacl.signing.SigningKey):
            raise TypeError("signing_key must be a nacl.signing.SigningKey or a 32-byte seed")
        self._signing_key = signing_key
        self.public_key: bytes = bytes(signing_key.verify_key)

    @classmethod
    def generate(cls) -> Identity:
        """A fresh random key pair (from the OS's CSPRNG, via libsodium)."""
        return cls(nacl.signing.SigningKey.generate())

    @property
    def signing_key(self) -> nacl.signing.SigningKey:
        return self._signing_key

    def sign(self, domain: bytes, data: bytes) -> bytes:
        """The 64-byte signature of ``domain || data``."""
        return self._signing_key.sign(domain + data).signature


def verify(public_key: bytes, signature: bytes, domain: bytes, data: bytes) -> bool:
    """True when ``signature`` is ``public_key``'s signature of ``domain || data``."""
    try:
        nacl.signing.VerifyKey(public_key).verify(domain + data, signature)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError,
            nacl.exceptions.TypeError):
        return False
    return True
