"""The supervisor-worker control protocol: every message round-trips, bytes stay bytes,
and anything else is a ControlError."""

from __future__ import annotations

import contextlib
import dataclasses
import struct

import orjson
import pytest
from hypothesis import given, strategies as st

from somasync.core.broadcast import TreeStatistics
from somasync.core.endpoint import EndpointStatistics
from somasync.core.events import (
    DirectAcked,
    DirectFailed,
    FrameRejected,
    PeerConnected,
    PeerDisconnected,
    PeerRevoked,
    RouteDiscovered,
)
from somasync.workers.protocol import (
    Adopt,
    Bind,
    ControlError,
    ControlMessage,
    CorruptRing,
    Disconnect,
    Kind,
    Ready,
    Retune,
    Revoke,
    Rewire,
    SendDirect,
    StatsReport,
    StatsRequest,
    Stop,
    decode,
    encode,
)


def endpoint_statistics(tree: bool) -> EndpointStatistics:
    numbers = {f.name: i + 1 for i, f in enumerate(dataclasses.fields(EndpointStatistics))}
    numbers["rejected"] = {"bad_signature": 3, "expired": 1}  # type: ignore[assignment]
    numbers["peer_scores"] = {"edge-1": 2.5, "edge-2": -41.0}  # type: ignore[assignment]
    numbers["lazy_streams"] = {"edge-1": 3, "edge-2": 0}  # type: ignore[assignment]
    numbers["verify_seconds"] = (0, 3, 9, 1)  # type: ignore[assignment]
    numbers["verify_seconds_total"] = 0.0125  # type: ignore[assignment]
    numbers["tree"] = TreeStatistics(  # type: ignore[assignment]
        *range(len(dataclasses.fields(TreeStatistics)))) if tree else None
    return EndpointStatistics(**numbers)  # type: ignore[arg-type]


EXAMPLES: list[ControlMessage] = [
    Ready(pid=4242),
    Adopt(address="127.0.0.1:7946", outbound=True, initial=b"\x00\x01hello\xff" * 3,
          session=bytes(range(200))),
    Adopt(address="", outbound=False, initial=b"", session=b""),
    Rewire(peer=1, ring_in="somasync-ab12-01-x", ring_out="somasync-ab12-10-y"),
    Disconnect(public_key=bytes(range(32)), reason="failed"),
    StatsRequest(),
    StatsReport(pid=7, core=endpoint_statistics(tree=True), ring_in_used={-1: 10, 1: 0},
                ring_out_pending={-1: 0, 1: 5}, ring_dropped=2, cpu_seconds=1.5),
    StatsReport(pid=7, core=endpoint_statistics(tree=False), ring_in_used={},
                ring_out_pending={}, ring_dropped=0, cpu_seconds=0.0),
    StatsReport(pid=7, core=endpoint_statistics(tree=False), ring_in_used={},
                ring_out_pending={}, ring_dropped=4, cpu_seconds=0.0, ring_corrupted=2),
    Stop(),
    PeerConnected("node-b", "127.0.0.1:7001", bytes(range(32, 64))),
    PeerDisconnected("node-b", "127.0.0.1:7001", "worker_died"),
    FrameRejected("node-b", "127.0.0.1:7001", "bad_signature", "message signature", True),
    FrameRejected(None, "127.0.0.1:7001", "no_hello", "message before HELLO", False),
    PeerRevoked(bytes(range(32)), "node-c", b"\x00\x00\x00\x05frame"),
    PeerRevoked(bytes(range(32)), None),
    Bind("node-c", bytes(range(32)), b""),
    Bind("nœud", bytes(range(32)), bytes(range(150))),
    Revoke(bytes(range(32)), b"notice"),
    Retune(estimate=1000, degree=10, fanout=10, ihave_fanout=10, anti_entropy_interval=10.0),
    CorruptRing(ring="somasync-ab12-S0-1f2e3d4c", detail="record sequence 9, expected 3"),
    SendDirect(bytes(range(200)), bytes(range(32)), bytes(64), "node-d", 2.5),
    DirectAcked(bytes(range(16)), "node-d", bytes(range(32))),
    DirectFailed(bytes(range(16)), "node-d", bytes(range(32)), "no acknowledgement"),
    RouteDiscovered("node-d", "node-b"),
]


@pytest.mark.parametrize("message", EXAMPLES, ids=lambda m: type(m).__name__)
def test_every_message_round_trips(message: ControlMessage) -> None:
    assert decode(encode(message)) == message


def test_every_kind_has_an_example() -> None:
    kinds = {decode(encode(message)).__class__ for message in EXAMPLES}
    assert len(kinds) == len(Kind)


def test_a_stats_report_without_a_corruption_count_reads_as_none_found() -> None:
    """A report written before ``ring_corrupted`` existed still decodes (as zero)."""
    report = StatsReport(pid=7, core=endpoint_statistics(tree=False), ring_in_used={},
                         ring_out_pending={}, ring_dropped=1, cpu_seconds=0.5)
    kind, length = struct.unpack_from("!BI", encode(report))
    fields = orjson.loads(encode(report)[5 : 5 + length])
    del fields["ring_corrupted"]
    body = orjson.dumps(fields)
    assert decode(struct.pack("!BI", kind, len(body)) + body) == report
    assert report.ring_corrupted == 0


