"""Key, allowlist, certificate and revocation files: what an operator hands to nodes.

* An identity file holds a node's (or an operator's) Ed25519 seed: JSON
  ``{"type": "somasync-identity", "public_key": hex, "seed": hex}``, created with mode
  0600. Loading refuses a file that other users may read, or that does not parse, with
  a :class:`~somasync.errors.KeyFileError` naming the file.
* An allowlist file has one ``<name> <hex public key>`` per line (``#`` comments).
* A certificate file: JSON ``{"type": "somasync-certificate", "certificate": hex, ...}``
  (the other fields repeat what the certificate says, for people).
* A revocation file: JSON ``{"type": "somasync-revocation", "message": hex}``, the
  operator-signed message (signature then envelope) that any node can publish with
  :meth:`SynapseNode.broadcast <somasync.SynapseNode.broadcast>`.

``python -m somasync keys ...`` wraps these for operators (see the README's "Securing a
mesh").
"""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path
from typing import Any

import orjson

from somasync.core import wire
from somasync.core.crypto import Identity
from somasync.core.payload import MessageType
from somasync.core.trust import Certificate, parse_revocation, revocation_payload
from somasync.errors import DecodeError, KeyFileError, SignatureError
from somasync.message import Message

__all__ = [
    "OPERATOR_SOURCE",
    "load_allowlist",
    "load_certificate",
    "load_identity",
    "load_revocation",
    "require_private",
    "revocation_message",
    "save_certificate",
    "save_identity",
    "save_revocation",
]

OPERATOR_SOURCE = "somasync-operator"
"""The ``source`` of an operator's revocation messages."""
REVOCATION_TTL = 30 * 24 * 3600  # the notice itself is kept and handed on past this


def _write_private(path: Path, data: bytes, *, overwrite: bool) -> None:
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        raise KeyFileError(path, "exists already (refusing to overwrite a key)") from None
    except OSError as exc:
        raise KeyFileError(path, exc.strerror or str(exc)) from None
    with os.fdopen(fd, "wb") as handle:
        os.fchmod(handle.fileno(), 0o600)
        handle.write(data)


