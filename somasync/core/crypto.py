"""The primitives, behind small functions and a class: Ed25519 signatures, X25519 key
agreement and ChaCha20-Poly1305 sealing (all PyNaCl, that is libsodium).

This is the only core module that imports PyNaCl; its exceptions never leave it.
"""

from __future__ import annotations

from collections.abc import Callable

import nacl.bindings
import nacl.exceptions
import nacl.signing
import nacl.utils

__all__ = ["AEAD_TAG_SIZE", "Identity", "Verifier", "aead_open", "aead_seal",
           "ed25519_to_x25519", "random_bytes", "verify", "x25519", "x25519_keypair",
           "xaead_open", "xaead_seal"]

AEAD_TAG_SIZE = 16

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

    def x25519_secret(self) -> bytes:
        """The X25519 secret of this key pair (for keys agreed with a peer's static key:
        one key pair is the node's whole identity)."""
        return bytes(self._signing_key.to_curve25519_private_key())


def verify(public_key: bytes, signature: bytes, domain: bytes, data: bytes) -> bool:
    """True when ``signature`` is ``public_key``'s signature of ``domain || data``."""
    # Straight to libsodium (what VerifyKey.verify ends in): building a VerifyKey and its
    # checks cost 2 us a message, and this runs once for every message received. The
    # binding reads 32 key bytes whatever it is given, so the sizes are checked here.
    if (not isinstance(public_key, bytes) or len(public_key) != _KEY_SIZE
            or not isinstance(signature, bytes) or len(signature) != _SIGNATURE_SIZE):
        return False
    signed = signature + domain + data
    if _lib is not None:
        # libsodium writes the opened message out and nobody reads it: one buffer for
        # that, grown as needed, instead of allocating and copying one per call (were two
        # threads to verify at once, they would only overwrite bytes nobody reads).
        scratch = _scratch[0]
        if len(scratch) < len(signed):
            scratch = _scratch[0] = _ffi.new("unsigned char[]", 2 * len(signed))
        failed: int = _lib.crypto_sign_open(scratch, _scratch[1], signed, len(signed),
                                            public_key)
        return failed == 0
    try:
        nacl.bindings.crypto_sign_open(signed, public_key)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError,
            nacl.exceptions.TypeError):
        return False
    return True


_KEY_SIZE = nacl.bindings.crypto_sign_PUBLICKEYBYTES
_SIGNATURE_SIZE = nacl.bindings.crypto_sign_BYTES
try:
    # PyNaCl's own cffi module, under its public bindings: calling it directly spares a
    # buffer allocation and a copy per verification (1 us of 55). Absent (a PyNaCl that
    # moved it), the public binding does the same.
    from nacl._sodium import ffi as _ffi, lib as _lib

    _scratch = [_ffi.new("unsigned char[]", 4096), _ffi.new("unsigned long long *")]
except ImportError:  # pragma: no cover - depends on the installed PyNaCl
    _ffi = _lib = None


def random_bytes(size: int) -> bytes:
    """``size`` bytes from the OS's CSPRNG (keys and nonces; never the injected RNG, which
    is for protocol choices that tests replay)."""
    return nacl.utils.random(size)


def x25519_keypair(secret: bytes | None = None) -> tuple[bytes, bytes]:
    """A (secret, public) X25519 key pair; fresh unless ``secret`` (32 bytes) is given."""
    if secret is None:
        secret = nacl.utils.random(32)
    return secret, nacl.bindings.crypto_scalarmult_base(secret)


def x25519(secret: bytes, public: bytes) -> bytes | None:
    """The shared secret of ``secret`` and the peer's ``public``, or None when the peer
    sent a low-order point (the result would be all zeros, known to anyone)."""
    try:
        shared = nacl.bindings.crypto_scalarmult(secret, public)
    except (nacl.exceptions.RuntimeError, nacl.exceptions.TypeError,
            nacl.exceptions.ValueError):
        return None
    return None if shared == bytes(32) else shared


_UNOPENED = (nacl.exceptions.CryptoError, nacl.exceptions.ValueError,
             nacl.exceptions.TypeError)  # what PyNaCl raises for a box that does not open


