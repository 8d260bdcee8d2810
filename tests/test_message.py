"""Unit tests of somasync.Message: defaults, builders, time, signatures, validation."""

from __future__ import annotations

import dataclasses
import itertools
import time
from typing import Any

import nacl.signing
import pytest

from somasync import Identity, Message, MessageType, SignatureError
from somasync.core import wire

T0 = 1_700_000_000.0  # an explicit creation time; no test reads the clock to decide


@pytest.fixture
def key() -> nacl.signing.SigningKey:
    return nacl.signing.SigningKey(bytes(range(32)))


@pytest.fixture
def other_key() -> nacl.signing.SigningKey:
    return nacl.signing.SigningKey(bytes(range(1, 33)))


def make(text: str = "hello", **fields: Any) -> Message:
    fields.setdefault("timestamp", T0)
    return Message(MessageType.Data(text), "node-a", **fields)


_unique = itertools.count()


def fresh_source() -> str:
    """A source name no other test uses, so its sequence counter starts untouched."""
    return f"test-message-source-{next(_unique)}-{id(_unique)}"


# --- defaults ------------------------------------------------------------------------

def test_defaults() -> None:
    message = Message(MessageType.Data("x"), "node-a")
    assert message.ttl == 3600
    assert message.priority == 128
    assert message.correlation_id is None
    assert message.headers == {}
    assert message.signature is None
    assert message.signer_public_key is None
    assert message.is_signed() is False
    assert message.message_type == MessageType.Data("x")
    assert message.source == "node-a"


def test_default_timestamp_is_now_in_milliseconds() -> None:
    before = time.time()
    message = Message(MessageType.Data("x"), "node-a")
    after = time.time()
    # Rounded to the millisecond (the wire carries milliseconds), so it may sit up to
    # half a millisecond outside [before, after].
    assert before - 0.0005 <= message.timestamp <= after + 0.0005
    assert round(message.timestamp, 3) == message.timestamp


def test_default_headers_are_not_shared() -> None:
    first, second = make(), make()
    assert first.headers is not second.headers


# --- builders ------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("builder", "argument", "field", "expected"),
    [
        ("with_ttl", 60, "ttl", 60),
        ("with_priority", 7, "priority", 7),
        ("with_correlation_id", "abc", "correlation_id", "abc"),
        ("with_header", ("k", "v"), "headers", {"k": "v"}),
    ],
)
def test_builders_return_new_messages(builder: str, argument: Any, field: str,
                                      expected: Any) -> None:
    original = make()
    snapshot = dataclasses.replace(original)
    arguments = argument if isinstance(argument, tuple) else (argument,)
    changed = getattr(original, builder)(*arguments)
    assert changed is not original
    assert getattr(changed, field) == expected
    assert original == snapshot  # the original is untouched
    assert changed != original
    assert changed.id != original.id
    for name in ("message_type", "source", "timestamp"):
        assert getattr(changed, name) == getattr(original, name)


@pytest.mark.parametrize(
    "build",
    [
        lambda m: m.with_ttl(60),
        lambda m: m.with_priority(7),
        lambda m: m.with_correlation_id("abc"),
        lambda m: m.with_header("k", "v"),
    ],
    ids=["ttl", "priority", "correlation_id", "header"],
)
def test_builders_drop_the_signature(key: nacl.signing.SigningKey, build: Any) -> None:
    signed = make().sign_with_ed25519(key)
    assert signed.verify_signature() is True
    changed = build(signed)
    assert changed.signature is None
    assert changed.signer_public_key is None
    assert changed.is_signed() is False
    assert changed.verify_signature() is False
    assert signed.is_signed()  # the signed original keeps its signature


def test_with_header_adds_to_existing_headers_without_mutating() -> None:
    original = make(headers={"a": "1"})
    changed = original.with_header("b", "2").with_header("a", "3")
    assert changed.headers == {"a": "3", "b": "2"}
    assert original.headers == {"a": "1"}


def test_create_response_correlates_with_the_original_id(key: nacl.signing.SigningKey) -> None:
    original = make().sign_with_ed25519(key)
    reply = original.create_response(MessageType.Status("ids", "ok"), "node-b")
    assert reply.correlation_id == original.id
    assert len(reply.correlation_id) == 32
    assert reply.message_type == MessageType.Status("ids", "ok")
    assert reply.source == "node-b"
    assert reply.is_signed() is False
    assert reply.id != original.id
    # A reply to a different message carries a different correlation id.
    other = original.with_ttl(5).create_response(MessageType.Status("ids", "ok"), "node-b")
    assert other.correlation_id != reply.correlation_id


