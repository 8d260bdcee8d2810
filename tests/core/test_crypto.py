"""crypto.verify: the signature check every received message goes through."""

from __future__ import annotations

import nacl.bindings
import pytest
from hypothesis import given, strategies as st

from somasync.core import crypto

IDENTITY = crypto.Identity(bytes([5]) * 32)
DOMAIN = b"somasync/test/v1\x00"


def test_a_valid_signature_verifies_and_any_other_input_does_not() -> None:
    data = b"x" * 300
    signature = IDENTITY.sign(DOMAIN, data)
    other = crypto.Identity(bytes([6]) * 32)
    assert crypto.verify(IDENTITY.public_key, signature, DOMAIN, data)
    assert not crypto.verify(IDENTITY.public_key, signature, DOMAIN, data + b"y")
    assert not crypto.verify(IDENTITY.public_key, signature, b"another domain", data)
    assert not crypto.verify(other.public_key, signature, DOMAIN, data)


def test_keys_and_signatures_of_the_wrong_size_or_type_are_refused() -> None:
    """libsodium reads 32 key bytes and 64 signature bytes whatever it is handed: a key
    with a byte too many would verify as its first 32 bytes if the size went unchecked."""
    data = b"payload"
    signature = IDENTITY.sign(DOMAIN, data)
    key = IDENTITY.public_key
    assert not crypto.verify(key + b"\x00", signature, DOMAIN, data)
    assert not crypto.verify(key[:31], signature, DOMAIN, data)
    assert not crypto.verify(key, signature[:63], DOMAIN, data)
    assert not crypto.verify(key, signature + b"\x00", DOMAIN, data)
    assert not crypto.verify(bytearray(key), signature, DOMAIN, data)  # type: ignore[arg-type]
    assert not crypto.verify(key, key.hex(), DOMAIN, data)  # type: ignore[arg-type]


def test_messages_larger_than_the_scratch_buffer_verify_and_smaller_ones_after() -> None:
    large = bytes(range(256)) * 1024
    assert crypto.verify(IDENTITY.public_key, IDENTITY.sign(DOMAIN, large), DOMAIN, large)
    assert not crypto.verify(IDENTITY.public_key, IDENTITY.sign(DOMAIN, large), DOMAIN,
                             large[:-1])
    small = b"s"
    assert crypto.verify(IDENTITY.public_key, IDENTITY.sign(DOMAIN, small), DOMAIN, small)


@given(st.binary(max_size=64), st.integers(0, 63), st.integers(1, 255))
def test_any_changed_signature_byte_is_refused(data: bytes, position: int, flip: int) -> None:
    signature = bytearray(IDENTITY.sign(DOMAIN, data))
    signature[position] ^= flip
    assert not crypto.verify(IDENTITY.public_key, bytes(signature), DOMAIN, data)


@given(key=st.binary(min_size=32, max_size=32), nonce=st.binary(min_size=12, max_size=12),
       data=st.binary(max_size=3000), associated=st.one_of(st.none(), st.binary(max_size=40)),
       flip=st.integers(min_value=0))
def test_records_seal_and_open_as_pynacl_does_and_any_change_is_refused(
        key: bytes, nonce: bytes, data: bytes, associated: bytes | None, flip: int) -> None:
    # crypto calls libsodium directly (PyNaCl's binding costs twice the sealing itself):
    # the bytes must be exactly PyNaCl's, both ways.
    sealed = crypto.aead_seal(key, nonce, data, associated)
    assert sealed == nacl.bindings.crypto_aead_chacha20poly1305_ietf_encrypt(
        data, associated, nonce, key)
    assert crypto.aead_open(key, nonce, sealed, associated) == data
    altered = bytearray(sealed)
    altered[flip % len(altered)] ^= 1 + flip % 255
    assert crypto.aead_open(key, nonce, bytes(altered), associated) is None
    assert crypto.aead_open(key, nonce, sealed[: flip % 16], associated) is None
    assert crypto.aead_open(key, nonce, sealed, (associated or b"") + b"!") is None


def test_records_of_another_type_are_refused_as_pynacl_refuses_them() -> None:
    key, nonce = bytes(32), bytes(12)
    sealed = crypto.aead_seal(key, nonce, b"record")
    for other in (bytearray(sealed), memoryview(sealed)):
        assert crypto.aead_open(key, nonce, other) is None  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        crypto.aead_seal(key, nonce, bytearray(b"record"))  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        crypto.aead_seal(key[:31], nonce, b"record")
