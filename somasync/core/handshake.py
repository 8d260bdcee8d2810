"""The link handshake and the sealed record layer of every TCP connection. Sans-IO.

Every connection starts with a handshake in which both ends prove their Ed25519 identity
over fresh ephemeral X25519 keys, then carries frames inside sealed records
(ChaCha20-Poly1305). Its shape is SIGMA's "sign and MAC" (the pattern under TLS 1.3 and
IKEv2): each side signs the transcript of both ephemeral keys, so a signature is only
good for this one connection, and sends that signature encrypted under a key only the
two ephemeral secrets give, so a passive observer learns neither name nor key.

Both ends speak first (the dialler and the listener each send ``E`` at once), so two
nodes never wait on each other, and the whole handshake costs one round trip::

    E     4s  magic        b"SSY\\x02" (a v1 peer reads it as an impossible frame length;
                           we read a v1 peer's HELLO as a plaintext peer and say so)
          u8  flags        bit 0: this side asks for plaintext records (benchmarks only)
          32s ephemeral    fresh X25519 public key
    AUTH  u16 length       of what follows, at most MAX_AUTH
          ... sealed       under the sender's handshake key, nonce 0, associated data
                           the transcript hash:
                32s public key      the sender's Ed25519 identity
                64s signature       over AUTH_DOMAIN || transcript hash || role byte
                u8  name length, name (UTF-8)
                u16 listen address length, listen address (may be empty)
                u16 credential length, credential (an operator's certificate, or empty)

    transcript hash H = BLAKE2b-256(HANDSHAKE_DOMAIN || E of the dialler || E of the
                        listener); role byte: 0 dialler, 1 listener
    keys = BLAKE2b-256(label || H, key = X25519(own ephemeral, peer ephemeral)) for the
           labels "auth dialler", "auth listener", "data dialler", "data listener"

After both AUTHs are checked, every byte in each direction is a record::

    u32 length             of the sealed part: 16 < length <= MAX_RECORD + 16
                           (MAX_RECORD is 16 KiB)
    ... sealed             ChaCha20-Poly1305 under the sender's data key; the nonce is
                           a per-direction counter (u64 little endian, then 4 zero
                           bytes), so a record replayed, reordered, dropped or altered
                           fails to open and the link is closed

A replayed E or AUTH fails: the replayer lacks the ephemeral secret, and a signature
covers the other side's fresh ephemeral key. Records are opened in arrival order only;
nothing is ever decrypted twice under one nonce. When both sides ask for plaintext (a
benchmark comparing the cost of sealing) the handshake is the same and records carry
frames as they are; a man in the middle cannot ask for it, since both flags are in H.

Every decoder raises only :class:`~somasync.errors.DecodeError`.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

from somasync.core import crypto
from somasync.core.crypto import Identity
from somasync.errors import DecodeError

__all__ = [
    "AUTH_DOMAIN",
    "HANDSHAKE_DOMAIN",
    "MAGIC",
    "MAX_RECORD",
    "Handshake",
    "PeerHello",
    "Session",
]

MAGIC = b"SSY\x02"
HANDSHAKE_DOMAIN = b"somasync/handshake/v2\x00"
AUTH_DOMAIN = b"somasync/auth/v2\x00"
FLAG_PLAINTEXT = 0x01
E_SIZE = len(MAGIC) + 1 + 32
MAX_AUTH = 8192
MAX_RECORD = 16 * 1024
"""Plaintext bytes per record: small enough that a receiver never holds much before the
tag is checked, and that the frames one record opens are a bounded amount of work (a
runtime feeds each link a slice of this size per loop turn, so a flooding neighbour
cannot hold the loop); large enough that sealing costs 20 bytes per 16 KiB."""
_RECORD_LENGTH = struct.Struct("!I")
_U16 = struct.Struct("!H")
_COUNTER = struct.Struct("<Q")
_NONCE_PAD = bytes(4)
_AUTH_NONCE = bytes(12)
_TAG = crypto.AEAD_TAG_SIZE
_EXPORT = struct.Struct("!32s32sQQB")


@dataclass(frozen=True, slots=True)
class PeerHello:
    """Who the other end of a link proved to be."""

    public_key: bytes
    """Its Ed25519 public key, proven by a signature over this connection's transcript."""
    node_id: str
    """The name it gave (checked against the trust policy before the link counts)."""
    listen_address: str | None
    """``host:port`` it listens on, or None (a client that does not listen)."""
    credential: bytes = b""
    """Its operator certificate, or empty."""

    def encode(self) -> bytes:
        name = self.node_id.encode()
        listen = (self.listen_address or "").encode()
        return (self.public_key + bytes([len(name)]) + name + _U16.pack(len(listen))
                + listen + _U16.pack(len(self.credential)) + self.credential)

    @classmethod
    def decode(cls, data: bytes) -> PeerHello:
        hello, end = _decode_hello(data, 0)
        if end != len(data):
            raise DecodeError("bad_hello", "trailing bytes after the introduction")
        return hello


