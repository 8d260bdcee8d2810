"""Message payloads: the six ``MessageType`` variants and their byte encoding.

The variants mirror the original crate's ``MessageType`` enum. Each is a small frozen
dataclass, so they work as constructors (``MessageType.Alert(level=..., message=...,
details=None)``) and in ``match`` statements (``case MessageType.Alert(level="critical")``).

Encoding: ``Data`` is raw UTF-8 and ``Binary`` raw bytes (never base64 or a list of ints);
the structured variants are orjson with sorted keys, so the bytes never depend on the
order in which a dict was filled. Decoding checks every type and raises only
:class:`~somasync.errors.DecodeError`.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeAlias

import orjson

from somasync.errors import DecodeError

__all__ = ["MessageType", "PayloadKind", "decode_payload", "encode_payload",
           "payload_from_json", "payload_to_json"]


class PayloadKind(enum.IntEnum):
    """Wire code of each payload variant. WARNING: append only; never renumber."""

    DATA = 1
    STRUCTURED = 2
    BINARY = 3
    COMMAND = 4
    STATUS = 5
    ALERT = 6


StrMap: TypeAlias = dict[str, str]


def _check_str_map(value: object, what: str) -> StrMap:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise TypeError(f"{what} must be a dict[str, str]")
    return value


def _check_str(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, got {type(value).__name__}")
    return value


class MessageType:
    """Base class and namespace of the six payload variants.

    Use the variants as ``MessageType.Data("text")``, ``MessageType.Structured({...})``,
    ``MessageType.Binary(b"...")``, ``MessageType.Command(action, params)``,
    ``MessageType.Status(component, state)`` and
    ``MessageType.Alert(level, message, details)``; ``isinstance(x, MessageType)`` holds for
    each of them.
    """

    __slots__ = ()
    kind: ClassVar[PayloadKind]

    Data: ClassVar[type[Data]]
    Structured: ClassVar[type[Structured]]
    Binary: ClassVar[type[Binary]]
    Command: ClassVar[type[Command]]
    Status: ClassVar[type[Status]]
    Alert: ClassVar[type[Alert]]


@dataclass(frozen=True, slots=True)
class Data(MessageType):
    """Free text."""

    kind: ClassVar[PayloadKind] = PayloadKind.DATA
    text: str

    def __post_init__(self) -> None:
        _check_str(self.text, "Data.text")


@dataclass(frozen=True, slots=True)
class Structured(MessageType):
    """A flat string-to-string map (e.g. an IOC record)."""

    kind: ClassVar[PayloadKind] = PayloadKind.STRUCTURED
    fields: StrMap

    def __post_init__(self) -> None:
        _check_str_map(self.fields, "Structured.fields")


@dataclass(frozen=True, slots=True)
class Binary(MessageType):
    """Opaque bytes, carried as they are."""

    kind: ClassVar[PayloadKind] = PayloadKind.BINARY
    data: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.data, bytes):
            raise TypeError(f"Binary.data must be bytes, got {type(self.data).__name__}")


@dataclass(frozen=True, slots=True)
class Command(MessageType):
    """An instruction for the receivers: an action name and its parameters."""

    kind: ClassVar[PayloadKind] = PayloadKind.COMMAND
    action: str
    params: StrMap = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_str(self.action, "Command.action")
        _check_str_map(self.params, "Command.params")


@dataclass(frozen=True, slots=True)
class Status(MessageType):
    """A component's state (``Status("ids", "degraded")``)."""

    kind: ClassVar[PayloadKind] = PayloadKind.STATUS
    component: str
    state: str

    def __post_init__(self) -> None:
        _check_str(self.component, "Status.component")
        _check_str(self.state, "Status.state")


@dataclass(frozen=True, slots=True)
class Alert(MessageType):
    """A security alert: a level (``"critical"``...), a message and optional details."""

    kind: ClassVar[PayloadKind] = PayloadKind.ALERT
    level: str
    message: str
    details: StrMap | None = None

    def __post_init__(self) -> None:
        _check_str(self.level, "Alert.level")
        _check_str(self.message, "Alert.message")
        if self.details is not None:
            _check_str_map(self.details, "Alert.details")


MessageType.Data = Data
MessageType.Structured = Structured
MessageType.Binary = Binary
MessageType.Command = Command
MessageType.Status = Status
MessageType.Alert = Alert

_JSON_OPTIONS = orjson.OPT_SORT_KEYS