def test_bytes_travel_raw_not_hex() -> None:
    key = bytes(range(32))
    encoded = encode(Disconnect(public_key=key, reason="x"))
    assert key in encoded
    assert key.hex().encode() not in encoded


@given(initial=st.binary(max_size=2000), address=st.text(max_size=40),
       outbound=st.booleans(), session=st.binary(max_size=400))
def test_adopt_round_trips_any_bytes(initial: bytes, address: str, outbound: bool,
                                     session: bytes) -> None:
    message = Adopt(address=address, outbound=outbound, initial=initial, session=session)
    assert decode(encode(message)) == message


def test_an_unknown_message_type_cannot_be_sent() -> None:
    @dataclasses.dataclass(frozen=True)
    class Gossip:
        text: str

    with pytest.raises(ControlError, match="not a control message"):
        encode(Gossip("hi"))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("data", "detail"),
    [
        (b"", "shorter than its header"),
        (struct.pack("!BI", 200, 2) + b"{}", "unknown kind 200"),
        (struct.pack("!BI", Kind.READY, 10) + b"{}", "body cut short"),
        (struct.pack("!BI", Kind.READY, 2) + b"[]", "not an object"),
        (struct.pack("!BI", Kind.READY, 3) + b"{x}", "not JSON"),
        (struct.pack("!BI", Kind.READY, 2) + b"{}", "fields do not match"),
        (struct.pack("!BI", Kind.STOP, 8) + b'{"a": 1}', "fields do not match"),
        (encode(Ready(pid=1)) + b"\x00", "trailing bytes"),
        (encode(Disconnect(public_key=b"k" * 32, reason="r"))[:-1], "public_key cut short"),
        (struct.pack("!BI", Kind.STATS_REPORT, 2) + b"{}", "fields do not match"),
    ],
    ids=["empty", "unknown-kind", "short-body", "array", "not-json", "missing-field",
         "extra-field", "trailing", "short-bytes", "bad-stats"],
)
def test_malformed_messages_are_control_errors(data: bytes, detail: str) -> None:
    with pytest.raises(ControlError, match=detail):
        decode(data)


@given(st.binary(max_size=300))
def test_a_torn_delivery_record_raises_only_decode_error(data: bytes) -> None:
    """Found by tools/fuzz.py: a record whose name was not UTF-8 raised
    UnicodeDecodeError into the supervisor's doorbell handler."""
    from somasync.errors import DecodeError
    from somasync.workers.records import decode_delivery

    with contextlib.suppress(DecodeError):
        decode_delivery(data)


def _deliveries_record() -> tuple[bytes, list[tuple[str, object]]]:
    """A ring record as a worker writes it: deliveries (signed and not) between items of
    other kinds, and what each delivery decodes to one item at a time."""
    from somasync.core.crypto import Identity
    from somasync.core.payload import MessageType
    from somasync.message import Message
    from somasync.workers.records import (
        SupervisorKind,
        decode_delivery,
        encode_delivery,
        encode_item,
    )

    identity = Identity(bytes([3]) * 32)
    envelopes = [Message(MessageType.Data(f"m{i}"), "origin", timestamp=1e9, sequence=i + 1)
                 .sign_with_ed25519(identity).to_envelope() for i in range(3)]
    envelopes.append(Message(MessageType.Binary(b"\x00"), "plain", timestamp=1e9,
                             sequence=9).to_envelope())
    items, expected = [], []
    for index, envelope in enumerate(envelopes):
        body = encode_delivery(f"peer-{index}", envelope)
        items.append(encode_item(2, 7, 0, b"not a delivery"))
        items.append(encode_item(SupervisorKind.DELIVER, 0, envelope.priority, body))
        expected.append(decode_delivery(body))
        assert expected[-1] == (f"peer-{index}", envelope)
    return b"".join(items), expected


def test_deliveries_decode_in_place_as_one_by_one() -> None:
    from somasync.workers.records import decode_deliveries

    record, expected = _deliveries_record()
    assert list(decode_deliveries(record)) == expected


@given(st.data())
def test_a_torn_or_corrupted_ring_record_of_deliveries_raises_only_decode_error(
        data: st.DataObject) -> None:
    """Whatever a crashed worker left in the ring: the supervisor's in-place decoder
    raises DecodeError and nothing else."""
    from somasync.errors import DecodeError
    from somasync.workers.records import decode_deliveries

    record, _ = _deliveries_record()
    cut = data.draw(st.integers(0, len(record)))
    flips = data.draw(st.lists(st.tuples(st.integers(0, len(record) - 1),
                                         st.integers(0, 255)), max_size=4))
    damaged = bytearray(record[:cut])
    for position, value in flips:
        if position < len(damaged):
            damaged[position] = value
    with contextlib.suppress(DecodeError):
        list(decode_deliveries(bytes(damaged)))
