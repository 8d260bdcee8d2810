"""The ceiling every throughput figure is compared with: raw PyNaCl verifies/s on one
core, measured in the same run as the figure (the machines are shared and noisy)."""

from __future__ import annotations

import os
import statistics
import time

import nacl.signing

from somasync.core import wire

__all__ = ["raw_verify_rate", "raw_verify_samples"]


def raw_verify_rate(samples: int = 5000, size: int = 300) -> float:
    """Single-core Ed25519 verifies/s (PyNaCl) of ``size``-byte signed messages."""
    key = nacl.signing.SigningKey.generate()
    verify_key = key.verify_key
    signed = [key.sign(wire.MESSAGE_DOMAIN + os.urandom(size)) for _ in range(samples)]
    started = time.perf_counter()
    for item in signed:
        verify_key.verify(item)
    return samples / (time.perf_counter() - started)


def raw_verify_samples(trials: int = 5, samples: int = 2000,
                       size: int = 300) -> dict[str, object]:
    """Median, min and max of ``trials`` measurements of :func:`raw_verify_rate`."""
    rates = [raw_verify_rate(samples, size) for _ in range(trials)]
    return {"median": statistics.median(rates), "min": min(rates), "max": max(rates),
            "samples": rates, "message_bytes": size}