# --- time: always with an explicit `now` ---------------------------------------------

def test_age_remaining_ttl_and_expiry() -> None:
    message = make(ttl=60)
    assert message.age(T0) == 0.0
    assert message.age(T0 + 30) == 30.0
    assert message.remaining_ttl(T0 + 30) == 30.0
    assert message.is_expired(T0 + 30) is False
    # Exactly ttl seconds old is still valid; one millisecond later it has expired.
    assert message.is_expired(T0 + 60) is False
    assert message.remaining_ttl(T0 + 60) == 0.0
    assert message.is_expired(T0 + 60.001) is True
    assert message.remaining_ttl(T0 + 61) == 0.0
    assert message.age(T0 + 61) == 61.0


def test_age_is_never_negative() -> None:
    message = make(ttl=60)
    assert message.age(T0 - 10) == 0.0
    assert message.remaining_ttl(T0 - 10) == 60.0
    assert message.is_expired(T0 - 10) is False


def test_zero_ttl_expires_after_its_timestamp() -> None:
    message = make(ttl=0)
    assert message.is_expired(T0) is False
    assert message.is_expired(T0 + 0.5) is True
    assert message.remaining_ttl(T0 + 0.5) == 0.0


# --- signatures ----------------------------------------------------------------------

def test_sign_and_verify(key: nacl.signing.SigningKey) -> None:
    message = make()
    signed = message.sign_with_ed25519(key)
    assert signed is not message
    assert message.signature is None  # signing returns a copy
    assert signed.is_signed()
    assert signed.signer_public_key == bytes(key.verify_key)
    assert signed.signature is not None
    assert len(signed.signature) == 64
    assert signed.verify_signature() is True
    # The signer's key is the envelope's origin, so it is part of the id.
    assert signed.to_envelope().origin == bytes(key.verify_key)
    assert signed.id != message.id


def test_sign_with_identity_matches_signing_key(key: nacl.signing.SigningKey) -> None:
    message = make()
    by_key = message.sign_with_ed25519(key)
    by_identity = message.sign_with_ed25519(Identity(key))
    assert by_identity.verify_signature() is True
    assert by_identity.signature == by_key.signature  # Ed25519 is deterministic


def test_unsigned_message_does_not_verify() -> None:
    assert make().verify_signature() is False


@pytest.mark.parametrize(
    "changes",
    [
        {"priority": 1},
        {"ttl": 1},
        {"timestamp": T0 + 1},
        {"source": "node-z"},
        {"sequence": 12345},
        {"correlation_id": "x"},
        {"headers": {"k": "v"}},
        {"message_type": MessageType.Data("tampered")},
    ],
    ids=lambda changes: next(iter(changes)),
)
def test_changing_a_signed_field_breaks_the_signature(key: nacl.signing.SigningKey,
                                                      changes: dict[str, Any]) -> None:
    signed = make().sign_with_ed25519(key)
    tampered = dataclasses.replace(signed, **changes)
    assert tampered.signature == signed.signature
    with pytest.raises(SignatureError):
        tampered.verify_signature()


def test_signature_with_another_public_key_is_rejected(key: nacl.signing.SigningKey,
                                                       other_key: nacl.signing.SigningKey
                                                       ) -> None:
    signed = make().sign_with_ed25519(key)
    other = bytes(other_key.verify_key)
    swapped = dataclasses.replace(signed, signer_public_key=other)
    with pytest.raises(SignatureError):
        swapped.verify_signature()
    # The same, built directly rather than copied from a signed message.
    forged = make(signature=signed.signature, signer_public_key=other,
                  sequence=signed.sequence)
    with pytest.raises(SignatureError):
        forged.verify_signature()
    # Sanity: with the right key the same fields verify.
    genuine = make(signature=signed.signature, signer_public_key=bytes(key.verify_key),
                   sequence=signed.sequence)
    assert genuine.verify_signature() is True


def test_signature_of_another_message_is_rejected(key: nacl.signing.SigningKey) -> None:
    first = make("one").sign_with_ed25519(key)
    second = make("two", sequence=first.sequence).sign_with_ed25519(key)
    spliced = dataclasses.replace(second, signature=first.signature)
    with pytest.raises(SignatureError):
        spliced.verify_signature()