def _decode_hello(data: bytes, offset: int) -> tuple[PeerHello, int]:
    try:
        key = data[offset:offset + 32]
        offset += 32
        name_length = data[offset]
        name_bytes = data[offset + 1:offset + 1 + name_length]
        offset += 1 + name_length
        (listen_length,) = _U16.unpack_from(data, offset)
        listen_bytes = data[offset + 2:offset + 2 + listen_length]
        offset += 2 + listen_length
        (credential_length,) = _U16.unpack_from(data, offset)
        credential = data[offset + 2:offset + 2 + credential_length]
        offset += 2 + credential_length
    except (IndexError, struct.error):
        raise DecodeError("bad_hello", "introduction truncated") from None
    if (len(key) != 32 or len(name_bytes) != name_length or not name_length
            or len(listen_bytes) != listen_length or len(credential) != credential_length
            or offset > len(data)):
        raise DecodeError("bad_hello", "introduction truncated")
    try:
        name = name_bytes.decode()
        listen = listen_bytes.decode() if listen_bytes else None
    except UnicodeDecodeError:
        raise DecodeError("bad_hello", "name or address is not UTF-8") from None
    return PeerHello(bytes(key), name, listen, bytes(credential)), offset


def _derive(shared: bytes, label: bytes, transcript: bytes) -> bytes:
    return hashlib.blake2b(label + transcript, key=shared, digest_size=32).digest()


class Session:
    """The sealed record layer of one established link, one direction each way.

    ``seal`` turns frames into records; ``open`` turns received bytes into frames. Its
    keys and counters can be exported and imported, which is how a sharded node's
    supervisor hands an established connection to the worker that owns the peer.
    """

    __slots__ = ("_buffer", "_need", "_recv_counter", "_recv_key", "_send_counter",
                 "_send_key", "peer", "sealed")

    def __init__(self, send_key: bytes, recv_key: bytes, peer: PeerHello, *,
                 sealed: bool = True, send_counter: int = 0, recv_counter: int = 0) -> None:
        self._send_key = send_key
        self._recv_key = recv_key
        self._send_counter = send_counter
        self._recv_counter = recv_counter
        self._buffer = bytearray()
        self._need = 0
        self.peer = peer
        self.sealed = sealed

    @property
    def buffered(self) -> int:
        """Received bytes held for an incomplete record."""
        return len(self._buffer)

    def seal(self, data: bytes) -> bytes:
        """Records carrying ``data`` (as many as MAX_RECORD requires)."""
        if not self.sealed:
            return data
        out = []
        key = self._send_key
        for start in range(0, len(data), MAX_RECORD):
            chunk = data[start:start + MAX_RECORD]
            nonce = _COUNTER.pack(self._send_counter) + _NONCE_PAD
            self._send_counter += 1
            sealed = crypto.aead_seal(key, nonce, chunk)
            out.append(_RECORD_LENGTH.pack(len(sealed)))
            out.append(sealed)
        return b"".join(out)

    def open(self, data: bytes) -> bytes:
        """The plaintext of the complete records in ``data`` (and what came before it);
        a partial record is kept for the next call.

        Raises:
            DecodeError: ``record_too_large`` (a length past the bound, checked before
                anything is buffered for it) or ``bad_record`` (a record that does not
                open: altered, replayed, reordered or forged). The link cannot recover
                from either; the plaintext of records before it is lost with the link.
        """
        if not self.sealed:
            return data
        buffer = self._buffer
        buffer += data
        if len(buffer) < self._need:
            return b""
        out = []
        offset = 0
        end = len(buffer)
        key = self._recv_key
        while end - offset >= 4:
            (length,) = _RECORD_LENGTH.unpack_from(buffer, offset)
            if not _TAG < length <= MAX_RECORD + _TAG:
                buffer.clear()
                raise DecodeError("record_too_large" if length > _TAG else "bad_record",
                                  f"record length {length}")
            stop = offset + 4 + length
            if stop > end:
                self._need = stop - offset
                break
            nonce = _COUNTER.pack(self._recv_counter) + _NONCE_PAD
            plain = crypto.aead_open(key, nonce, bytes(buffer[offset + 4:stop]))
            if plain is None:
                buffer.clear()
                raise DecodeError("bad_record", "a record failed its authentication tag")
            self._recv_counter += 1
            out.append(plain)
            offset = stop
        else:
            self._need = 0
        if offset:
            del buffer[:offset]
        return b"".join(out)

    def export(self) -> bytes:
        """Keys, counters and the peer, for :meth:`restore` in another process. Only ever
        sent over the node's own control socket (the worker's, mode 0600 semantics of a
        socketpair): these bytes are the link's secrets."""
        if self._buffer:
            raise ValueError("cannot export a session holding a partial record")
        return (_EXPORT.pack(self._send_key, self._recv_key, self._send_counter,
                             self._recv_counter, int(self.sealed))
                + self.peer.encode())

    @classmethod
    def restore(cls, data: bytes) -> Session:
        """The session :meth:`export` wrote."""
        if len(data) < _EXPORT.size:
            raise DecodeError("bad_session", "exported session truncated")
        send_key, recv_key, send_counter, recv_counter, sealed = _EXPORT.unpack_from(data)
        peer = PeerHello.decode(data[_EXPORT.size:])
        return cls(send_key, recv_key, peer, sealed=bool(sealed), send_counter=send_counter,
                   recv_counter=recv_counter)