def _read(path: Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise KeyFileError(path, exc.strerror or str(exc)) from None


def _json(path: Path, kind: str) -> dict[str, Any]:
    try:
        data = orjson.loads(_read(path))
    except orjson.JSONDecodeError:
        raise KeyFileError(path, "is not a SomaSync key file (not JSON)") from None
    if not isinstance(data, dict) or data.get("type") != kind:
        raise KeyFileError(path, f"is not a {kind} file")
    return data


def _hex(path: Path, data: dict[str, Any], field: str, size: int | None = None) -> bytes:
    value = data.get(field)
    try:
        raw = bytes.fromhex(value) if isinstance(value, str) else None
    except ValueError:
        raw = None
    if raw is None or (size is not None and len(raw) != size):
        what = f"{size} bytes of hex" if size else "hex"
        raise KeyFileError(path, f"field {field!r} must be {what}")
    return raw


def save_identity(identity: Identity, path: str | os.PathLike[str], *,
                  overwrite: bool = False) -> None:
    """Write ``identity`` to ``path`` (mode 0600; an existing file is kept unless
    ``overwrite``)."""
    body = {"type": "somasync-identity", "public_key": identity.public_key.hex(),
            "seed": bytes(identity.signing_key).hex()}
    _write_private(Path(path), orjson.dumps(body, option=orjson.OPT_INDENT_2) + b"\n",
                   overwrite=overwrite)


def load_identity(path: str | os.PathLike[str]) -> Identity:
    """The identity in ``path``.

    Raises:
        KeyFileError: the file is missing, readable by other users (group or world
            permission bits set), not an identity file, or its key does not match.
    """
    path = Path(path)
    require_private(path)
    data = _json(path, "somasync-identity")
    identity = Identity(_hex(path, data, "seed", 32))
    if data.get("public_key") not in (None, identity.public_key.hex()):
        raise KeyFileError(path, "its public_key does not belong to its seed")
    return identity


def require_private(path: str | os.PathLike[str]) -> None:
    """Refuse a secret's file (a key, an RPC token) that other users may access.

    Raises:
        KeyFileError: the file is missing, or a group or world permission bit is set (the
            message gives the mode and the fix).
    """
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise KeyFileError(path, exc.strerror or str(exc)) from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(path, f"is accessible by other users (mode {stat.S_IMODE(mode):04o});"
                                 f" chmod 600 it")


def load_allowlist(path: str | os.PathLike[str]) -> dict[str, bytes]:
    """``name -> public key`` from an allowlist file (``<name> <hex key>`` per line)."""
    path = Path(path)
    allowlist: dict[str, bytes] = {}
    for number, line in enumerate(_read(path).decode(errors="replace").splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        try:
            key = bytes.fromhex(parts[1]) if len(parts) == 2 else b""
        except ValueError:
            key = b""
        if len(key) != 32:
            raise KeyFileError(path, f"line {number}: expected '<name> <64 hex digits>'")
        if parts[0] in allowlist:
            raise KeyFileError(path, f"line {number}: {parts[0]!r} is listed twice")
        allowlist[parts[0]] = key
    if not allowlist:
        raise KeyFileError(path, "lists no node")
    return allowlist


def save_certificate(certificate: Certificate, path: str | os.PathLike[str]) -> None:
    body = {"type": "somasync-certificate", "certificate": certificate.encode().hex(),
            "name": certificate.name, "public_key": certificate.public_key.hex(),
            "issuer": certificate.issuer.hex(), "not_before": certificate.not_before,
            "not_after": certificate.not_after, "may_publish": certificate.may_publish}
    Path(path).write_bytes(orjson.dumps(body, option=orjson.OPT_INDENT_2) + b"\n")


def load_certificate(path: str | os.PathLike[str]) -> Certificate:
    """The certificate in ``path`` (its signature is checked by the nodes that use it)."""
    path = Path(path)
    data = _json(path, "somasync-certificate")
    try:
        return Certificate.decode(_hex(path, data, "certificate"))
    except DecodeError as exc:
        raise KeyFileError(path, f"holds no valid certificate: {exc}") from None


def revocation_message(operator: Identity, public_key: bytes, *, sequence: int,
                       revoked_at: int | None = None) -> Message:
    """The operator's signed notice that ``public_key`` is revoked. ``sequence`` numbers
    this operator's notices 1, 2, 3... (the mesh repairs gaps in a stream by them)."""
    if len(public_key) != 32:
        raise ValueError("a public key is 32 bytes")
    at = int(time.time()) if revoked_at is None else revoked_at
    message = Message(MessageType.Binary(revocation_payload(public_key, at)), OPERATOR_SOURCE,
                      sequence=sequence, ttl=REVOCATION_TTL, priority=255)
    return message.sign_with_ed25519(operator)


def save_revocation(message: Message, path: str | os.PathLike[str]) -> None:
    envelope = message.to_envelope()
    if envelope.signature is None:
        raise ValueError("a revocation must be signed by the operator")
    body = {"type": "somasync-revocation", "message": (envelope.signature
                                                       + envelope.body).hex()}
    Path(path).write_bytes(orjson.dumps(body, option=orjson.OPT_INDENT_2) + b"\n")


def load_revocation(path: str | os.PathLike[str]) -> Message:
    """The revocation message in ``path`` (signature checked: a forged file is refused)."""
    path = Path(path)
    raw = _hex(path, _json(path, "somasync-revocation"), "message")
    try:
        message = Message.from_envelope(wire.decode_envelope(raw[64:], raw[:64]))
    except DecodeError as exc:
        raise KeyFileError(path, f"holds no valid message: {exc}") from None
    payload = message.message_type
    try:
        signed = message.verify_signature()
    except SignatureError:
        signed = False
    if not (signed and isinstance(payload, MessageType.Binary)
            and parse_revocation(payload.data)):
        raise KeyFileError(path, "holds no signed revocation")
    return message
