"""The ceiling every throughput figure is compared with: raw PyNaCl verifies/s on one
core, measured in the same run as the figure (the machines are shared and noisy); for
batch-signed messages, the raw rate of checking their proofs and one signature per
batch the same way."""

from __future__ import annotations

import os
import statistics
import time

import nacl.signing

from somasync.core import wire

__all__ = ["raw_batch_verify_rate", "raw_batch_verify_samples", "raw_verify_rate",
           "raw_verify_samples"]


def raw_verify_rate(samples: int = 5000, size: int = 300) -> float:
    """Single-core Ed25519 verifies/s (PyNaCl) of ``size``-byte signed messages."""
    key = nacl.signing.SigningKey.generate()
    verify_key = key.verify_key
    signed = [key.sign(wire.MESSAGE_DOMAIN + os.urandom(size)) for _ in range(samples)]
    started = time.perf_counter()
    for item in signed:
        verify_key.verify(item)
    return samples / (time.perf_counter() - started)


def raw_batch_verify_rate(batch_size: int, samples: int = 5000, size: int = 300) -> float:
    """Single-core messages/s checked when they come batch-signed, ``batch_size`` to a
    signature: per message its id (BLAKE2b of ``size`` bytes) and the root from its
    proof, per batch one Ed25519 verify. The ceiling of batch signing as
    :func:`raw_verify_rate` is that of single signatures: the crypto alone, nothing else
    a node does."""
    key = nacl.signing.SigningKey.generate()
    verify_key = key.verify_key
    bodies = [os.urandom(size) for _ in range(samples)]
    batches = []
    for start in range(0, samples, batch_size):
        chunk = bodies[start : start + batch_size]
        if len(chunk) < 2:
            break
        depth, root, proofs = wire.build_batch([wire.message_id(b) for b in chunk])
        root_signature = key.sign(wire.BATCH_DOMAIN + wire.batch_signed_bytes(depth, root))
        batches.append((chunk, [root_signature.signature + proof for proof in proofs]))
    checked = 0
    started = time.perf_counter()
    for chunk, authenticators in batches:
        verified: set[bytes] = set()
        for body, authenticator in zip(chunk, authenticators, strict=True):
            signature, signed = wire.batch_root(wire.message_id(body), authenticator)
            if signed not in verified:
                verify_key.verify(wire.BATCH_DOMAIN + signed, signature)
                verified.add(signed)
            checked += 1
    return checked / (time.perf_counter() - started)


def raw_verify_samples(trials: int = 5, samples: int = 2000,
                       size: int = 300) -> dict[str, object]:
    """Median, min and max of ``trials`` measurements of :func:`raw_verify_rate`."""
    rates = [raw_verify_rate(samples, size) for _ in range(trials)]
    return _summary(rates, message_bytes=size)


def raw_batch_verify_samples(batch_size: int, trials: int = 5, samples: int = 2000,
                             size: int = 300) -> dict[str, object]:
    """Median, min and max of ``trials`` measurements of :func:`raw_batch_verify_rate`:
    the ceiling of a mesh whose messages come batch-signed."""
    rates = [raw_batch_verify_rate(batch_size, samples, size) for _ in range(trials)]
    return _summary(rates, message_bytes=size, batch_size=batch_size)


def _summary(rates: list[float], **about: int) -> dict[str, object]:
    return {"median": statistics.median(rates), "min": min(rates), "max": max(rates),
            "samples": rates, **about}