def encode_payload(payload: MessageType) -> tuple[PayloadKind, bytes]:
    """Return the wire kind and bytes of ``payload`` (deterministic for equal payloads)."""
    match payload:
        case Data(text=text):
            return PayloadKind.DATA, text.encode()
        case Binary(data=data):
            return PayloadKind.BINARY, data
        case Structured(fields=fields):
            return PayloadKind.STRUCTURED, orjson.dumps(fields, option=_JSON_OPTIONS)
        case Command(action=action, params=params):
            return PayloadKind.COMMAND, orjson.dumps([action, params], option=_JSON_OPTIONS)
        case Status(component=component, state=state):
            return PayloadKind.STATUS, orjson.dumps([component, state])
        case Alert(level=level, message=message, details=details):
            body = [level, message, details]
            return PayloadKind.ALERT, orjson.dumps(body, option=_JSON_OPTIONS)
    raise TypeError(f"not a MessageType variant: {type(payload).__name__}")


def _json(data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise DecodeError("bad_payload", f"invalid JSON: {exc}") from None


def _str_map(value: Any) -> StrMap:
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise DecodeError("bad_payload", "expected an object of strings")
    return value


def _strings(value: Any, count: int) -> list[Any]:
    if not isinstance(value, list) or len(value) != count:
        raise DecodeError("bad_payload", f"expected an array of {count} items")
    return value


_new, _set = object.__new__, object.__setattr__


def decode_payload(kind: int, data: bytes) -> MessageType:
    """Rebuild a payload from its wire kind and bytes.

    Raises:
        DecodeError: on an unknown kind, invalid UTF-8 or JSON, or wrongly typed fields.
    """
    if kind == PayloadKind.DATA:
        try:
            text = data.decode()
        except UnicodeDecodeError:
            raise DecodeError("bad_payload", "Data is not valid UTF-8") from None
        # Decoded text is a str by construction, what __post_init__ would check: built
        # directly, at half the cost, as this runs for every message received.
        payload = _new(Data)
        _set(payload, "text", text)
        return payload
    if kind == PayloadKind.BINARY:
        return Binary(bytes(data))
    if kind == PayloadKind.STRUCTURED:
        return Structured(_str_map(_json(data)))
    if kind == PayloadKind.COMMAND:
        action, params = _strings(_json(data), 2)
        if not isinstance(action, str):
            raise DecodeError("bad_payload", "Command.action is not a string")
        return Command(action, _str_map(params))
    if kind == PayloadKind.STATUS:
        component, state = _strings(_json(data), 2)
        if not isinstance(component, str) or not isinstance(state, str):
            raise DecodeError("bad_payload", "Status fields are not strings")
        return Status(component, state)
    if kind == PayloadKind.ALERT:
        level, message, details = _strings(_json(data), 3)
        if not isinstance(level, str) or not isinstance(message, str):
            raise DecodeError("bad_payload", "Alert level/message are not strings")
        return Alert(level, message, None if details is None else _str_map(details))
    raise DecodeError("unknown_payload_kind", str(kind))


_VARIANTS: dict[str, type[MessageType]] = {
    "data": Data, "structured": Structured, "binary": Binary, "command": Command,
    "status": Status, "alert": Alert,
}


def _field_names(variant: Any) -> list[str]:
    return [f.name for f in dataclasses.fields(variant)]


def payload_to_json(payload: MessageType) -> dict[str, Any]:
    """A payload as a JSON-ready object: ``{"type": "alert", "level": ..., ...}`` with the
    variant's fields (``Binary.data`` as hex), for command lines and logs; the inverse of
    :func:`payload_from_json`."""
    for name, variant in _VARIANTS.items():
        if isinstance(payload, variant):
            fields = {f: getattr(payload, f) for f in _field_names(variant)}
            if isinstance(payload, Binary):
                fields["data"] = payload.data.hex()
            return {"type": name, **fields}
    raise TypeError(f"not a MessageType variant: {type(payload).__name__}")


def payload_from_json(value: object) -> MessageType:
    """The payload a JSON object describes (as :func:`payload_to_json` writes it).

    Raises:
        ValueError: not an object, an unknown ``type``, a missing or unknown field, or a
            field of the wrong type (the message names it).
    """
    if not isinstance(value, dict):
        raise ValueError("a payload is a JSON object with a \"type\" field")
    fields = dict(value)
    name = fields.pop("type", None)
    variant = _VARIANTS.get(name) if isinstance(name, str) else None
    if variant is None:
        raise ValueError(f"payload type must be one of {sorted(_VARIANTS)}, got {name!r}")
    allowed = set(_field_names(variant))
    unknown = set(fields) - allowed
    if unknown:
        raise ValueError(f"{name} payload has no field(s) {sorted(unknown)}; "
                         f"it takes {sorted(allowed)}")
    if variant is Binary and isinstance(fields.get("data"), str):
        try:
            fields["data"] = bytes.fromhex(fields["data"])
        except ValueError:
            raise ValueError("binary payload data must be hex") from None
    try:
        return variant(**fields)
    except TypeError as exc:
        raise ValueError(f"{name} payload: {exc}") from None
