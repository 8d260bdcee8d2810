"""What securing a link costs: handshakes per second on one core, and sealing's bytes.

    python -m somasync.bench handshake --trials 5 --count 2000

A trial runs ``count`` complete link handshakes in this process, both sides
(:class:`~somasync.core.handshake.Handshake`: fresh X25519 key pairs, the key agreement,
an Ed25519 signature and its check per side, sealed AUTH messages), and reports the
handshakes one node completes per second of one core (each completed handshake is one
side's work, so twice the pairs per second). The ceiling, measured in the same trial, is
the same primitives called directly: per side one X25519 key pair, one X25519 agreement,
one Ed25519 signature and one verification. The ratio says what the protocol adds to
its unavoidable cryptography. It then seals and opens 64 KiB of frames in records to
report sealing's throughput per core (MB/s) against raw ChaCha20-Poly1305 on the same
buffer.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

from somasync.bench.machine import machine_info
from somasync.core import crypto
from somasync.core.crypto import Identity
from somasync.core.handshake import MAX_RECORD, Handshake

__all__ = ["main"]

BUFFER = 64 * 1024


def _complete(dialer: Handshake, listener: Handshake) -> None:
    """Both sides' messages, as they would cross the wire."""
    to_listener, to_dialer = dialer.initial_bytes(), listener.initial_bytes()
    dialer_auth = dialer.receive(to_dialer)
    listener_auth = listener.receive(to_listener)
    dialer.receive(listener_auth)
    listener.receive(dialer_auth)
    if dialer.session is None or listener.session is None:
        raise RuntimeError("a handshake did not complete")


def handshakes_per_second(count: int) -> float:
    """One node's completed handshakes per second of one core (both sides run here)."""
    dialer_id, listener_id = Identity.generate(), Identity.generate()
    started = time.perf_counter()
    for _ in range(count):
        _complete(Handshake(dialer_id, "dialer", "127.0.0.1:1", dialer=True),
                  Handshake(listener_id, "listener", "127.0.0.1:2", dialer=False))
    return 2 * count / (time.perf_counter() - started)


def primitives_per_second(count: int) -> float:
    """The same per-side cryptography called directly: the ceiling."""
    identity = Identity.generate()
    _, peer_public = crypto.x25519_keypair()
    message = bytes(32)
    signature = identity.sign(b"x", message)
    started = time.perf_counter()
    for _ in range(count):
        secret, _ = crypto.x25519_keypair()
        crypto.x25519(secret, peer_public)
        identity.sign(b"x", message)
        crypto.verify(identity.public_key, signature, b"x", message)
    return count / (time.perf_counter() - started)


def sealing_mb_per_second(rounds: int) -> tuple[float, float]:
    """(records sealed and opened, raw AEAD seal and open) in MB/s of frames."""
    dialer = Handshake(Identity.generate(), "a", None, dialer=True)
    listener = Handshake(Identity.generate(), "b", None, dialer=False)
    _complete(dialer, listener)
    assert dialer.session is not None
    assert listener.session is not None
    sender, receiver = dialer.session, listener.session
    data = bytes(range(256)) * (BUFFER // 256)
    started = time.perf_counter()
    for _ in range(rounds):
        receiver.open(sender.seal(data))
    sealed = rounds * BUFFER / (time.perf_counter() - started) / 1e6
    key, nonce = bytes(32), bytes(12)
    started = time.perf_counter()
    for _ in range(rounds):
        crypto.aead_open(key, nonce, crypto.aead_seal(key, nonce, data))
    raw = rounds * BUFFER / (time.perf_counter() - started) / 1e6
    return sealed, raw


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m somasync.bench handshake",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--count", type=int, default=2000, help="handshakes per trial")
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    if args.trials < 1 or args.count < 1:
        parser.error("--trials and --count must be >= 1")
    rows = []
    for _ in range(args.trials):
        measured = handshakes_per_second(args.count)
        ceiling = primitives_per_second(args.count)
        sealed, raw = sealing_mb_per_second(max(50, args.count // 10))
        rows.append({"handshakes_per_s": measured, "primitives_per_s": ceiling,
                     "ratio": measured / ceiling, "sealing_mb_per_s": sealed,
                     "raw_aead_mb_per_s": raw, "sealing_ratio": sealed / raw})

    def summary(field: str) -> tuple[float, float, float]:
        values = [row[field] for row in rows]
        return statistics.median(values), min(values), max(values)

    print(f"{args.trials} trials x {args.count} handshakes, one core; records of up to "
          f"{MAX_RECORD // 1024} KiB, writes of {BUFFER // 1024} KiB")
    for field, label, unit in (
            ("handshakes_per_s", "handshakes completed per node", "/s"),
            ("primitives_per_s", "ceiling: X25519 pair + agreement + sign + verify", "/s"),
            ("ratio", "handshake / ceiling", ""),
            ("sealing_mb_per_s", "records sealed + opened", " MB/s"),
            ("raw_aead_mb_per_s", "raw ChaCha20-Poly1305 seal + open", " MB/s"),
            ("sealing_ratio", "records / raw AEAD", "")):
        median, low, high = summary(field)
        print(f"  {label:<50} median {median:>10,.2f}{unit}  ({low:,.2f}-{high:,.2f})")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"machine": machine_info(), "trials": rows, "count": args.count},
                      handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
