"""Payloads as JSON objects, for command lines and logs: every variant round-trips, and
a bad object is refused with a message that names what is wrong."""

from __future__ import annotations

import pytest

from somasync.core.payload import MessageType, payload_from_json, payload_to_json

PAYLOADS = [
    MessageType.Data("free text"),
    MessageType.Structured({"ioc": "198.51.100.7", "kind": "c2"}),
    MessageType.Binary(b"\x00\xffsig"),
    MessageType.Command("isolate", {"host": "db-3"}),
    MessageType.Status("ids", "degraded"),
    MessageType.Alert("critical", "APT detected", {"source": "edr"}),
    MessageType.Alert("low", "probe", None),
]


@pytest.mark.parametrize("payload", PAYLOADS, ids=lambda p: type(p).__name__)
def test_every_variant_round_trips(payload: MessageType) -> None:
    as_json = payload_to_json(payload)
    assert as_json["type"] == type(payload).__name__.lower()
    assert payload_from_json(as_json) == payload


def test_binary_travels_as_hex() -> None:
    assert payload_to_json(MessageType.Binary(b"\x01\x02")) == {"type": "binary",
                                                                 "data": "0102"}
    with pytest.raises(ValueError, match="hex"):
        payload_from_json({"type": "binary", "data": "zz"})


@pytest.mark.parametrize(("value", "says"), [
    ([], "JSON object"),
    ({"text": "no type"}, "payload type must be one of"),
    ({"type": "alert", "level": "high"}, "alert payload"),
    ({"type": "status", "component": "a", "state": "b", "extra": "c"}, "no field"),
    ({"type": "command", "action": 7}, "Command.action"),
])
def test_a_bad_object_is_refused_by_name(value: object, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        payload_from_json(value)
