"""Print the wire format as the codec writes it, or decode a captured frame.

    python tools/wire_reference.py                 # one real example of every frame kind
    python tools/wire_reference.py --decode HEX    # a frame, length prefix included

Every example is built by ``somasync.core.wire`` itself from a fixed key, so the output
is the reference: it cannot drift from the code. On a link these frames travel inside
sealed records after the handshake (``somasync.core.handshake`` documents both). Exit
status 1 when ``--decode`` is given bytes the decoder refuses (its reason is printed).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator

from somasync.core import direct, wire
from somasync.core.crypto import Identity
from somasync.errors import DecodeError

EXAMPLE_SEED = bytes(range(32))  # a fixed key: the same bytes on every run
WALL_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def _hex(data: bytes, indent: str = "    ") -> Iterator[str]:
    for start in range(0, len(data), 32):
        chunk = data[start : start + 32]
        yield f"{indent}{start:04x}  " + " ".join(chunk[i : i + 4].hex()
                                                for i in range(0, len(chunk), 4))


def examples() -> list[tuple[str, bytes]]:
    """(what it shows, frame with length prefix) for every frame kind."""
    identity = Identity(EXAMPLE_SEED)
    body = wire.encode_envelope(origin=identity.public_key, sequence=7,
                                timestamp_ms=WALL_MS, ttl=3600, priority=200, payload_kind=0,
                                source="node-a", correlation_id=None,
                                headers={"feed": "abuse"}, payload=b"ioc: 203.0.113.7")
    envelope = wire.decode_envelope(body, identity.sign(wire.MESSAGE_DOMAIN, body))
    message = wire.encode_message_frame(envelope, hops=2)
    repair = wire.encode_message_frame(envelope, hops=2, repair=True)
    stream = (identity.public_key, "node-a")
    digest = wire.encode_digest({stream: [(1, 5), (7, 7)]}, reply=False)
    tag = wire.stream_tag(identity.public_key, b"node-a")
    target = Identity(bytes(range(1, 33)))
    direct_body = wire.encode_envelope(
        origin=identity.public_key, sequence=0, timestamp_ms=WALL_MS, ttl=60, priority=128,
        payload_kind=0, source="node-a", correlation_id=None,
        headers={direct.DIRECT_HEADER: target.public_key.hex()}, payload=b"isolate ws-042")
    to_target = wire.decode_envelope(direct_body,
                                     identity.sign(wire.MESSAGE_DOMAIN, direct_body))
    entry = wire.encode_tree_entry(envelope.id, tag, 2)
    return [
        ("MESSAGE (signed, tree push, hops 2): signature(64) | envelope", message),
        ("MESSAGE as a repair (FLAG_REPAIR): sent for a GRAFT or a digest", repair),
        ("DIGEST: u16 streams | per stream: key(32) u8 len source u8 n (u64 lo, u64 hi)*n",
         digest),
        ("IHAVE: u16 n | (message id(16), stream tag(8), u8 hops)*n",
         wire.encode_tree_frame(wire.FrameKind.IHAVE, [entry])),
        ("GRAFT: same entries as IHAVE", wire.encode_tree_frame(wire.FrameKind.GRAFT, [entry])),
        ("PRUNE: same entries as IHAVE", wire.encode_tree_frame(wire.FrameKind.PRUNE, [entry])),
        ("DIRECT DATA: u8 type 1 | u8 attempt | target(32) | sender(32) | u8 n | relay(32)*n"
         " | signature(64) | envelope (its somasync-direct-to header names the target)",
         direct.encode_direct(direct.DATA, 0, target.public_key, identity.public_key,
                              to_target.signature + to_target.body,  # type: ignore[operator]
                              priority=to_target.priority)),
        ("DIRECT ACK: u8 type 2 | u8 attempt | target(32) | sender(32) | u8 0 | message id(16)"
         " | signature(64) by the sender over the id and the target",
         direct.encode_direct(direct.ACK, 0, identity.public_key, target.public_key,
                              to_target.id + target.sign(
                                  direct.ACK_DOMAIN, to_target.id + identity.public_key),
                              priority=255)),
    ]


def describe(data: bytes) -> list[str]:
    """A decoded view of one frame (length prefix included).

    Raises:
        DecodeError: the bytes are not a frame this codec accepts.
    """
    if len(data) < wire.LENGTH_PREFIX.size:
        raise DecodeError("truncated", "shorter than the length prefix")
    (length,) = wire.LENGTH_PREFIX.unpack_from(data)
    if length != len(data) - wire.LENGTH_PREFIX.size:
        raise DecodeError("bad_length", f"length prefix says {length}, "
                          f"{len(data) - wire.LENGTH_PREFIX.size} bytes follow")
    frame = wire.decode_frame(data[wire.LENGTH_PREFIX.size :])
    try:
        kind = wire.FrameKind(frame.kind).name
    except ValueError:
        kind = f"unknown kind {frame.kind}"
    flags = [name for name, bit in (("SIGNED", wire.FLAG_SIGNED), ("REPLY", wire.FLAG_REPLY),
                                    ("PARTIAL", wire.FLAG_PARTIAL),
                                    ("REPAIR", wire.FLAG_REPAIR),
                                    ("PADDED", wire.FLAG_PADDED)) if frame.flags & bit]
    lines = [f"  header: u32 length {length} | u8 version {wire.WIRE_VERSION} | u8 kind "
             f"{frame.kind} ({kind}) | u8 flags {frame.flags:#04x} {'|'.join(flags) or '-'}"
             f" | u8 priority {frame.priority} | u8 hops {frame.hops}"]
    if frame.kind == wire.FrameKind.MESSAGE:
        signature, body = wire.split_message_payload(frame)
        envelope = wire.decode_envelope(body, signature)
        lines.append(f"  id {envelope.id.hex()} origin {envelope.origin.hex()[:16]}... "
                     f"source {envelope.source!r} sequence {envelope.sequence}")
        lines.append(f"  timestamp_ms {envelope.timestamp_ms} ttl {envelope.ttl} s priority "
                     f"{envelope.priority} payload kind {envelope.payload_kind} headers "
                     f"{envelope.headers} payload {envelope.payload!r}")
    elif frame.kind == wire.FrameKind.DIGEST:
        digest = wire.decode_digest(frame)
        lines.extend(f"  stream {origin.hex()[:16]}.../{source!r}: {list(intervals)}"
                     for (origin, source), intervals in digest.streams.items())
    elif frame.kind == wire.FrameKind.DIRECT:
        item = direct.decode_direct(frame)
        lines.append(f"  {'DATA' if item.type == direct.DATA else 'ACK'} attempt "
                     f"{item.attempt} target {item.target.hex()[:16]}... sender "
                     f"{item.sender.hex()[:16]}... relays {len(item.via)} message id "
                     f"{item.message_id.hex()}")
        if item.type == direct.DATA:
            envelope = wire.decode_envelope(item.body[wire.SIGNATURE_SIZE :],
                                            item.body[: wire.SIGNATURE_SIZE])
            lines.append(f"  source {envelope.source!r} headers {envelope.headers} "
                         f"payload {envelope.payload!r}")
    elif frame.kind in wire.TREE_KINDS:
        lines.extend(f"  id {entry.message_id.hex()} tag {entry.tag.hex()} hops {entry.hops}"
                     for entry in wire.decode_tree_entries(frame))
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--decode", metavar="HEX", help="decode one frame given in hex")
    args = parser.parse_args(argv)
    if args.decode is not None:
        try:
            data = bytes.fromhex(args.decode.replace(" ", ""))
            print("\n".join(describe(data)))
        except (ValueError, DecodeError) as exc:  # bad hex, or bytes the codec refuses
            print(f"not a frame: {exc}", file=sys.stderr)
            return 1
        return 0
    print(f"SomaSync wire format, version {wire.WIRE_VERSION}: frames on a TCP stream, "
          "big-endian; the envelope layout and signing rule are in somasync/core/wire.py")
    for title, data in examples():
        print(f"\n{title} ({len(data)} bytes)")
        print("\n".join(describe(data)))
        print("\n".join(_hex(data)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
