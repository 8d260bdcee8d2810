"""Property tests of the wire format and payload codec.

Three families:

* fuzzing: every decoder, fed arbitrary or mangled bytes, raises DecodeError and nothing
  else (the endpoint turns DecodeError into a rejected frame; any other exception would
  escape into the driver and kill the connection handler);
* truncation: every strict prefix of a valid encoding is refused (or, for FrameBuffer,
  simply waits for more bytes);
* round trips and determinism: what is encoded decodes to an equal value, and equal
  values encode to identical bytes whatever order their dicts were filled in.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable
from typing import Any, TypeVar

import nacl.signing
import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st

from somasync.core import crypto, wire
from somasync.core.events import RejectReason
from somasync.core.handshake import PeerHello
from somasync.core.payload import MessageType, PayloadKind, decode_payload, encode_payload
from somasync.errors import DecodeError
from somasync.message import Message

T = TypeVar("T")

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ROUND_TRIP = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])

MAX_FRAME = 1 << 20
U64 = 2**64 - 1
KNOWN_REASONS = frozenset(reason.value for reason in RejectReason)


# --- helpers -------------------------------------------------------------------------

def check_reason(error: DecodeError) -> None:
    # The endpoint reports error.reason as a RejectReason value, so it must be one.
    assert error.reason in KNOWN_REASONS, f"unknown DecodeError reason {error.reason!r}"
    assert re.fullmatch(r"[a-z_]+", error.reason)


def decode_or_reject(decode: Callable[..., T], *args: Any) -> T | None:
    """Run a decoder; DecodeError means "rejected", any other exception fails the test."""
    error: DecodeError | None = None
    try:
        return decode(*args)
    except DecodeError as exc:
        error = exc
    check_reason(error)
    return None


def assert_rejected(decode: Callable[..., object], *args: Any) -> DecodeError:
    """The decoder must raise DecodeError (and only DecodeError) for these arguments."""
    error: DecodeError | None = None
    try:
        result = decode(*args)
    except DecodeError as exc:
        error = exc
    else:
        pytest.fail(f"{decode.__name__} accepted invalid input and returned {result!r}")
    check_reason(error)
    return error


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    """Cut ``data`` at the given offsets (clamped, sorted, duplicates allowed)."""
    points = sorted(min(max(cut, 0), len(data)) for cut in cuts)
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def feed_all(buffer: wire.FrameBuffer, chunks: list[bytes]) -> list[bytes]:
    frames: list[bytes] = []
    for chunk in chunks:
        frames.extend(buffer.feed(chunk))
    return frames


def reference_frames(data: bytes, max_frame: int) -> tuple[list[bytes], str | None, int]:
    """A deliberately simple model of FrameBuffer over the whole stream at once.

    Returns (complete frames before any error, DecodeError reason or None, bytes consumed).
    """
    frames: list[bytes] = []
    offset = 0
    while len(data) - offset >= 4:
        length = int.from_bytes(data[offset : offset + 4], "big")
        if length > max_frame:
            return frames, "oversize", offset
        if length < wire.HEADER_AFTER_LENGTH:
            return frames, "truncated", offset
        if offset + 4 + length > len(data):
            break
        frames.append(data[offset + 4 : offset + 4 + length])
        offset += 4 + length
    return frames, None, offset


def decode_message_payload(frame: wire.Frame) -> wire.Envelope:
    signature, body = wire.split_message_payload(frame)
    return wire.decode_envelope(body, signature)


def cut_length_prefix(encoded: bytes) -> bytes:
    """Strip the length prefix exactly as a receiver does: through a FrameBuffer."""
    frames = wire.FrameBuffer(MAX_FRAME).feed(encoded)
    assert len(frames) == 1
    return frames[0]


# --- strategies ----------------------------------------------------------------------

texts = st.text(max_size=24)
str_maps = st.dictionaries(st.text(max_size=12), st.text(max_size=24), max_size=5)
sources = st.text(min_size=1, max_size=30)  # at most 120 bytes of UTF-8
correlation_ids = st.none() | st.text(min_size=1, max_size=40)
seeds = st.binary(min_size=32, max_size=32)
cut_lists = st.lists(st.integers(min_value=0, max_value=4096), max_size=8)

PAYLOAD_VARIANTS: dict[str, st.SearchStrategy[MessageType]] = {
    "data": st.builds(MessageType.Data, texts),
    "structured": st.builds(MessageType.Structured, str_maps),
    "binary": st.builds(MessageType.Binary, st.binary(max_size=128)),
    "command": st.builds(MessageType.Command, texts, str_maps),
    "status": st.builds(MessageType.Status, texts, texts),
    "alert-no-details": st.builds(MessageType.Alert, texts, texts, st.none()),
    "alert-details": st.builds(MessageType.Alert, texts, texts, str_maps),
}
payloads = st.one_of(*PAYLOAD_VARIANTS.values())

# Arbitrary JSON, dumped by the stdlib so that it also yields ints beyond 64 bits and NaN:
# what a hostile peer can send, which orjson may or may not accept.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)
json_bytes = json_values.map(lambda value: json.dumps(value).encode())
# Arrays shaped like the structured payloads ([action, params], [level, message, details])
# with items of the right and of the wrong types.
payload_shaped_json = st.lists(
    st.one_of(st.text(max_size=6), str_maps, json_values), max_size=4,
).map(lambda items: json.dumps(items).encode())
# Objects with at least one value that is not a string.
non_string_maps = st.tuples(str_maps, st.text(max_size=6), json_values).filter(
    lambda drawn: not isinstance(drawn[2], str)
).map(lambda drawn: json.dumps({**drawn[0], drawn[1]: drawn[2]}).encode())
# The real payload kinds often, every other byte value sometimes.
payload_kinds = st.sampled_from([int(kind) for kind in PayloadKind]) | st.integers(0, 255)


@st.composite
def envelope_fields(draw: st.DrawFn) -> dict[str, Any]:
    payload_kind, payload = encode_payload(draw(payloads))
    return {
        "origin": draw(st.binary(min_size=32, max_size=32)),
        "sequence": draw(st.integers(0, U64)),
        "timestamp_ms": draw(st.integers(0, wire.MAX_TIMESTAMP_MS - 1)),
        "ttl": draw(st.integers(0, wire.MAX_TTL)),
        "priority": draw(st.integers(0, 255)),
        "payload_kind": int(payload_kind),
        "source": draw(sources),
        "correlation_id": draw(correlation_ids),
        "headers": draw(str_maps),
        "payload": payload,
    }


@st.composite
def messages(draw: st.DrawFn, *, signed: bool | None = None) -> Message:
    message = Message(
        draw(payloads),
        draw(sources),
        timestamp=draw(st.integers(0, 2**45)) / 1000.0,
        ttl=draw(st.integers(0, wire.MAX_TTL)),
        priority=draw(st.integers(0, 255)),
        correlation_id=draw(correlation_ids),
        headers=draw(str_maps),
        sequence=draw(st.integers(0, U64)),
    )
    if signed is None:
        signed = draw(st.booleans())
    if signed:
        message = message.sign_with_ed25519(nacl.signing.SigningKey(draw(seeds)))
    return message


@st.composite
def peer_hellos(draw: st.DrawFn) -> PeerHello:
    identity = crypto.Identity(draw(seeds))
    node_id = draw(st.text(min_size=1, max_size=40).filter(lambda n: len(n.encode()) <= 255))
    listen = draw(st.none() | st.text(min_size=1, max_size=40))
    return PeerHello(identity.public_key, node_id, listen, draw(st.binary(max_size=200)))


stream_keys = st.tuples(st.binary(min_size=32, max_size=32), st.text(max_size=30))


@st.composite
def interval_lists(draw: st.DrawFn) -> list[tuple[int, int]]:
    """Sorted, disjoint closed intervals, single points included, as trackers send them."""
    points = sorted(draw(st.lists(st.integers(0, U64), unique=True, max_size=8)))
    spans = [(points[i], points[i + 1]) for i in range(0, len(points) - 1, 2)]
    return [(lo, lo) if draw(st.booleans()) else (lo, hi) for lo, hi in spans]


digest_streams = st.dictionaries(stream_keys, interval_lists(), max_size=4)


@st.composite
def encoded_frames(draw: st.DrawFn) -> bytes:
    """A valid encoded frame (length prefix included) of every kind the wire knows."""
    kind = draw(st.sampled_from(list(wire.FrameKind)))
    if kind == wire.FrameKind.HELLO:  # retired: refused inside records, still a frame
        return wire.encode_frame(kind, draw(st.binary(max_size=100)),
                                 hops=draw(st.integers(0, 255)))
    if kind == wire.FrameKind.MESSAGE:
        envelope = draw(messages()).to_envelope()
        return wire.encode_message_frame(envelope, hops=draw(st.integers(0, 255)))
    return wire.encode_digest(draw(digest_streams), reply=draw(st.booleans()),
                              partial=draw(st.booleans()))


@st.composite
def mangled(draw: st.DrawFn, valid: st.SearchStrategy[bytes]) -> bytes:
    """A valid encoding with a few bytes overwritten, cut or appended."""
    data = bytearray(draw(valid))
    for _ in range(draw(st.integers(1, 4))):
        if data and draw(st.booleans()):
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        del data[draw(st.integers(0, len(data))):]
    if draw(st.booleans()):
        data += draw(st.binary(max_size=8))
    return bytes(data)


@st.composite
def plausible_envelopes(draw: st.DrawFn) -> bytes:
    """A valid envelope with one of its fields replaced by hostile bytes.

    The header is well formed and the field lengths add up, so decoding gets past the
    framing checks and into the UTF-8, JSON and type checks of each field.
    """
    fields = draw(envelope_fields())
    parts = {
        "source": fields["source"].encode(),
        "correlation": (fields["correlation_id"] or "").encode(),
        "headers": json.dumps(fields["headers"]).encode() if fields["headers"] else b"",
        "payload": fields["payload"],
    }
    hostile = {
        "source": st.binary(max_size=6) | st.sampled_from([b"", b"\xff", b"a\xc3"]),
        "correlation": st.binary(max_size=6) | st.sampled_from([b"\xff", b"a\xc3"]),
        "headers": json_bytes | non_string_maps | st.binary(max_size=24),
        "payload": st.binary(max_size=24) | json_bytes | payload_shaped_json,
    }
    # (Hypothesis favours the first choice of a sampled_from: headers, the richest field.)
    name = draw(st.sampled_from(["headers", "payload", "source", "correlation"]))
    parts[name] = draw(hostile[name])
    head = wire.ENVELOPE_HEAD.pack(
        draw(st.sampled_from([1, 1, 1, 1, 0, 2, 255])),
        draw(st.just(fields["payload_kind"]) | payload_kinds), len(parts["source"]),
        fields["origin"], fields["sequence"], fields["timestamp_ms"], fields["ttl"],
        fields["priority"], len(parts["correlation"]), len(parts["headers"]),
        len(parts["payload"]),
    )
    return head + b"".join(parts[name] for name in ("source", "correlation", "headers",
                                                     "payload"))


ENVELOPE_INPUTS = {
    "arbitrary": st.binary(max_size=200),
    "plausible": plausible_envelopes(),
    "mangled": mangled(envelope_fields().map(lambda fields: wire.encode_envelope(**fields))),
}
digest_payloads = st.one_of(
    st.binary(max_size=200),
    mangled(digest_streams.map(lambda streams: cut_length_prefix(
        wire.encode_digest(streams, reply=False))[wire.HEADER_AFTER_LENGTH:])),
)
HELLO_INPUTS = {
    "arbitrary": st.binary(max_size=200),
    "mangled": mangled(peer_hellos().map(PeerHello.encode)),
}
frame_streams = st.one_of(
    st.binary(max_size=300),
    st.lists(encoded_frames() | st.binary(max_size=12), max_size=4).map(b"".join),
    mangled(st.lists(encoded_frames(), min_size=1, max_size=3).map(b"".join)),
)


# --- fuzzing: only DecodeError may escape ------------------------------------------

@FUZZ
@given(st.binary(max_size=300))
@example(b"")
@example(b"\x01\x02\x00\x00\x00")
def test_decode_frame_raises_only_decode_error(data: bytes) -> None:
    frame = decode_or_reject(wire.decode_frame, data)
    if frame is not None:
        assert data[0] == wire.WIRE_VERSION
        assert frame.payload == data[wire.HEADER_AFTER_LENGTH:]
        assert (frame.kind, frame.flags, frame.priority, frame.hops) == tuple(data[1:5])


@pytest.mark.parametrize("inputs", list(ENVELOPE_INPUTS))
@FUZZ
@given(data=st.data(), signature=st.none() | st.binary(min_size=64, max_size=64))
def test_decode_envelope_raises_only_decode_error(inputs: str, data: st.DataObject,
                                                  signature: bytes | None) -> None:
    body = data.draw(ENVELOPE_INPUTS[inputs])
    envelope = decode_or_reject(wire.decode_envelope, body, signature)
    if envelope is not None:
        assert body[0] == 1  # the envelope version
        assert envelope.source
        assert envelope.body == body
        assert envelope.signature == signature
        assert envelope.id == wire.message_id(body)
        # Whatever decoded must also be acceptable to the application layer, or be
        # refused with DecodeError (bad payload), never with another exception.
        decode_or_reject(Message.from_envelope, envelope)


@pytest.mark.parametrize("inputs", list(HELLO_INPUTS))
@FUZZ
@given(data=st.data())
def test_decode_peer_hello_raises_only_decode_error(inputs: str,
                                                   data: st.DataObject) -> None:
    raw = data.draw(HELLO_INPUTS[inputs])
    hello = decode_or_reject(PeerHello.decode, raw)
    if hello is not None:
        assert hello.encode() == raw
        assert 0 < len(hello.node_id.encode()) <= 255
        assert len(hello.public_key) == 32


@FUZZ
@given(digest_payloads, st.integers(0, 255))
@example(b"\x00\x01", 0)
@example(b"\x00\x00\x00", 0)
def test_decode_digest_raises_only_decode_error(data: bytes, flags: int) -> None:
    frame = wire.Frame(kind=3, flags=flags, priority=0, hops=0, payload=data)
    digest = decode_or_reject(wire.decode_digest, frame)
    if digest is not None:
        assert digest.reply == bool(flags & wire.FLAG_REPLY)
        assert all(lo <= hi for spans in digest.streams.values() for lo, hi in spans)


@FUZZ
@given(st.binary(max_size=200), st.integers(0, 255))
def test_split_message_payload_raises_only_decode_error(data: bytes, flags: int) -> None:
    frame = wire.Frame(kind=2, flags=flags, priority=0, hops=0, payload=data)
    parts = decode_or_reject(wire.split_message_payload, frame)
    if parts is not None:
        signature, body = parts
        if flags & wire.FLAG_SIGNED:
            assert signature is not None
            assert len(signature) == 64
            assert signature + body == data
        else:
            assert (signature, body) == (None, data)


@FUZZ
@given(payload_kinds, st.binary(max_size=120) | json_bytes | payload_shaped_json)
@example(1, b"\xff")
@example(2, b"{")
@example(4, b'["a", {"k": 1}]')
@example(4, b"[1, {}]")
@example(5, b'["a", 2]')
@example(6, b'["a", "b", []]')
@example(6, b'[null, "m", null]')
@example(7, b"")
def test_decode_payload_raises_only_decode_error(kind: int, data: bytes) -> None:
    payload = decode_or_reject(decode_payload, kind, data)
    if payload is not None:
        assert isinstance(payload, MessageType)
        assert payload.kind == kind


@FUZZ
@given(frame_streams, cut_lists, st.integers(wire.HEADER_AFTER_LENGTH, 400))
def test_frame_buffer_raises_only_decode_error(data: bytes, cuts: list[int],
                                               max_frame: int) -> None:
    buffer = wire.FrameBuffer(max_frame)
    frames: list[bytes] = []
    error: DecodeError | None = None
    for chunk in split_at(data, cuts):
        try:
            frames.extend(buffer.feed(chunk))
        except DecodeError as exc:
            error = exc
            break
        if buffer.error is not None:
            error = buffer.error
            with pytest.raises(DecodeError):
                buffer.feed(b"")  # a dead stream stays dead
            break
    expected, expected_error, consumed = reference_frames(data, max_frame)
    assert all(wire.HEADER_AFTER_LENGTH <= len(f) <= max_frame for f in frames)
    if expected_error is None:
        assert error is None
        assert frames == expected
        assert buffer.buffered == len(data) - consumed
    else:
        # The stream is dead from the first bad length on, and every frame that arrived
        # whole before it was handed out, however the bytes were cut into reads.
        assert error is not None
        assert error.reason == expected_error
        assert frames == expected


@pytest.mark.parametrize("version", [0, 2, 255])
def test_unknown_versions_are_rejected(version: int) -> None:
    frame = bytes([version]) + wire.encode_frame(wire.FrameKind.HELLO, b"x")[5:]
    assert assert_rejected(wire.decode_frame, frame).reason == "bad_version"
    body = wire.encode_envelope(
        origin=bytes(32), sequence=1, timestamp_ms=0, ttl=60, priority=0, payload_kind=1,
        source="s", correlation_id=None, headers={}, payload=b"x",
    )
    body = bytes([version]) + body[1:]
    assert assert_rejected(wire.decode_envelope, body, None).reason == "bad_version"


# --- the length prefix is checked before anything is buffered ----------------------

def test_oversize_length_prefix_is_refused_immediately() -> None:
    buffer = wire.FrameBuffer(1024)
    with pytest.raises(DecodeError) as info:
        buffer.feed(b"\xff\xff\xff\xff" + b"x")
    assert info.value.reason == "oversize"


def test_oversize_length_prefix_split_over_feeds_is_refused_on_its_last_byte() -> None:
    buffer = wire.FrameBuffer(1024)
    assert buffer.feed(b"\xff\xff\xff") == []
    with pytest.raises(DecodeError) as info:
        buffer.feed(b"\xff")
    assert info.value.reason == "oversize"


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 1 << 16), st.data())
def test_length_prefix_is_checked_against_max_frame(max_frame: int, data: st.DataObject) -> None:
    max_frame = max(max_frame, wire.HEADER_AFTER_LENGTH)
    # At the limit: accepted, and the buffer waits holding only what it was given.
    at_limit = wire.FrameBuffer(max_frame)
    assert at_limit.feed(max_frame.to_bytes(4, "big") + b"\x01") == []
    assert at_limit.buffered == 5
    # Above it: refused on the prefix alone, before a single payload byte arrives.
    length = data.draw(st.integers(max_frame + 1, 2**32 - 1))
    with pytest.raises(DecodeError) as info:
        wire.FrameBuffer(max_frame).feed(length.to_bytes(4, "big"))
    assert info.value.reason == "oversize"
    # Shorter than a frame header: refused as truncated.
    short = data.draw(st.integers(0, wire.HEADER_AFTER_LENGTH - 1))
    with pytest.raises(DecodeError) as info:
        wire.FrameBuffer(max_frame).feed(short.to_bytes(4, "big"))
    assert info.value.reason == "truncated"


# --- truncation and trailing bytes ------------------------------------------------

@ROUND_TRIP
@given(encoded_frames())
def test_every_strict_prefix_of_a_frame_yields_no_frame(encoded: bytes) -> None:
    for cut in range(len(encoded)):
        buffer = wire.FrameBuffer(MAX_FRAME)
        assert buffer.feed(encoded[:cut]) == [], cut
        assert buffer.buffered == cut
        # ... and the rest completes exactly that frame.
        assert buffer.feed(encoded[cut:]) == [encoded[4:]], cut
        assert buffer.buffered == 0


@ROUND_TRIP
@given(encoded_frames())
def test_frame_headers_cut_short_are_rejected(encoded: bytes) -> None:
    frame = encoded[4:]
    for cut in range(wire.HEADER_AFTER_LENGTH):
        assert assert_rejected(wire.decode_frame, frame[:cut]).reason == "truncated"


@ROUND_TRIP
@given(messages())
def test_every_strict_prefix_of_a_message_payload_is_rejected(message: Message) -> None:
    frame = wire.decode_frame(cut_length_prefix(
        wire.encode_message_frame(message.to_envelope(), hops=0)))
    assert decode_message_payload(frame).body == message.envelope_bytes
    for cut in range(len(frame.payload)):
        short = wire.Frame(frame.kind, frame.flags, frame.priority, frame.hops,
                           frame.payload[:cut])
        assert_rejected(decode_message_payload, short)


@ROUND_TRIP
@given(envelope_fields(), st.none() | st.binary(min_size=64, max_size=64),
       st.binary(min_size=1, max_size=16))
def test_truncated_or_extended_envelopes_are_rejected(fields: dict[str, Any],
                                                      signature: bytes | None,
                                                      trailing: bytes) -> None:
    body = wire.encode_envelope(**fields)
    for cut in range(len(body)):
        assert_rejected(wire.decode_envelope, body[:cut], signature)
    assert assert_rejected(wire.decode_envelope, body + trailing, signature).reason == (
        "bad_length")


@ROUND_TRIP
@given(digest_streams, st.booleans(), st.binary(min_size=1, max_size=16))
def test_truncated_or_extended_digests_are_rejected(streams: dict[wire.StreamKey, Any],
                                                    reply: bool, trailing: bytes) -> None:
    frame = wire.decode_frame(cut_length_prefix(wire.encode_digest(streams, reply=reply)))
    for cut in range(len(frame.payload)):
        short = wire.Frame(frame.kind, frame.flags, frame.priority, frame.hops,
                           frame.payload[:cut])
        assert assert_rejected(wire.decode_digest, short).reason == "truncated"
    long = wire.Frame(frame.kind, frame.flags, frame.priority, frame.hops,
                      frame.payload + trailing)
    assert_rejected(wire.decode_digest, long)


@ROUND_TRIP
@given(peer_hellos())
def test_every_strict_prefix_of_a_peer_hello_is_rejected(hello: PeerHello) -> None:
    payload = hello.encode()
    assert PeerHello.decode(payload) == hello
    for cut in range(len(payload)):
        assert_rejected(PeerHello.decode, payload[:cut])


# --- round trips ---------------------------------------------------------------------

@pytest.mark.parametrize("variant", list(PAYLOAD_VARIANTS))
@ROUND_TRIP
@given(data=st.data())
def test_payload_round_trip(variant: str, data: st.DataObject) -> None:
    payload = data.draw(PAYLOAD_VARIANTS[variant])
    kind, encoded = encode_payload(payload)
    assert isinstance(encoded, bytes)
    assert kind == payload.kind
    decoded = decode_payload(kind, encoded)
    assert decoded == payload
    assert type(decoded) is type(payload)


@settings(max_examples=3, deadline=None)
@given(st.data())
def test_payload_variants_cover_every_payload_kind(data: st.DataObject) -> None:
    drawn = [data.draw(strategy) for strategy in PAYLOAD_VARIANTS.values()]
    assert {payload.kind for payload in drawn} == set(PayloadKind)
    assert {type(payload).__name__ for payload in drawn} == {kind.name.title() for kind in
                                                             PayloadKind}


@ROUND_TRIP
@given(envelope_fields(), st.none() | st.binary(min_size=64, max_size=64))
def test_envelope_round_trip_keeps_every_field(fields: dict[str, Any],
                                               signature: bytes | None) -> None:
    body = wire.encode_envelope(**fields)
    envelope = wire.decode_envelope(body, signature)
    for name, value in fields.items():
        assert getattr(envelope, name) == value, name
    assert envelope.body == body
    assert envelope.signature == signature
    assert envelope.id == wire.message_id(body)
    assert len(envelope.id) == 16
    assert envelope.stream == (fields["origin"], fields["source"])


@ROUND_TRIP
@given(messages(), cut_lists, st.integers(0, 255))
def test_message_survives_the_wire(message: Message, cuts: list[int], hops: int) -> None:
    encoded = wire.encode_message_frame(message.to_envelope(), hops=hops)
    buffer = wire.FrameBuffer(MAX_FRAME)
    frames = feed_all(buffer, split_at(encoded, cuts))
    assert len(frames) == 1
    assert buffer.buffered == 0

    frame = wire.decode_frame(frames[0])
    assert frame.kind == wire.FrameKind.MESSAGE
    assert frame.priority == message.priority
    assert frame.hops == hops
    assert bool(frame.flags & wire.FLAG_SIGNED) == message.is_signed()
    signature, body = wire.split_message_payload(frame)
    received = Message.from_envelope(wire.decode_envelope(body, signature))

    assert received == message
    assert received.id == message.id
    assert received.envelope_bytes == message.envelope_bytes
    assert received.verify_signature() is message.is_signed()


@ROUND_TRIP
@given(messages(signed=True))
def test_signed_message_verifies_after_the_wire(message: Message) -> None:
    frame = wire.decode_frame(cut_length_prefix(
        wire.encode_message_frame(message.to_envelope(), hops=3)))
    received = Message.from_envelope(decode_message_payload(frame))
    assert received.signature == message.signature
    assert received.signer_public_key == message.signer_public_key
    assert received.verify_signature() is True


@ROUND_TRIP
@given(peer_hellos())
def test_peer_hello_round_trip(hello: PeerHello) -> None:
    assert PeerHello.decode(hello.encode()) == hello


@ROUND_TRIP
@given(digest_streams, st.booleans(), st.booleans())
def test_digest_round_trip(streams: dict[wire.StreamKey, list[tuple[int, int]]], reply: bool,
                           partial: bool) -> None:
    encoded = wire.encode_digest(streams, reply=reply, partial=partial)
    frame = wire.decode_frame(cut_length_prefix(encoded))
    assert frame.kind == wire.FrameKind.DIGEST
    assert bool(frame.flags & wire.FLAG_PARTIAL) == partial
    digest = wire.decode_digest(frame)
    assert digest.reply == reply
    assert digest.streams == {key: tuple(spans) for key, spans in streams.items()}


@pytest.mark.parametrize("spans", [[(5, 9), (1, 3)], [(1, 5), (5, 9)], [(1, 5), (2, 3)]],
                         ids=["unsorted", "touching", "overlapping"])
def test_digest_intervals_must_be_sorted_and_disjoint(spans: list[tuple[int, int]]) -> None:
    frame = wire.decode_frame(cut_length_prefix(
        wire.encode_digest({(bytes(32), "s"): spans}, reply=False)))
    assert assert_rejected(wire.decode_digest, frame).reason == "bad_digest"


def test_digest_keeps_the_newest_255_intervals() -> None:
    key = (bytes(range(32)), "source")
    spans = [(2 * i, 2 * i) for i in range(300)]
    frame = wire.decode_frame(cut_length_prefix(wire.encode_digest({key: spans}, reply=True)))
    digest = wire.decode_digest(frame)
    assert digest.streams == {key: tuple(spans[-255:])}
    assert digest.reply is True


# --- determinism: bytes never depend on dict insertion order ---------------------------

def reordered(mapping: dict[str, str], data: st.DataObject) -> list[dict[str, str]]:
    """The same items inserted in reverse order and in a drawn permutation."""
    items = list(mapping.items())
    permuted = data.draw(st.permutations(items))
    return [dict(reversed(items)), dict(permuted)]


dict_pairs = st.dictionaries(st.text(max_size=8), st.text(max_size=8), min_size=2, max_size=8)


@ROUND_TRIP
@given(dict_pairs, st.data())
def test_structured_payload_bytes_ignore_insertion_order(fields: dict[str, str],
                                                         data: st.DataObject) -> None:
    expected = encode_payload(MessageType.Structured(fields))
    for other in reordered(fields, data):
        assert encode_payload(MessageType.Structured(other)) == expected
        assert encode_payload(MessageType.Command("act", other)) == encode_payload(
            MessageType.Command("act", fields))
        assert encode_payload(MessageType.Alert("high", "m", other)) == encode_payload(
            MessageType.Alert("high", "m", fields))


@ROUND_TRIP
@given(envelope_fields(), dict_pairs, st.data())
def test_envelope_bytes_ignore_header_insertion_order(fields: dict[str, Any],
                                                      headers: dict[str, str],
                                                      data: st.DataObject) -> None:
    expected = wire.encode_envelope(**{**fields, "headers": headers})
    for other in reordered(headers, data):
        assert wire.encode_envelope(**{**fields, "headers": other}) == expected


@ROUND_TRIP
@given(dict_pairs, seeds, st.data())
def test_signature_does_not_depend_on_header_order(headers: dict[str, str], seed: bytes,
                                                   data: st.DataObject) -> None:
    key = nacl.signing.SigningKey(seed)

    def build(headers: dict[str, str]) -> Message:
        return Message(MessageType.Structured(dict(reversed(headers.items()))), "origin",
                       timestamp=1_700_000_000.0, headers=headers, sequence=7)

    signed = build(headers).sign_with_ed25519(key)
    for other in reordered(headers, data):
        again = build(other).sign_with_ed25519(key)
        assert again.envelope_bytes == signed.envelope_bytes
        assert again.signature == signed.signature
        # A copy built independently, carrying the first signature, verifies too.
        copy = Message(again.message_type, "origin", timestamp=1_700_000_000.0,
                       headers=other, sequence=7, signature=signed.signature,
                       signer_public_key=signed.signer_public_key)
        assert copy.verify_signature() is True


def test_reordered_really_reorders() -> None:
    """Guard for the helper above: the orders it produces differ from the original."""
    mapping = {"b": "1", "a": "2", "c": "3"}

    @settings(max_examples=5, deadline=None)
    @given(st.data())
    def check(data: st.DataObject) -> None:
        first = reordered(mapping, data)[0]
        assert list(first) == ["c", "a", "b"]
        assert first == mapping

    check()


def test_empty_and_header_only_envelopes_are_truncated() -> None:
    assert assert_rejected(wire.decode_envelope, b"", None).reason == "truncated"
    header = wire.encode_envelope(
        origin=bytes(32), sequence=0, timestamp_ms=0, ttl=0, priority=0, payload_kind=1,
        source="s", correlation_id=None, headers={}, payload=b"",
    )[: wire.ENVELOPE_HEAD.size - 1]
    assert assert_rejected(wire.decode_envelope, header, None).reason == "truncated"


@pytest.mark.parametrize("timestamp_ms", [-1, -(2**63), wire.MAX_TIMESTAMP_MS, 2**63 - 1])
def test_out_of_range_timestamps_are_decode_errors(timestamp_ms: int) -> None:
    body = wire.encode_envelope(
        origin=bytes(32), sequence=1, timestamp_ms=timestamp_ms, ttl=60, priority=0,
        payload_kind=1, source="s", correlation_id=None, headers={}, payload=b"x")
    with pytest.raises(DecodeError) as caught:
        wire.decode_envelope(body, None)
    assert caught.value.reason == "bad_envelope"


@pytest.mark.parametrize("timestamp", [-0.001, float("nan"), float("inf"), 1e16])
def test_message_refuses_timestamps_the_wire_cannot_carry(timestamp: float) -> None:
    with pytest.raises(ValueError, match="timestamp"):
        Message(MessageType.Data("x"), "s", timestamp=timestamp)


# --- broadcast tree control frames ----------------------------------------------------

TREE_ENTRIES = st.lists(st.tuples(st.binary(min_size=16, max_size=16),
                                  st.binary(min_size=8, max_size=8),
                                  st.integers(0, 255)), max_size=40)


@FUZZ
@given(data=st.binary(max_size=300), kind=st.sampled_from(sorted(wire.TREE_KINDS)))
def test_decode_tree_entries_raises_only_decode_error(data: bytes, kind: int) -> None:
    frame = wire.Frame(kind, 0, 255, 0, data)
    try:
        entries = wire.decode_tree_entries(frame)
    except DecodeError:
        return
    assert len(data) == 2 + 25 * len(entries)


@ROUND_TRIP
@given(entries=TREE_ENTRIES, kind=st.sampled_from(sorted(wire.TREE_KINDS)))
def test_tree_frame_round_trip_and_every_cut_is_refused(
        entries: list[tuple[bytes, bytes, int]], kind: int) -> None:
    encoded = wire.encode_tree_frame(kind, [wire.encode_tree_entry(*e) for e in entries])
    frame = wire.decode_frame(encoded[4:])
    assert frame.kind == kind
    assert [tuple(e) for e in wire.decode_tree_entries(frame)] == entries
    for cut in range(1, len(frame.payload)):
        with pytest.raises(DecodeError):
            wire.decode_tree_entries(wire.Frame(kind, 0, 255, 0, frame.payload[:-cut]))


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 3000), st.integers(-5, 3000), st.booleans())
def test_a_digest_padded_again_decodes_to_the_same_streams(
        first: int, second: int, reply: bool) -> None:
    stream = (bytes(32), "s")
    frame = wire.encode_digest({stream: [(1, 9)]}, reply=reply, padding=first, withheld=7)
    again = wire.pad_digest(frame, second, padded=first)
    decoded = wire.decode_digest(wire.decode_frame(again[wire.LENGTH_PREFIX.size :]))
    assert decoded.streams == {stream: ((1, 9),)}
    assert (decoded.reply, decoded.withheld, decoded.padding) == (reply, 7, max(0, second))
    assert bool(wire.decode_frame(again[4:]).flags & wire.FLAG_PADDED) == (second > 0)
