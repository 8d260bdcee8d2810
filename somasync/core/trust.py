"""Who may link, join and publish, and under which name: the trust policy. Sans-IO.

A node is its Ed25519 key; its human name (``node_id``, a message's ``source``) is bound
to the key, and every receiver enforces the binding. Three policies:

* ``open`` (development, the default): a name is bound to the first key seen for it, in
  a link's handshake or a member's signed ALIVE claim; another key claiming it is
  refused while the binding lives: until membership declares the key failed or gone
  (so a node restarted with a new key gets its name back once its old life is declared
  dead), or, past ``max_bindings``, the least recently confirmed binding goes.
* ``allowlist``: a fixed table of names and keys (``SecurityConfig.allowlist``); a key or
  name outside it gets no link, no membership and no delivery.
* ``certificates``: an operator key signs node certificates (name, key, validity,
  may-publish); nodes trust the operator's public key only. A node presents its
  certificate in the link handshake and in its ALIVE claims, so every member learns
  every other member's. The operator revokes a key with a message it signs
  (:func:`revocation_payload`) that travels through the mesh like any message; every
  node keeps the revocations it saw and hands them to each new neighbour, so a node that
  joins later refuses the revoked key too.

In every policy a message whose ``source`` is not the bound name of its signing key is
refused by every receiver (``source_mismatch``). Certificate layout::

    u8  version (1)         32s issuer (operator key)   32s subject (node key)
    i64 not_before (unix s) i64 not_after (unix s)      u8  flags (bit 0: may publish)
    u8  name length, name   64s signature by the issuer over CERT_DOMAIN || the above

Every decoder raises only :class:`~somasync.errors.DecodeError`.
"""

from __future__ import annotations

import enum
import struct
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from somasync.config import SecurityConfig
from somasync.core import crypto
from somasync.core.crypto import Identity
from somasync.errors import DecodeError

__all__ = [
    "CERT_DOMAIN",
    "REVOCATION_MAGIC",
    "Certificate",
    "Trust",
    "TrustMode",
    "parse_revocation",
    "revocation_payload",
]

CERT_DOMAIN = b"somasync/certificate/v1\x00"
REVOCATION_MAGIC = b"somasync-revocation-v1\x00"
_CERT_HEAD = struct.Struct("!B32s32sqqBB")
_REVOCATION = struct.Struct("!32sq")
MAX_REVOCATIONS = 10_000
LEARNED_BACKLOG = 10_000


class TrustMode(enum.StrEnum):
    """Which policy binds names to keys (see the module docstring)."""

    OPEN = "open"
    ALLOWLIST = "allowlist"
    CERTIFICATES = "certificates"


@dataclass(frozen=True, slots=True)
class Certificate:
    """An operator's statement that ``public_key`` is the node ``name``."""

    issuer: bytes
    public_key: bytes
    name: str
    not_before: int
    """Unix seconds from which it is valid."""
    not_after: int
    """Unix seconds after which it is expired."""
    may_publish: bool
    """False: the node may link and relay, but messages it originates are refused."""
    signature: bytes

    @classmethod
    def issue(cls, operator: Identity, name: str, public_key: bytes, *, not_before: int,
              not_after: int, may_publish: bool = True) -> Certificate:
        """Sign a certificate with the operator's key."""
        encoded = name.encode()
        if not 0 < len(encoded) <= 255:
            raise ValueError("a node name is 1-255 bytes of UTF-8")
        if len(public_key) != 32:
            raise ValueError("a public key is 32 bytes")
        if not_after <= not_before:
            raise ValueError("not_after must be later than not_before")
        body = _body(operator.public_key, public_key, name, not_before, not_after, may_publish)
        return cls(operator.public_key, public_key, name, not_before, not_after, may_publish,
                   operator.sign(CERT_DOMAIN, body))

    def encode(self) -> bytes:
        return _body(self.issuer, self.public_key, self.name, self.not_before, self.not_after,
                     self.may_publish) + self.signature

    @classmethod
    def decode(cls, data: bytes) -> Certificate:
        if len(data) < _CERT_HEAD.size + 64:
            raise DecodeError("bad_certificate", "certificate truncated")
        version, issuer, subject, not_before, not_after, flags, length = \
            _CERT_HEAD.unpack_from(data)
        if version != 1:
            raise DecodeError("bad_certificate", f"certificate version {version}")
        if len(data) != _CERT_HEAD.size + length + 64 or not length:
            raise DecodeError("bad_certificate", "certificate length does not add up")
        try:
            name = data[_CERT_HEAD.size:_CERT_HEAD.size + length].decode()
        except UnicodeDecodeError:
            raise DecodeError("bad_certificate", "name is not UTF-8") from None
        return cls(issuer, subject, name, not_before, not_after, bool(flags & 1),
                   data[-64:])

    def signature_ok(self) -> bool:
        body = _body(self.issuer, self.public_key, self.name, self.not_before, self.not_after,
                     self.may_publish)
        return crypto.verify(self.issuer, self.signature, CERT_DOMAIN, body)