def test_message_from_envelope_verifies_and_equals(key: nacl.signing.SigningKey) -> None:
    signed = make(headers={"b": "2", "a": "1"}, correlation_id="c").sign_with_ed25519(key)
    received = Message.from_envelope(wire.decode_envelope(signed.envelope_bytes,
                                                          signed.signature))
    assert received == signed
    assert received.verify_signature() is True


# --- validation ----------------------------------------------------------------------

@pytest.mark.parametrize("priority", [-1, 256, 1000, 1.5, True, "1", None])
def test_invalid_priority_is_rejected(priority: Any) -> None:
    with pytest.raises(ValueError, match="priority"):
        make(priority=priority)


@pytest.mark.parametrize("ttl", [-1, 2**32, 60.0, False, "60", None])
def test_invalid_ttl_is_rejected(ttl: Any) -> None:
    with pytest.raises(ValueError, match="ttl"):
        make(ttl=ttl)


def test_builders_validate_too() -> None:
    with pytest.raises(ValueError, match="priority"):
        make().with_priority(256)
    with pytest.raises(ValueError, match="ttl"):
        make().with_ttl(-5)


@pytest.mark.parametrize("priority", [0, 255])
def test_priority_bounds_are_accepted(priority: int) -> None:
    assert make(priority=priority).priority == priority


@pytest.mark.parametrize("ttl", [0, 2**32 - 1])
def test_ttl_bounds_are_accepted(ttl: int) -> None:
    assert make(ttl=ttl).ttl == ttl


@pytest.mark.parametrize("source", ["", "x" * 256, "é" * 128])
def test_invalid_source_is_rejected(source: str) -> None:
    with pytest.raises(ValueError, match="source"):
        Message(MessageType.Data("x"), source)


def test_message_type_must_be_a_variant() -> None:
    with pytest.raises(TypeError):
        Message("not a payload", "node-a")  # type: ignore[arg-type]


# --- payload variants and matching ---------------------------------------------------

def classify(message: Message) -> str:
    match message.message_type:
        case MessageType.Alert(level="critical", message=text):
            return f"page: {text}"
        case MessageType.Alert(level=level):
            return f"log {level}"
        case MessageType.Status(component, state):
            return f"{component}={state}"
        case MessageType.Data(text):
            return f"data {text}"
        case _:
            return "other"


def test_match_on_alert_level() -> None:
    critical = MessageType.Alert(level="critical", message="APT detected", details=None)
    warning = MessageType.Alert(level="warning", message="scan", details={"ip": "10.0.0.1"})
    assert classify(Message(critical, "ids")) == "page: APT detected"
    assert classify(Message(warning, "ids")) == "log warning"
    assert classify(Message(MessageType.Status("ids", "ok"), "ids")) == "ids=ok"
    assert classify(Message(MessageType.Data("x"), "ids")) == "data x"
    assert classify(Message(MessageType.Binary(b"x"), "ids")) == "other"
    assert isinstance(critical, MessageType)


# --- sequence numbers ----------------------------------------------------------------

def test_sequence_numbers_of_a_source_increase_by_one() -> None:
    source = fresh_source()
    sequences = [Message(MessageType.Data(str(i)), source).sequence for i in range(20)]
    assert sequences == list(range(sequences[0], sequences[0] + 20))


def test_sequence_numbers_are_per_source() -> None:
    first, second = fresh_source(), fresh_source()
    a1 = Message(MessageType.Data("x"), first).sequence
    b1 = Message(MessageType.Data("x"), second).sequence
    b2 = Message(MessageType.Data("x"), second).sequence
    a2 = Message(MessageType.Data("x"), first).sequence
    assert a2 == a1 + 1
    assert b2 == b1 + 1


def test_explicit_sequence_is_kept_and_does_not_advance_the_counter() -> None:
    source = fresh_source()
    before = Message(MessageType.Data("x"), source).sequence
    assert Message(MessageType.Data("x"), source, sequence=5).sequence == 5
    assert Message(MessageType.Data("x"), source).sequence == before + 1


def test_create_response_takes_the_next_sequence_of_the_responder() -> None:
    responder = fresh_source()
    first = Message(MessageType.Data("x"), responder).sequence
    reply = make().create_response(MessageType.Data("y"), responder)
    assert reply.sequence == first + 1


def test_empty_correlation_id_is_refused() -> None:
    # The wire encodes "no correlation id" as length 0, so "" could not survive a round
    # trip (it would come back as None).
    with pytest.raises(ValueError, match="correlation_id"):
        make(correlation_id="")
    with pytest.raises(ValueError, match="correlation_id"):
        make().with_correlation_id("")
