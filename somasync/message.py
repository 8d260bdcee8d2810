"""The application-facing :class:`Message`: builder methods, signing and verification.

A ``Message`` is immutable; every ``with_*`` method returns a new one. Its wire form is
an envelope (see :mod:`somasync.core.wire`): signing covers a domain tag plus exactly the
envelope bytes, and the message id is the BLAKE2b hash of those bytes. A message decoded
from the network keeps the bytes it arrived in, so verification never depends on
re-serialising (a dict's key order can never break a signature).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import nacl.signing

from somasync.core import crypto, wire
from somasync.core.payload import MessageType, decode_payload, encode_payload
from somasync.errors import DecodeError, SignatureError

__all__ = ["DEFAULT_PRIORITY", "DEFAULT_TTL", "Message", "sign_batch"]

DEFAULT_TTL = 3600
"""Seconds a message stays valid, as in the original crate."""
DEFAULT_PRIORITY = 128

_sequence_lock = threading.Lock()
_sequences: dict[str, itertools.count[int]] = {}


def _next_sequence(source: str) -> int:
    """Next sequence number of ``source`` in this process.

    Seeded from the wall clock in nanoseconds, as go-libp2p does, so a restarted process
    continues above every number it used before; then +1 per message, so receivers see
    a gap-free run and anti-entropy can name exactly what is missing.
    """
    with _sequence_lock:
        counter = _sequences.get(source)
        if counter is None:
            counter = _sequences[source] = itertools.count(time.time_ns())
        return next(counter)


def _check_authenticator(signature: object) -> None:
    if isinstance(signature, bytes):
        try:
            if wire.authenticator_size(signature, wire.signature_flags(signature)) \
                    == len(signature):
                return
        except DecodeError:
            pass
    raise ValueError("signature must be 64 bytes, a batch authenticator, or None")


def sign_batch(messages: list[Message],
               signing_key: nacl.signing.SigningKey | crypto.Identity) -> list[Message]:
    """Sign ``messages`` (1 to 65,536) with one Ed25519 signature over a Merkle tree of
    their ids, and return signed copies in the same order.

    Each copy carries the root's signature and its own inclusion proof, so it verifies,
    travels and is stored alone like any signed message; a receiver checks the signature
    once per batch and each proof with a few hashes. A single message is signed as
    :meth:`Message.sign_with_ed25519` signs it.
    """
    identity = (signing_key if isinstance(signing_key, crypto.Identity)
                else crypto.Identity(signing_key))
    if not messages:
        raise ValueError("sign_batch needs at least one message")
    if len(messages) == 1:
        return [messages[0].sign_with_ed25519(identity)]
    unsigned = [dataclasses.replace(m, signature=None, signer_public_key=identity.public_key)
                for m in messages]
    bodies = [m.envelope_bytes for m in unsigned]
    depth, root, proofs = wire.build_batch([wire.message_id(body) for body in bodies])
    signature = identity.sign(wire.BATCH_DOMAIN, wire.batch_signed_bytes(depth, root))
    signed = []
    for message, body, proof in zip(unsigned, bodies, proofs, strict=True):
        copy = dataclasses.replace(message, signature=signature + proof)
        object.__setattr__(copy, "_wire", body)
        signed.append(copy)
    return signed


def _check_int(value: object, name: str, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ValueError(f"{name} must be an integer in [{low}, {high}], got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class Message:
    """A broadcast message.

    Args:
        message_type: the payload, one of the :class:`MessageType` variants.
        source: the originating node's name (1-255 bytes of UTF-8).

    Other fields default as in the original crate: ``ttl`` 3600 s, ``priority`` 128,
    ``timestamp`` now (seconds since the epoch, millisecond precision), no correlation id,
    no headers, unsigned.
    """

    message_type: MessageType
    source: str
    timestamp: float = field(default_factory=lambda: round(time.time(), 3))
    ttl: int = DEFAULT_TTL
    priority: int = DEFAULT_PRIORITY
    correlation_id: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    sequence: int = -1
    """Per-source sequence number; assigned from a process-wide counter when left -1."""
    signature: bytes | None = None
    """64-byte Ed25519 signature, or None when unsigned. A batch-signed message
    (:func:`sign_batch`) holds its whole authenticator here: the signature of its batch's
    root, then the proof that it belongs to the batch (see :mod:`somasync.core.wire`)."""
    signer_public_key: bytes | None = None
    """32-byte public key of the signer, or None when unsigned."""
    # The envelope bytes, cached; init=False so that dataclasses.replace() (any change to a
    # field) drops them and a signature no longer matches a tampered copy.
    _wire: bytes | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.message_type, MessageType):
            raise TypeError("message_type must be a MessageType variant")
        if not isinstance(self.source, str) or not 0 < len(self.source.encode()) <= 255:
            raise ValueError("source must be 1-255 bytes of UTF-8")
        _check_int(self.ttl, "ttl", 0, wire.MAX_TTL)
        _check_int(self.priority, "priority", 0, 255)
        if self.correlation_id is not None:
            if not isinstance(self.correlation_id, str):
                raise TypeError("correlation_id must be a str or None")
            if not self.correlation_id:
                # The wire encodes "no correlation id" as length 0, so "" could not
                # survive a round trip: refuse it rather than change it silently.
                raise ValueError("correlation_id must be non-empty (or None)")
        if not isinstance(self.headers, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in self.headers.items()
        ):
            raise TypeError("headers must be a dict[str, str]")
        timestamp = self.timestamp
        if (not isinstance(timestamp, int | float) or isinstance(timestamp, bool)
                or not math.isfinite(timestamp)
                or not 0 <= timestamp * 1000 < wire.MAX_TIMESTAMP_MS):
            raise ValueError(f"timestamp must be seconds since the epoch, got {timestamp!r}")
        # The wire carries milliseconds: hold exactly what a receiver will see.
        object.__setattr__(self, "timestamp", round(timestamp * 1000) / 1000)
        if self.signature is not None:
            _check_authenticator(self.signature)
        if self.signer_public_key is not None and (
                not isinstance(self.signer_public_key, bytes)
                or len(self.signer_public_key) != 32):
            raise ValueError("signer_public_key must be 32 bytes or None")
        if self.sequence == -1:
            object.__setattr__(self, "sequence", _next_sequence(self.source))
        _check_int(self.sequence, "sequence", 0, wire.MAX_SEQUENCE)

    # --- builders (each returns a new, unsigned copy) ----------------------------------
    # A copy keeps the original's sequence number: it is the same message, refined before
    # it is sent. Broadcast one of them; receivers drop a second message with the same
    # (origin, source, sequence) as a duplicate.

    def with_ttl(self, ttl: int) -> Message:
        """A copy with ``ttl`` seconds to live (drops any signature)."""
        return self._changed(ttl=ttl)

    def with_priority(self, priority: int) -> Message:
        """A copy with ``priority`` 0-255; higher is sent first (drops any signature)."""
        return self._changed(priority=priority)

    def with_correlation_id(self, correlation_id: str) -> Message:
        """A copy tagged with ``correlation_id`` (drops any signature)."""
        return self._changed(correlation_id=correlation_id)

    def with_header(self, key: str, value: str) -> Message:
        """A copy with one more header (drops any signature)."""
        return self._changed(headers={**self.headers, key: value})

    def create_response(self, message_type: MessageType, source: str) -> Message:
        """A new message answering this one: its correlation id is this message's id."""
        return Message(message_type, source, correlation_id=self.id)

    def _changed(self, **changes: object) -> Message:
        return dataclasses.replace(self, signature=None, signer_public_key=None, **changes)  # type: ignore[arg-type]

    # --- time ----------------------------------------------------------------------

    def age(self, now: float | None = None) -> float:
        """Seconds since the message was created (never negative)."""
        return max(0.0, (time.time() if now is None else now) - self.timestamp)

    def remaining_ttl(self, now: float | None = None) -> float:
        """Seconds until the message expires (0 when expired)."""
        return max(0.0, self.ttl - self.age(now))

    def is_expired(self, now: float | None = None) -> bool:
        """True when more than ``ttl`` seconds passed since ``timestamp``."""
        return self.age(now) > self.ttl

    # --- wire form, id and signatures ------------------------------------------------

    @property
    def envelope_bytes(self) -> bytes:
        """The exact bytes that are signed and hashed into the id."""
        if self._wire is not None:
            return self._wire
        kind, payload = encode_payload(self.message_type)
        data = wire.encode_envelope(
            origin=self.signer_public_key or wire.ZERO_KEY, sequence=self.sequence,
            timestamp_ms=round(self.timestamp * 1000), ttl=self.ttl, priority=self.priority,
            payload_kind=kind, source=self.source, correlation_id=self.correlation_id,
            headers=self.headers, payload=payload,
        )
        object.__setattr__(self, "_wire", data)
        return data

    @property
    def id(self) -> str:
        """Hex of the 16-byte BLAKE2b hash of :attr:`envelope_bytes`."""
        return wire.message_id(self.envelope_bytes).hex()

    def is_signed(self) -> bool:
        """True when the message carries a signature (valid or not: see
        :meth:`verify_signature`)."""
        return self.signature is not None

    def estimated_size(self) -> int:
        """Bytes this message takes on a link: its frame, length prefix and header
        included, with its signature once signed (64 bytes; a batch-signed message's
        proof adds 3 + 16 per level), before link encryption (about 20 bytes per
        record). Exact, not an estimate (the original summed its in-memory fields); a
        node refuses to send one whose frame exceeds ``GossipConfig.max_frame``."""
        return (wire.FRAME_HEADER.size + len(self.envelope_bytes)
                + (len(self.signature) if self.signature is not None else 0))

    def sign_with_ed25519(self, signing_key: nacl.signing.SigningKey | crypto.Identity) -> Message:
        """A copy signed with ``signing_key`` (its public key becomes the origin)."""
        identity = (signing_key if isinstance(signing_key, crypto.Identity)
                    else crypto.Identity(signing_key))
        unsigned = dataclasses.replace(self, signature=None,
                                       signer_public_key=identity.public_key)
        body = unsigned.envelope_bytes
        signature = identity.sign(wire.MESSAGE_DOMAIN, body)
        signed = dataclasses.replace(unsigned, signature=signature)
        object.__setattr__(signed, "_wire", body)
        return signed

    def verify_signature(self) -> bool:
        """True when the signature is valid, False when the message is unsigned.

        Raises:
            SignatureError: the message is signed but the signature does not match its
                bytes (forged, or a field was changed after signing).
        """
        if self.signature is None:
            return False
        body = self.envelope_bytes
        if len(self.signature) > wire.SIGNATURE_SIZE:
            signature, signed = wire.batch_root(wire.message_id(body), self.signature)
            domain = wire.BATCH_DOMAIN
        else:
            signature, signed, domain = self.signature, body, wire.MESSAGE_DOMAIN
        if self.signer_public_key is None or not crypto.verify(
                self.signer_public_key, signature, domain, signed):
            raise SignatureError(f"message {self.id}: signature does not match")
        return True

    def to_envelope(self) -> wire.Envelope:
        """The core's view of this message (for ``Endpoint.broadcast``)."""
        return wire.decode_envelope(self.envelope_bytes, self.signature)

    @classmethod
    def from_envelope(cls, envelope: wire.Envelope,
                      payload: MessageType | None = None) -> Message:
        """Rebuild a message from received envelope bytes (kept for verification)."""
        if payload is None:
            payload = decode_payload(envelope.payload_kind, envelope.payload)
        # Every message a node delivers passes here. An Envelope only comes from
        # wire.decode_envelope, which has already held each field to what __post_init__
        # checks (source 1-255 bytes of UTF-8, u32 ttl, u8 priority, a correlation id
        # that is None or non-empty, a str-to-str header object, a timestamp in range,
        # a u64 sequence, a 64-byte signature, a 32-byte key), and the millisecond
        # timestamp is exact: so the fields are set directly, at a fifth of the cost.
        # Through the slots' own setters: object.__setattr__ would look each one up by name.
        signature = envelope.signature
        message = object.__new__(cls)
        _set_message_type(message, payload)
        _set_source(message, envelope.source)
        _set_timestamp(message, envelope.timestamp_ms / 1000.0)
        _set_ttl(message, envelope.ttl)
        _set_priority(message, envelope.priority)
        _set_correlation_id(message, envelope.correlation_id)
        _set_headers(message, envelope.headers)
        _set_sequence(message, envelope.sequence)
        _set_signature(message, signature)
        _set_signer_public_key(message, None if signature is None else envelope.origin)
        _set_wire(message, envelope.body)
        return message


# The slot setters of a frozen Message, for from_envelope (its own fields only).
def _slot_setter(name: str) -> Callable[[Message, object], None]:
    setter: Callable[[Message, object], None] = vars(Message)[name].__set__
    return setter


_set_message_type = _slot_setter("message_type")
_set_source = _slot_setter("source")
_set_timestamp = _slot_setter("timestamp")
_set_ttl = _slot_setter("ttl")
_set_priority = _slot_setter("priority")
_set_correlation_id = _slot_setter("correlation_id")
_set_headers = _slot_setter("headers")
_set_sequence = _slot_setter("sequence")
_set_signature = _slot_setter("signature")
_set_signer_public_key = _slot_setter("signer_public_key")
_set_wire = _slot_setter("_wire")