def _body(issuer: bytes, subject: bytes, name: str, not_before: int, not_after: int,
          may_publish: bool) -> bytes:
    encoded = name.encode()
    return _CERT_HEAD.pack(1, issuer, subject, not_before, not_after, int(may_publish),
                           len(encoded)) + encoded


def revocation_payload(public_key: bytes, revoked_at: int) -> bytes:
    """The payload of an operator's revocation message (a ``Binary`` payload of a message
    the operator signs): the revoked key and when (unix seconds)."""
    return REVOCATION_MAGIC + _REVOCATION.pack(public_key, revoked_at)


def parse_revocation(payload: bytes) -> bytes | None:
    """The key a revocation payload revokes, or None when it is not one."""
    if len(payload) != len(REVOCATION_MAGIC) + _REVOCATION.size \
            or not payload.startswith(REVOCATION_MAGIC):
        return None
    key, _ = _REVOCATION.unpack_from(payload, len(REVOCATION_MAGIC))
    return bytes(key)


class Trust:
    """One node's trust policy and what it learned (bindings, certificates, revocations).

    Args:
        mode: the policy.
        allowlist: ``allowlist`` mode: name -> public key.
        operators: ``certificates`` mode: the operator keys whose certificates count.
        max_bindings: names remembered under the open policy.
    """

    def __init__(self, mode: TrustMode | str = TrustMode.OPEN, *,
                 allowlist: Mapping[str, bytes] | None = None,
                 operators: Iterable[bytes] = (), max_bindings: int = 100_000) -> None:
        self.mode = TrustMode(mode)
        self._allow = dict(allowlist or {})
        self._allowed_keys = {key: name for name, key in self._allow.items()}
        self.operators = frozenset(operators)
        self._max = max_bindings
        self._name_of: OrderedDict[bytes, str] = OrderedDict()  # open mode
        self._key_of: dict[str, bytes] = {}
        self._certificates: dict[bytes, Certificate] = {}
        self._revoked: dict[bytes, None] = {}
        self._revocations: OrderedDict[bytes, bytes] = OrderedDict()  # key -> message frame
        self._learned: list[tuple[str, bytes, bytes]] = []
        self._released: list[bytes] = []
        self.refusals: dict[str, int] = {}
        """Admissions refused, by reason (links and membership claims)."""

    @classmethod
    def from_config(cls, security: SecurityConfig) -> Trust:
        """The policy a node's :class:`~somasync.config.SecurityConfig` describes."""
        return cls(security.trust, allowlist=security.allowlist,
                   operators=security.operator_keys)

    # --- queries -----------------------------------------------------------------------

    def is_revoked(self, public_key: bytes) -> bool:
        return public_key in self._revoked

    def name_of(self, public_key: bytes) -> str | None:
        """The name bound to ``public_key``, if any."""
        if self.mode == TrustMode.ALLOWLIST:
            return self._allowed_keys.get(public_key)
        if self.mode == TrustMode.CERTIFICATES:
            cert = self._certificates.get(public_key)
            return None if cert is None else cert.name
        return self._name_of.get(public_key)

    def key_of(self, name: str) -> bytes | None:
        """The public key bound to ``name``, if any (the inverse of :meth:`name_of`)."""
        if self.mode == TrustMode.ALLOWLIST:
            return self._allow.get(name)
        if self.mode == TrustMode.CERTIFICATES:
            for key, cert in self._certificates.items():
                if cert.name == name:
                    return key
            return None
        return self._key_of.get(name)

    def admits_key(self, public_key: bytes) -> bool:
        """Whether datagrams and links from this key are worth opening at all (certificates
        mode cannot tell before the key's certificate is known, so only revocation)."""
        if public_key in self._revoked:
            return False
        if self.mode == TrustMode.ALLOWLIST:
            return public_key in self._allowed_keys
        return True

    # --- admission ---------------------------------------------------------------------

    def admit(self, public_key: bytes, name: str, credential: bytes, *,
              wall: float) -> str | None:
        """Whether a peer proving ``public_key`` and calling itself ``name`` (with this
        certificate, or none) may link or be a member. None when it may; otherwise the
        reason it may not. Admitting binds the name (open) or keeps the certificate."""
        refused = self._admit(public_key, name, credential, wall)
        if refused is not None:
            self.refusals[refused] = self.refusals.get(refused, 0) + 1
        return refused

    def _admit(self, public_key: bytes, name: str, credential: bytes,
               wall: float) -> str | None:
        if public_key in self._revoked:
            return "revoked"
        mode = self.mode
        if mode == TrustMode.ALLOWLIST:
            return None if self._allow.get(name) == public_key else "not_allowed"
        if mode == TrustMode.CERTIFICATES:
            return self._admit_certificate(public_key, name, credential, wall)
        return self._bind(name, public_key)

    def _admit_certificate(self, public_key: bytes, name: str, credential: bytes,
                           wall: float) -> str | None:
        known = self._certificates.get(public_key)
        if known is not None and known.encode() == credential and known.name == name:
            return self._valid_at(known, wall)
        if not credential:
            return "no_certificate"
        try:
            cert = Certificate.decode(credential)
        except DecodeError:
            return "bad_certificate"
        if cert.issuer not in self.operators:
            return "unknown_operator"
        if cert.public_key != public_key or cert.name != name:
            return "certificate_mismatch"
        if not cert.signature_ok():
            return "bad_certificate"
        refused = self._valid_at(cert, wall)
        if refused is None and (known is None or known.not_after <= cert.not_after):
            self._certificates[public_key] = cert
            self._note((name, public_key, credential))
        return refused

    @staticmethod
    def _valid_at(cert: Certificate, wall: float) -> str | None:
        if wall < cert.not_before:
            return "certificate_not_yet_valid"
        if wall > cert.not_after:
            return "certificate_expired"
        return None

    def _bind(self, name: str, public_key: bytes) -> str | None:
        holder = self._key_of.get(name)
        if holder is not None and holder != public_key:
            return "name_taken"
        old = self._name_of.get(public_key)
        if old == name:
            self._name_of.move_to_end(public_key)
            return None
        if old is not None:
            del self._key_of[old]
        self._name_of[public_key] = name
        self._key_of[name] = public_key
        self._note((name, public_key, b""))
        if len(self._name_of) > self._max:
            _key, forgotten = self._name_of.popitem(last=False)
            self._key_of.pop(forgotten, None)
        return None

    def check_source(self, public_key: bytes, source: str, *, wall: float) -> str | None:
        """Whether a message signed by ``public_key`` may say it comes from ``source``:
        None when it may, otherwise why not."""
        if public_key in self._revoked:
            return "revoked"
        mode = self.mode
        if mode == TrustMode.ALLOWLIST:
            return None if self._allow.get(source) == public_key else "source_mismatch"
        if mode == TrustMode.CERTIFICATES:
            cert = self._certificates.get(public_key)
            if cert is None:
                return "unknown_origin"
            if cert.name != source:
                return "source_mismatch"
            if not cert.may_publish:
                return "may_not_publish"
            return self._valid_at(cert, wall)
        bound = self._name_of.get(public_key)
        if bound is not None:
            return None if bound == source else "source_mismatch"
        holder = self._key_of.get(source)
        return None if holder is None or holder == public_key else "source_mismatch"

    # --- what other parts of the node learned --------------------------------------------

    def learn(self, name: str, public_key: bytes, credential: bytes, *, wall: float) -> None:
        """A binding another part of this node admitted (a sharded node's supervisor
        tells its workers what membership learned): admitted the same way here."""
        self.admit(public_key, name, credential, wall=wall)

    def _note(self, binding: tuple[str, bytes, bytes]) -> None:
        learned = self._learned
        learned.append(binding)
        if len(learned) > 2 * LEARNED_BACKLOG:  # nobody drains (a node in one process)
            del learned[:LEARNED_BACKLOG]

    def bindings(self) -> list[tuple[str, bytes, bytes]]:
        """Every binding known now: (name, key, certificate or empty); what a restarted
        worker starts from."""
        if self.mode == TrustMode.CERTIFICATES:
            return [(c.name, key, c.encode()) for key, c in self._certificates.items()]
        if self.mode == TrustMode.OPEN:
            return [(name, key, b"") for key, name in self._name_of.items()]
        return []

    def revocations(self) -> list[tuple[bytes, bytes]]:
        """(revoked key, kept notice frame) of every revocation kept."""
        return list(self._revocations.items())

    def release(self, public_key: bytes) -> None:
        """Membership declared ``public_key`` failed or gone: under the open policy its
        name is free again (allowlists and certificates bind for good)."""
        if self.mode != TrustMode.OPEN:
            return
        name = self._name_of.pop(public_key, None)
        if name is not None:
            if self._key_of.get(name) == public_key:
                del self._key_of[name]
            self._released.append(public_key)
            if len(self._released) > 2 * LEARNED_BACKLOG:
                del self._released[:LEARNED_BACKLOG]

    def take_released(self) -> list[bytes]:
        """Keys whose names were released since the last call."""
        released, self._released = self._released, []
        return released

    def take_learned(self) -> list[tuple[str, bytes, bytes]]:
        """Bindings admitted since the last call: (name, key, certificate or empty)."""
        learned, self._learned = self._learned, []
        return learned

    def revoke(self, public_key: bytes, frame: bytes = b"") -> bool:
        """Revoke ``public_key`` (an operator's revocation message was verified); keep
        ``frame``, the message as it travels, to hand to new neighbours. False when it
        was already revoked."""
        if public_key in self._revoked:
            return False
        self._revoked[public_key] = None
        self._certificates.pop(public_key, None)
        if frame:
            self._revocations[public_key] = frame
            if len(self._revocations) > MAX_REVOCATIONS:
                self._revocations.popitem(last=False)
        return True

    def revocation_frames(self) -> list[bytes]:
        """The revocation messages kept, as frames, for a new neighbour."""
        return list(self._revocations.values())