class Handshake:
    """One side of the handshake of one connection (see the module docstring).

    Send :meth:`initial_bytes` at once; pass everything received to :meth:`receive` and
    send what it returns. When :attr:`session` is set the handshake is done: the peer is
    ``session.peer`` and :attr:`leftover` holds bytes that arrived after its AUTH (the
    first records), to be passed to ``session.open``.

    Args:
        identity: this node's key pair.
        node_id: this node's name, sent inside the sealed AUTH.
        listen_address: where this node listens, or None.
        dialer: True on the side that opened the connection.
        credential: this node's certificate, or empty.
        plaintext: ask for unsealed records (only granted when the peer asks too).
        ephemeral: a fixed ephemeral secret (tests only; fresh from the OS otherwise).
        verify: the signature check (the simulator may share a cache).
    """

    __slots__ = ("_buffer", "_dialer", "_e_secret", "_flags", "_keys", "_local", "_own_e",
                 "_peer_e", "_transcript", "_verify", "identity", "leftover", "session")

    def __init__(self, identity: Identity, node_id: str, listen_address: str | None, *,
                 dialer: bool, credential: bytes = b"", plaintext: bool = False,
                 ephemeral: bytes | None = None, verify: crypto.Verifier = crypto.verify
                 ) -> None:
        name = node_id.encode()
        if not 0 < len(name) <= 255:
            raise ValueError("node_id must be 1-255 bytes of UTF-8")
        self.identity = identity
        self._local = PeerHello(identity.public_key, node_id, listen_address, credential)
        self._dialer = dialer
        self._flags = FLAG_PLAINTEXT if plaintext else 0
        self._e_secret, e_public = crypto.x25519_keypair(ephemeral)
        self._own_e = MAGIC + bytes([self._flags]) + e_public
        self._peer_e: bytes | None = None
        self._buffer = bytearray()
        self._keys: dict[bytes, bytes] = {}
        self._transcript = b""
        self._verify = verify
        self.session: Session | None = None
        self.leftover = b""

    def initial_bytes(self) -> bytes:
        """The ``E`` message, sent as soon as the connection is up."""
        return self._own_e

    def receive(self, data: bytes) -> bytes:
        """Take bytes from the peer; return bytes to send (the AUTH, once the peer's ``E``
        is in).

        Raises:
            DecodeError: ``plaintext_peer`` (it spoke the old unsealed protocol),
                ``bad_handshake`` (not our protocol, a bad key, an AUTH too long or not
                opening, bytes past a finished handshake) or ``bad_signature``.
        """
        if self.session is not None:
            raise DecodeError("bad_handshake", "handshake already finished")
        buffer = self._buffer
        buffer += data
        out = b""
        if self._peer_e is None:
            if len(buffer) < len(MAGIC):
                if not MAGIC.startswith(bytes(buffer)):
                    self._refuse_start(buffer)
                return b""
            if buffer[:len(MAGIC)] != MAGIC:
                self._refuse_start(buffer)
            if len(buffer) < E_SIZE:
                return b""
            self._peer_e = bytes(buffer[:E_SIZE])
            del buffer[:E_SIZE]
            out = self._start_auth()
        if len(buffer) < 2:
            return out
        (length,) = _U16.unpack_from(buffer)
        if not _TAG < length <= MAX_AUTH:
            raise DecodeError("bad_handshake", f"AUTH length {length}")
        if len(buffer) < 2 + length:
            return out
        sealed = bytes(buffer[2:2 + length])
        self.leftover = bytes(buffer[2 + length:])
        buffer.clear()
        self._finish(sealed)
        return out

    def _refuse_start(self, buffer: bytearray) -> None:
        if buffer[:1] == b"\x00":
            raise DecodeError("plaintext_peer",
                              "the peer speaks the unsealed v1 protocol (a HELLO frame)")
        raise DecodeError("bad_handshake", "the connection does not start with SSY\\x02")

    def _start_auth(self) -> bytes:
        assert self._peer_e is not None
        peer_public = self._peer_e[len(MAGIC) + 1:]
        shared = crypto.x25519(self._e_secret, peer_public)
        if shared is None:
            raise DecodeError("bad_handshake", "the peer's ephemeral key is a low-order point")
        dialer_e, listener_e = ((self._own_e, self._peer_e) if self._dialer
                                else (self._peer_e, self._own_e))
        transcript = hashlib.blake2b(HANDSHAKE_DOMAIN + dialer_e + listener_e,
                                     digest_size=32).digest()
        self._transcript = transcript
        self._keys = {label: _derive(shared, label, transcript)
                      for label in (b"auth dialler", b"auth listener", b"data dialler",
                                    b"data listener")}
        self._e_secret = b""  # forward secrecy: the ephemeral secret is not kept
        role = b"\x00" if self._dialer else b"\x01"
        signature = self.identity.sign(AUTH_DOMAIN, transcript + role)
        local = self._local.encode()
        body = local[:32] + signature + local[32:]
        sealed = crypto.aead_seal(self._keys[b"auth dialler" if self._dialer
                                             else b"auth listener"],
                                  _AUTH_NONCE, body, transcript)
        return _U16.pack(len(sealed)) + sealed

    def _finish(self, sealed: bytes) -> None:
        peer_auth_key = self._keys[b"auth listener" if self._dialer else b"auth dialler"]
        body = crypto.aead_open(peer_auth_key, _AUTH_NONCE, sealed, self._transcript)
        if body is None or len(body) < 96:
            raise DecodeError("bad_handshake", "the peer's AUTH does not open")
        signature = body[32:96]
        peer, end = _decode_hello(body[:32] + body[96:], 0)
        if end != len(body) - 64:
            raise DecodeError("bad_handshake", "trailing bytes in AUTH")
        peer_role = b"\x01" if self._dialer else b"\x00"
        if not self._verify(peer.public_key, signature, AUTH_DOMAIN,
                            self._transcript + peer_role):
            raise DecodeError("bad_signature", "the peer's AUTH signature")
        assert self._peer_e is not None
        plaintext = bool(self._flags & FLAG_PLAINTEXT
                         and self._peer_e[len(MAGIC)] & FLAG_PLAINTEXT)
        send, recv = ((b"data dialler", b"data listener") if self._dialer
                      else (b"data listener", b"data dialler"))
        self.session = Session(self._keys[send], self._keys[recv], peer, sealed=not plaintext)
        self._keys = {}
