"""The cache of proven batch trees: a message of a known batch hashes only up to the
first proven node, and must still be refused for any byte a relay changed."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from somasync.core import crypto, wire
from somasync.core.batches import BatchVerifier
from somasync.core.crypto import Identity

KEY = Identity(bytes(range(32)))
PROPERTY = settings(max_examples=200, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


def signed_batch(count: int, seed: int = 0) -> tuple[list[bytes], list[bytes]]:
    """(message ids, their authenticators) of one batch signed by KEY."""
    rng = random.Random(seed)
    ids = [rng.randbytes(wire.ID_SIZE) for _ in range(count)]
    depth, root, proofs = wire.build_batch(ids)
    signature = KEY.sign(wire.BATCH_DOMAIN, wire.batch_signed_bytes(depth, root))
    return ids, [signature + proof for proof in proofs]


class Roots:
    """The Ed25519 check the endpoint passes in, counting its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, origin: bytes, signature: bytes, signed: bytes) -> bool:
        self.calls += 1
        return crypto.verify(origin, signature, wire.BATCH_DOMAIN, signed)


def test_one_signature_check_per_batch_and_fewer_hashes_for_later_messages(
        monkeypatch: pytest.MonkeyPatch) -> None:
    ids, authenticators = signed_batch(64)
    hashes = 0
    real = wire.parent_hash

    def counting(left: bytes, right: bytes) -> bytes:
        nonlocal hashes
        hashes += 1
        return real(left, right)

    monkeypatch.setattr("somasync.core.batches._parent", counting)
    verifier, roots = BatchVerifier(), Roots()
    for message_id, authenticator in zip(ids, authenticators, strict=True):
        assert verifier.check(KEY.public_key, message_id, authenticator, roots)
    assert roots.calls == 1
    assert verifier.signatures_checked == 1
    assert verifier.proven_from_cache == 63
    # 6 for the first message, then one per new pair and one per level of each new
    # subtree: 63 in all, against 6 x 64 = 384 without the cache.
    assert hashes == 63


@PROPERTY
@given(count=st.integers(2, 70), data=st.data())
def test_any_changed_byte_is_refused_after_other_messages_of_the_batch_were_proven(
        count: int, data: st.DataObject) -> None:
    ids, authenticators = signed_batch(count, seed=count)
    verifier, roots = BatchVerifier(), Roots()
    honest = data.draw(st.lists(st.integers(0, count - 1), min_size=1, unique=True))
    for i in honest:
        assert verifier.check(KEY.public_key, ids[i], authenticators[i], roots)
    victim = data.draw(st.integers(0, count - 1))
    authenticator = bytearray(authenticators[victim])
    where = data.draw(st.integers(0, len(authenticator) - 1))
    authenticator[where] ^= data.draw(st.integers(1, 255))
    depth, index = wire.BATCH_HEAD.unpack_from(authenticator, wire.SIGNATURE_SIZE)
    if not 0 < depth <= wire.MAX_BATCH_DEPTH or index >> depth \
            or len(authenticator) != wire.SIGNATURE_SIZE + wire.BATCH_HEAD.size \
            + depth * wire.ID_SIZE:
        return  # split_signed refuses this one before any proof is checked
    assert not verifier.check(KEY.public_key, ids[victim], bytes(authenticator), roots)
    # Nor does a refused copy spoil the honest one.
    assert verifier.check(KEY.public_key, ids[victim], authenticators[victim], roots)


@PROPERTY
@given(count=st.integers(2, 70), order=st.randoms(use_true_random=False))
def test_every_honest_message_is_accepted_in_any_order(count: int,
                                                       order: random.Random) -> None:
    ids, authenticators = signed_batch(count, seed=count)
    verifier, roots = BatchVerifier(), Roots()
    indexes = list(range(count))
    order.shuffle(indexes)
    for i in indexes:
        assert verifier.check(KEY.public_key, ids[i], authenticators[i], roots)
        # And again: a repair or a second path's copy.
        assert verifier.check(KEY.public_key, ids[i], authenticators[i], roots)
    assert roots.calls == 1


def test_a_proof_never_vouches_for_another_message_of_the_same_batch() -> None:
    ids, authenticators = signed_batch(8)
    verifier, roots = BatchVerifier(), Roots()
    for message_id, authenticator in zip(ids, authenticators, strict=True):
        assert verifier.check(KEY.public_key, message_id, authenticator, roots)
    for i, j in [(0, 1), (1, 0), (2, 5), (7, 6)]:
        assert not verifier.check(KEY.public_key, ids[i], authenticators[j], roots)
    assert not verifier.check(KEY.public_key, bytes(wire.ID_SIZE), authenticators[0], roots)


def test_the_same_signature_under_another_origin_is_checked_again_and_refused() -> None:
    ids, authenticators = signed_batch(4)
    verifier, roots = BatchVerifier(), Roots()
    assert verifier.check(KEY.public_key, ids[0], authenticators[0], roots)
    other = Identity(bytes(32)).public_key
    assert not verifier.check(other, ids[1], authenticators[1], roots)
    assert roots.calls == 2


def test_memory_is_bounded_in_batches_and_nodes_and_an_evicted_batch_is_checked_again() -> None:
    verifier, roots = BatchVerifier(max_batches=3, max_nodes=200), Roots()
    batches = [signed_batch(64, seed=seed) for seed in range(5)]
    for ids, authenticators in batches:
        for message_id, authenticator in zip(ids, authenticators, strict=True):
            assert verifier.check(KEY.public_key, message_id, authenticator, roots)
            assert len(verifier) <= 3
            assert verifier.nodes <= 200
    assert roots.calls == 5
    ids, authenticators = batches[0]
    assert verifier.check(KEY.public_key, ids[3], authenticators[3], roots)
    assert roots.calls == 6, "the first batch was evicted: its root is verified again"


def test_bad_bounds_are_refused() -> None:
    with pytest.raises(ValueError, match="max_batches"):
        BatchVerifier(max_batches=0)
    with pytest.raises(ValueError, match="max_nodes"):
        BatchVerifier(max_nodes=0)