def aead_seal(key: bytes, nonce: bytes, data: bytes, associated: bytes | None = None) -> bytes:
    """ChaCha20-Poly1305 (IETF, 12-byte nonce) ciphertext of ``data``, tag appended."""
    if _direct_aead(key, nonce, data, associated):
        # Straight to libsodium, as verify: PyNaCl's binding checks and formats its error
        # messages on every call, 2.7 of its 5.3 us for a 1 KB record, and a loaded node
        # seals a record per write to every neighbour.
        size = len(data) + _AEAD_TAG_SIZE
        out = _ffi.new("unsigned char[]", size)
        extra = b"" if associated is None else associated
        _lib.crypto_aead_chacha20poly1305_ietf_encrypt(
            out, _ffi.NULL, data, len(data), extra, len(extra), _ffi.NULL, nonce, key)
        sealed: bytes = _ffi.buffer(out, size)[:]
        return sealed
    return nacl.bindings.crypto_aead_chacha20poly1305_ietf_encrypt(data, associated, nonce,
                                                                    key)


def aead_open(key: bytes, nonce: bytes, sealed: bytes,
              associated: bytes | None = None) -> bytes | None:
    """The plaintext of ``sealed``, or None when it was altered (or sealed another way)."""
    if _direct_aead(key, nonce, sealed, associated):
        if len(sealed) < _AEAD_TAG_SIZE:
            return None
        size = len(sealed) - _AEAD_TAG_SIZE
        out = _ffi.new("unsigned char[]", max(1, size))
        extra = b"" if associated is None else associated
        failed: int = _lib.crypto_aead_chacha20poly1305_ietf_decrypt(
            out, _ffi.NULL, _ffi.NULL, sealed, len(sealed), extra, len(extra), nonce, key)
        if failed:
            return None
        plain: bytes = _ffi.buffer(out, size)[:]
        return plain
    try:
        return nacl.bindings.crypto_aead_chacha20poly1305_ietf_decrypt(sealed, associated,
                                                                        nonce, key)
    except _UNOPENED:
        return None


def _direct_aead(key: bytes, nonce: bytes, data: bytes, associated: bytes | None) -> bool:
    """Whether libsodium may be called directly: bytes of the sizes it reads. Anything
    else goes through PyNaCl's binding, which refuses it as it always did."""
    return (_lib is not None and type(key) is bytes and len(key) == _AEAD_KEY_SIZE
            and type(nonce) is bytes and len(nonce) == _AEAD_NONCE_SIZE
            and type(data) is bytes and (associated is None or type(associated) is bytes))


_AEAD_KEY_SIZE = nacl.bindings.crypto_aead_chacha20poly1305_ietf_KEYBYTES
_AEAD_NONCE_SIZE = nacl.bindings.crypto_aead_chacha20poly1305_ietf_NPUBBYTES
_AEAD_TAG_SIZE = nacl.bindings.crypto_aead_chacha20poly1305_ietf_ABYTES


def ed25519_to_x25519(public_key: bytes) -> bytes | None:
    """The X25519 public key of an Ed25519 public key, or None when it is not a valid
    point (a key a peer made up)."""
    try:
        return nacl.bindings.crypto_sign_ed25519_pk_to_curve25519(public_key)
    except (nacl.exceptions.RuntimeError, nacl.exceptions.TypeError,
            nacl.exceptions.ValueError):
        return None


def xaead_seal(key: bytes, nonce: bytes, data: bytes, associated: bytes | None = None) -> bytes:
    """XChaCha20-Poly1305 (24-byte nonce, safe to pick at random) ciphertext of ``data``."""
    return nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(data, associated, nonce,
                                                                     key)


def xaead_open(key: bytes, nonce: bytes, sealed: bytes,
               associated: bytes | None = None) -> bytes | None:
    """The plaintext of ``sealed`` (XChaCha20-Poly1305), or None when it does not open."""
    try:
        return nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(sealed, associated,
                                                                         nonce, key)
    except _UNOPENED:
        return None
