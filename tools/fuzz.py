"""Fuzz the node's inputs: frames, datagrams, handshake messages and ring records.

    python tools/fuzz.py --frames 1000000 --datagrams 1000000 --seed 7
    python tools/fuzz.py --seconds 60                # as many as a minute allows

Each input is a valid one (as the codec writes it) mutated (bits flipped, bytes inserted,
deleted or overwritten, cut short, two inputs spliced) or plain random bytes. Targets:

* frames: an established, sealed link between two endpoints (``somasync.testing.Mesh``);
  the hostile side sends the mutated frame inside a valid record, as a peer that finished
  the handshake can. A link the endpoint closes is replaced by a new one.
* datagrams: a node's control part (membership and overlay) with its datagram seal off,
  so mutations reach the decoders behind it, and one with the seal on.
* handshake messages: a handshake's ``receive`` (E and AUTH, mutated).
* ring records: the sharded node's record decoders.

An *escaped* exception is any exception out of an entry point that must never raise
(``Endpoint.receive_bytes``, ``NodeControl.receive_datagram``), or any but DecodeError
out of a decoder; each is printed with its input in hex. RSS is sampled before and after.
Exit status 1 when anything escaped. Deterministic for a given ``--seed``.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
import traceback
from collections.abc import Callable, Iterator

import psutil

from somasync.config import MembershipConfig, NodeConfig, OverlayConfig, SecurityConfig
from somasync.core import direct, wire
from somasync.core.crypto import Identity
from somasync.core.handshake import Handshake
from somasync.core.membership_wire import (
    CLAIM_DOMAIN,
    ClaimType,
    DatagramKind,
    encode_claim_body,
    encode_datagram,
)
from somasync.core.node import OVERLAY_CHANNEL, NodeControl
from somasync.core.payload import MessageType
from somasync.errors import DecodeError
from somasync.message import Message
from somasync.testing import WALL, Mesh
from somasync.workers.records import (
    SupervisorKind,
    decode_batch,
    decode_deliveries,
    decode_delivery,
    encode_delivery,
    encode_item,
)

__all__ = ["Fuzzer", "main"]


def mutate(rng: random.Random, data: bytes, other: bytes) -> bytes:
    """One mutation of ``data`` (``other``: a second valid input, for splicing)."""
    buffer = bytearray(data)
    choice = rng.randrange(7)
    if choice == 0 or not buffer:
        return rng.randbytes(rng.randrange(0, 300))
    if choice == 1:
        for _ in range(rng.randint(1, 4)):
            buffer[rng.randrange(len(buffer))] ^= 1 << rng.randrange(8)
    elif choice == 2:
        buffer[rng.randrange(len(buffer) + 1):0] = rng.randbytes(rng.randint(1, 16))
    elif choice == 3:
        start = rng.randrange(len(buffer))
        del buffer[start:start + rng.randint(1, 16)]
    elif choice == 4:
        del buffer[rng.randrange(len(buffer)):]
    elif choice == 5:
        position = rng.randrange(len(buffer))
        buffer[position:position + 8] = rng.choice(
            [b"\xff" * 8, bytes(8), (2**63).to_bytes(8, "big"), rng.randbytes(8)])
    else:
        cut = rng.randrange(len(buffer) + 1)
        buffer = buffer[:cut] + other[rng.randrange(len(other) + 1):]
    return bytes(buffer)


class Fuzzer:
    """Valid inputs of every kind, their mutations, and the targets that take them."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.escaped: list[tuple[str, bytes, str]] = []
        self.counts: dict[str, int] = {}
        self.key = Identity(bytes([3]) * 32)
        self._new_mesh()
        self._frames = self._valid_frames()
        self._datagrams = self._valid_datagrams()
        config = NodeConfig(node_id="fuzz", membership=MembershipConfig.local(),
                            overlay=OverlayConfig.local())
        self.open_node = NodeControl(config.replace(
            security=SecurityConfig(seal_datagrams=False)), Identity(bytes([5]) * 32),
            "10.0.0.1:7946", rng=random.Random(seed), now=0.0, wall_offset=WALL)
        self.sealed_node = NodeControl(config, Identity(bytes([6]) * 32), "10.0.0.2:7946",
                                       rng=random.Random(seed), now=0.0, wall_offset=WALL)
        for node in (self.open_node, self.sealed_node):
            node.start(["10.0.0.9:7946"], [], now=0.0)
        self.now = 0.0

    # --- valid inputs ------------------------------------------------------------------

    def _message(self, sequence: int) -> wire.Envelope:
        message = Message(MessageType.Data(f"fuzz {sequence}"), "fuzz-feed",
                          sequence=sequence, timestamp=WALL, ttl=3600)
        return message.sign_with_ed25519(self.key).to_envelope()

    def _valid_frames(self) -> list[bytes]:
        envelope = self._message(1)
        stream = (self.key.public_key, "fuzz-feed")
        entry = wire.encode_tree_entry(envelope.id, wire.stream_tag(*stream[:1],
                                                                    stream[1].encode()))
        return [
            wire.encode_message_frame(envelope, hops=1),
            wire.encode_message_frame(self._message(2), hops=0, repair=True),
            wire.encode_digest({stream: [(1, 3)]}, reply=False),
            wire.encode_digest({}, reply=True),
            wire.encode_tree_frame(wire.FrameKind.IHAVE, [entry]),
            wire.encode_tree_frame(wire.FrameKind.GRAFT, [entry, entry]),
            wire.encode_tree_frame(wire.FrameKind.PRUNE, [entry]),
            *self._direct_frames(),
        ]

    def _direct_frames(self) -> list[bytes]:
        """A direct message for the target, one to pass on, and an acknowledgement."""
        target = self.mesh.nodes["target"].identity.public_key
        elsewhere = bytes([8]) * 32
        frames = []
        for to in (target, elsewhere):
            message = Message(MessageType.Data("fuzz direct"), "fuzz-feed", sequence=0,
                              timestamp=WALL, headers={direct.DIRECT_HEADER: to.hex()})
            signed = message.sign_with_ed25519(self.key)
            frames.append(direct.encode_direct(
                direct.DATA, 0, to, self.key.public_key,
                signed.signature + signed.envelope_bytes,  # type: ignore[operator]
                via=(target,) if to == elsewhere else ()))
        message_id = bytes(16)
        frames.append(direct.encode_direct(
            direct.ACK, 1, elsewhere, self.key.public_key,
            message_id + self.key.sign(direct.ACK_DOMAIN, message_id + elsewhere)))
        return frames

    def _valid_datagrams(self) -> list[bytes]:
        other = Identity(bytes([7]) * 32)
        alive = encode_claim_body(ClaimType.ALIVE, other.public_key, 3, node_id="o",
                                  address="10.0.0.7:7946")
        suspect = encode_claim_body(ClaimType.SUSPECT, bytes([5]) * 32, 0,
                                    author=other.public_key)
        claims = [body + other.sign(CLAIM_DOMAIN, body) for body in (alive, suspect)]
        sender = other.public_key
        return [
            encode_datagram(DatagramKind.PING, sender, 7, claims, target=bytes(32)),
            encode_datagram(DatagramKind.ACK, sender, 7, []),
            encode_datagram(DatagramKind.PING_REQ, sender, 8, claims[:1], target=bytes(32),
                            target_address="10.0.0.8:7946"),
            encode_datagram(DatagramKind.PUSH, sender, 0, claims, reply_wanted=True),
            encode_datagram(DatagramKind.GOSSIP, sender, 0, claims),
            bytes([OVERLAY_CHANNEL, 1]) + b"10.0.0.7:7946",
            bytes([OVERLAY_CHANNEL, 3, 1]) + b"\x00\x0d10.0.0.7:7946",
        ]

    def _new_mesh(self) -> None:
        self.mesh = Mesh()
        self.mesh.add("target")
        self.mesh.add("hostile")
        self.wire = self.mesh.connect("hostile", "target")
        self.mesh.settle()

    def inputs(self, pool: list[bytes]) -> Iterator[bytes]:
        rng = self.rng
        while True:
            yield mutate(rng, rng.choice(pool), rng.choice(pool))

    # --- targets -----------------------------------------------------------------------

    def _escape(self, target: str, data: bytes) -> None:
        self.escaped.append((target, data, traceback.format_exc(limit=4)))

    def frame(self, data: bytes) -> None:
        if ("target", self.wire.link_b) not in self.mesh.wires:
            self._new_mesh()  # the target closed the last link: a new peer
        mesh = self.mesh
        try:
            mesh.inject("target", self.wire.link_b, data)
            mesh.settle(max_rounds=50)
            mesh.now += 0.01
        except Exception:
            self._escape("frame", data)
            self._new_mesh()

    def datagram(self, data: bytes) -> None:
        self.now += 0.001
        for node in (self.open_node, self.sealed_node):
            try:
                node.receive_datagram("10.0.0.7:7946", data, now=self.now)
                if node.get_timer() <= self.now:
                    node.handle_timer(now=self.now)
                node.datagrams_to_send(now=self.now)
                node.take_events()
                node.take_dials()
                node.take_closes()
            except Exception:
                self._escape("datagram", data)

    def handshake(self, data: bytes) -> None:
        side = Handshake(Identity(bytes([9]) * 32), "fuzz", None, dialer=False,
                         ephemeral=bytes([1]) * 32)
        try:
            side.receive(data)
        except DecodeError:
            pass
        except Exception:
            self._escape("handshake", data)

    def record(self, data: bytes) -> None:
        for decode in (lambda d: list(decode_batch(d)), decode_delivery,
                       lambda d: list(decode_deliveries(d))):
            try:
                decode(data)
            except DecodeError:
                pass
            except Exception:
                self._escape("record", data)

    def run(self, target: str, count: int, deadline: float) -> int:
        pools: dict[str, tuple[list[bytes], Callable[[bytes], None]]] = {
            "frame": (self._frames, self.frame),
            "datagram": (self._datagrams, self.datagram),
            "handshake": (self._handshakes(), self.handshake),
            "record": (self._records(), self.record),
        }
        pool, handle = pools[target]
        done = 0
        for data in self.inputs(pool):
            if done >= count or time.monotonic() > deadline:
                break
            handle(data)
            done += 1
        self.counts[target] = self.counts.get(target, 0) + done
        return done

    def _handshakes(self) -> list[bytes]:
        dialer = Handshake(Identity(bytes([8]) * 32), "peer", "10.0.0.8:7946", dialer=True,
                           ephemeral=bytes([2]) * 32)
        listener = Handshake(Identity(bytes([9]) * 32), "fuzz", None, dialer=False,
                             ephemeral=bytes([1]) * 32)
        e = dialer.initial_bytes()
        auth = dialer.receive(listener.initial_bytes())
        return [e, e + auth, e + auth + b"\x00\x00\x00\x20" + bytes(32)]

    def _records(self) -> list[bytes]:
        envelope = self._message(3)
        return [encode_item(1, 5, 128, wire.encode_message_frame(envelope, hops=0)),
                encode_delivery("peer", envelope),
                encode_item(SupervisorKind.DELIVER, 0, 128, encode_delivery("peer", envelope))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=10_000)
    parser.add_argument("--datagrams", type=int, default=10_000)
    parser.add_argument("--handshakes", type=int, default=10_000)
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=None,
                        help="stop each target after this long instead (counts are caps)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    process = psutil.Process()
    fuzzer = Fuzzer(args.seed)
    rss_before = process.memory_info().rss
    started = time.monotonic()
    for target, count in (("frame", args.frames), ("datagram", args.datagrams),
                          ("handshake", args.handshakes), ("record", args.records)):
        limit = time.monotonic() + (args.seconds if args.seconds else float("inf"))
        done = fuzzer.run(target, count, limit)
        print(f"{target:>10}: {done:,} inputs", flush=True)
    rss_after = process.memory_info().rss
    print(f"{sum(fuzzer.counts.values()):,} inputs in {time.monotonic() - started:.1f} s; "
          f"{len(fuzzer.escaped)} escaped; RSS {rss_before / 2**20:.1f} -> "
          f"{rss_after / 2**20:.1f} MiB")
    for target, data, trace in fuzzer.escaped[:20]:
        print(f"--- {target}: {data.hex()}\n{trace}")
    return 1 if fuzzer.escaped else 0


if __name__ == "__main__":
    sys.exit(main())
