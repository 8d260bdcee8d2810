"""Sealed datagrams: every membership and overlay datagram authenticated, encrypted and
replay-protected, with nothing to configure. Sans-IO.

Each pair of nodes shares a key that only the two of them can compute: their Ed25519
identities converted to X25519, agreed with Diffie-Hellman, hashed with both public keys
(the static-static half of Noise's ``KK``). A datagram to a member is sealed under that
key with XChaCha20-Poly1305 (a random 24-byte nonce, so a restart never reuses one), so
it proves its sender, hides what it says (names, addresses, claims) and cannot be
altered. Layouts::

    SEALED  u8 0xA1 | 32s sender key | 24s nonce |
            sealed(u64 epoch | u64 sequence | u64 sent_at | datagram)
            associated data: the first 33 bytes and the recipient's key
    WHOIS   u8 0xA2 | 32s sender key | 16s challenge | zeros up to the size of an IAM
    IAM     u8 0xA3 | 32s responder key | 16s challenge | 64s signature by the responder
            over IAM_DOMAIN || challenge || the asker's key

A node that must send to an address whose key it does not know yet (a seed, before it
joined) holds the datagram (bounded) and asks the address ``WHOIS``; the signed ``IAM``
names the key, and the held datagrams go out sealed to it. Keys are otherwise learned
from authenticated sources only: members' signed ALIVE claims and the peers' link
handshakes (``learn``), never from a datagram's source address. A WHOIS is padded to the
size of its answer, so the exchange amplifies nothing, and answers are rate-limited.

Replays. ``sent_at`` is the sender's wall clock (microseconds): a receiver refuses a
datagram more than ``max_age`` seconds from its own clock. ``epoch`` is the sender's
clock when it started and ``sequence`` counts its datagrams from 0, so per sender a
receiver keeps the latest epoch and an IPsec/WireGuard-style sliding window over the
last 64 sequence numbers: a datagram of an older epoch (a previous life of the sender),
or one already seen, or one more than 64 behind is refused; reordering within the
window is not.
"""

from __future__ import annotations

import hashlib
import struct
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from somasync.core import crypto
from somasync.core.budget import TokenBucket
from somasync.core.crypto import Identity

__all__ = ["IAM_DOMAIN", "DatagramSealer", "SealerStatistics"]

SEALED, WHOIS, IAM = 0xA1, 0xA2, 0xA3
IAM_DOMAIN = b"somasync/iam/v1\x00"
PAIR_DOMAIN = b"somasync/pair/v1\x00"
_HEAD = struct.Struct("!B32s24s")
_COUNTER = struct.Struct("!QQQ")  # epoch, sequence, sent_at (microseconds)
_IAM = struct.Struct("!B32s16s64s")
_WHOIS = struct.Struct("!B32s16s")
OVERHEAD = _HEAD.size + _COUNTER.size + crypto.AEAD_TAG_SIZE
"""Bytes sealing adds to a datagram (97)."""
WINDOW = 64
HELD_PER_ADDRESS = 16
HELD_ADDRESSES = 256
HOLD_FOR = 5.0  # seconds a datagram waits for its address's IAM
WHOIS_EVERY = 1.0  # seconds between two WHOIS to one address
IAM_RATE = 200.0  # answers per second (burst as many), whoever asks
NEW_SENDER_RATE = 200.0  # key agreements with senders not in the cache, per second: a
# flood of datagrams under made-up keys costs one X25519 each, so it is budgeted (a real
# joiner that finds the budget spent is heard at its next retry)


@dataclass(slots=True)
class _Window:
    """One sender's replay window."""

    highest: int
    """The highest sequence number seen in this epoch."""
    bits: int
    """Bit i: sequence ``highest - i`` was seen."""
    epoch: int
    heard: float
    """Our wall clock when this sender last got a datagram through."""


@dataclass(frozen=True, slots=True)
class SealerStatistics:
    """Counters of the datagram seal (one per node)."""

    sealed: int
    """Datagrams sealed and sent."""
    opened: int
    """Datagrams received that opened and were fresh."""
    whois_sent: int
    iam_sent: int
    keys_learned: int
    """Addresses whose key an IAM taught (the others come from claims and links)."""
    held_dropped: int
    """Datagrams dropped because their address never answered WHOIS in time."""
    rejected: dict[str, int]
    """Refused datagrams by reason: ``unsealed``, ``truncated``, ``bad_seal`` (altered,
    or not sealed for us), ``replayed``, ``stale`` (counter too far from our clock),
    ``bad_key``, ``not_admitted``, ``bad_iam``, ``unasked_iam``, ``iam_limited``,
    ``oversize``, ``new_sender_limited`` (too many unknown keys at once)."""


class DatagramSealer:
    """Seals and opens one node's datagrams (see the module docstring).

    Args:
        identity: the node's key pair (its X25519 half agrees the pair keys).
        resolve: the key of an address, where the node knows it from an authenticated
            source (members' ALIVE claims, link handshakes); None otherwise.
        admit: whether datagrams from this key may be opened at all (the trust policy);
            everyone by default.
        max_age: seconds a datagram's counter may differ from this node's clock.
        max_peers: senders whose replay windows and pair keys are kept (least recently
            heard from forgotten first).
        max_size: the largest datagram opened (the protocol's largest, sealed); a longer
            one is refused before any key is computed.
    """

    def __init__(self, identity: Identity, *, resolve: Callable[[str], bytes | None],
                 admit: Callable[[bytes], bool] | None = None, max_age: float = 60.0,
                 max_peers: int = 4096, max_size: int = 65_535) -> None:
        self._max_size = max_size
        self._key = identity.public_key
        self._identity = identity
        self._secret = identity.x25519_secret()
        self._resolve = resolve
        self._admit = admit
        self._max_age = max_age
        self._max_peers = max_peers
        self._pair_keys: OrderedDict[bytes, bytes | None] = OrderedDict()
        self._windows: OrderedDict[bytes, _Window] = OrderedDict()
        self._learned: OrderedDict[str, bytes] = OrderedDict()
        self._held: OrderedDict[str, list[tuple[float, bytes]]] = OrderedDict()
        self._asked: dict[str, tuple[bytes, float]] = {}  # address -> (challenge, when)
        self._out: list[tuple[str, bytes]] = []
        self._epoch = 0
        self._sequence = 0
        self._iam_budget = TokenBucket(IAM_RATE, IAM_RATE)
        self._new_sender_budget = TokenBucket(NEW_SENDER_RATE, NEW_SENDER_RATE)
        self._sealed = self._opened = self._whois = self._iam = self._taught = 0
        self._held_dropped = 0
        self._rejected: dict[str, int] = {}
        self._wall = 0.0

    # --- keys --------------------------------------------------------------------------

    def learn(self, address: str, public_key: bytes) -> None:
        """``address`` belongs to ``public_key`` (from an authenticated source); datagrams
        held for it go out now."""
        learned = self._learned
        learned[address] = public_key
        learned.move_to_end(address)
        if len(learned) > self._max_peers:
            learned.popitem(last=False)
        held = self._held.pop(address, None)
        self._asked.pop(address, None)
        if held:
            for _, data in held:
                self._seal_to(address, public_key, data)

    def key_of(self, address: str) -> bytes | None:
        return self._learned.get(address) or self._resolve(address)

    def _pair_key(self, peer: bytes) -> bytes | None:
        cache = self._pair_keys
        if peer in cache:
            cache.move_to_end(peer)
            return cache[peer]
        curve = crypto.ed25519_to_x25519(peer)
        shared = None if curve is None else crypto.x25519(self._secret, curve)
        key = None if shared is None else hashlib.blake2b(
            PAIR_DOMAIN + min(peer, self._key) + max(peer, self._key), key=shared,
            digest_size=32).digest()
        cache[peer] = key
        if len(cache) > self._max_peers:
            cache.popitem(last=False)
        return key

    # --- sending -----------------------------------------------------------------------

    def seal(self, address: str, data: bytes, *, now: float, wall: float) -> None:
        """Send ``data`` to ``address`` sealed (now, or once its key is known)."""
        self._wall = wall
        key = self.key_of(address)
        if key is not None:
            self._seal_to(address, key, data)
            return
        held = self._held.get(address)
        if held is None:
            held = self._held[address] = []
            if len(self._held) > HELD_ADDRESSES:
                _, dropped = self._held.popitem(last=False)
                self._held_dropped += len(dropped)
        fresh = [item for item in held if item[0] > now]
        self._held_dropped += len(held) - len(fresh)
        fresh.append((now + HOLD_FOR, data))
        if len(fresh) > HELD_PER_ADDRESS:
            fresh.pop(0)
            self._held_dropped += 1
        self._held[address] = fresh
        asked = self._asked.get(address)
        if asked is None or now - asked[1] >= WHOIS_EVERY:
            challenge = crypto.random_bytes(16)
            self._asked[address] = (challenge, now)
            self._whois += 1
            whois = _WHOIS.pack(WHOIS, self._key, challenge)
            self._out.append((address, whois + bytes(_IAM.size - len(whois))))

    def _seal_to(self, address: str, peer: bytes, data: bytes) -> None:
        key = self._pair_key(peer)
        if key is None:
            self._count("bad_key")
            return
        sent_at = int(self._wall * 1e6)
        if not self._epoch:
            self._epoch = sent_at
        self._sequence += 1
        nonce = crypto.random_bytes(24)
        head = _HEAD.pack(SEALED, self._key, nonce)
        sealed = crypto.xaead_seal(
            key, nonce, _COUNTER.pack(self._epoch, self._sequence, sent_at) + data,
            head[:33] + peer)
        self._sealed += 1
        self._out.append((address, head + sealed))

    def take(self) -> list[tuple[str, bytes]]:
        """Datagrams to send now; drains."""
        out, self._out = self._out, []
        return out

    # --- receiving ---------------------------------------------------------------------

    def open(self, address: str, data: bytes, *, now: float,
             wall: float) -> tuple[bytes, bytes] | None:
        """The (sender key, datagram) that ``data`` from ``address`` carries, or None:
        refused (counted), or a WHOIS/IAM handled here."""
        self._wall = wall
        if len(data) > self._max_size:
            self._count("oversize")
            return None
        kind = data[:1]
        if kind == b"\xa1":
            return self._open_sealed(data, now, wall)
        if kind == b"\xa2":
            self._on_whois(address, data, now)
        elif kind == b"\xa3":
            self._on_iam(address, data)
        else:
            self._count("unsealed")
        return None

    def _open_sealed(self, data: bytes, now: float,
                     wall: float) -> tuple[bytes, bytes] | None:
        if len(data) < OVERHEAD:
            self._count("truncated")
            return None
        _, sender, nonce = _HEAD.unpack_from(data)
        if sender == self._key:
            self._count("bad_seal")
            return None
        if self._admit is not None and not self._admit(sender):
            self._count("not_admitted")
            return None
        if sender not in self._pair_keys and not self._new_sender_budget.take(now=now):
            self._count("new_sender_limited")
            return None
        key = self._pair_key(sender)
        if key is None:
            self._count("bad_key")
            return None
        plain = crypto.xaead_open(key, nonce, data[_HEAD.size:], data[:33] + self._key)
        if plain is None:
            self._count("bad_seal")
            return None
        epoch, sequence, sent_at = _COUNTER.unpack_from(plain)
        if abs(sent_at / 1e6 - wall) > self._max_age:
            self._count("stale")
            return None
        if not self._fresh(sender, epoch, sequence, wall):
            self._count("replayed")
            return None
        self._opened += 1
        return sender, plain[_COUNTER.size:]

    def _fresh(self, sender: bytes, epoch: int, sequence: int, wall: float) -> bool:
        windows = self._windows
        window = windows.get(sender)
        if window is None or epoch > window.epoch or (
                epoch < window.epoch and wall - window.heard > self._max_age):
            # First word from this sender, or its next life (a restart); or a life that
            # began earlier by its clock, once the one we knew has been silent longer than
            # any replay of it could be fresh (its clock was set back): a new window.
            windows[sender] = _Window(sequence, 1, epoch, wall)
            windows.move_to_end(sender)
            if len(windows) > self._max_peers:
                windows.popitem(last=False)
            return True
        windows.move_to_end(sender)
        if epoch < window.epoch:
            return False  # a previous life of the sender, replayed
        window.heard = wall
        if sequence > window.highest:
            shift = sequence - window.highest
            window.highest = sequence
            window.bits = ((window.bits << shift) | 1) & ((1 << WINDOW) - 1) \
                if shift < WINDOW else 1
            return True
        offset = window.highest - sequence
        if offset >= WINDOW or window.bits >> offset & 1:
            return False
        window.bits |= 1 << offset
        return True

    def _on_whois(self, address: str, data: bytes, now: float) -> None:
        if len(data) != _IAM.size:
            self._count("truncated")
            return
        _, asker, challenge = _WHOIS.unpack_from(data)
        if self._admit is not None and not self._admit(asker):
            self._count("not_admitted")
            return
        if not self._iam_budget.take(now=now):
            self._count("iam_limited")
            return
        signature = self._identity.sign(IAM_DOMAIN, challenge + asker)
        self._iam += 1
        self._out.append((address, _IAM.pack(IAM, self._key, challenge, signature)))

    def _on_iam(self, address: str, data: bytes) -> None:
        if len(data) != _IAM.size:
            self._count("truncated")
            return
        _, responder, challenge, signature = _IAM.unpack(data)
        asked = self._asked.get(address)
        if asked is None or asked[0] != challenge:
            self._count("unasked_iam")
            return
        if self._admit is not None and not self._admit(responder):
            self._count("not_admitted")
            return
        if responder == self._key or not crypto.verify(responder, signature, IAM_DOMAIN,
                                                       challenge + self._key):
            self._count("bad_iam")
            return
        self._taught += 1
        self.learn(address, responder)

    # --- accounting --------------------------------------------------------------------

    def _count(self, reason: str) -> None:
        self._rejected[reason] = self._rejected.get(reason, 0) + 1

    def statistics(self) -> SealerStatistics:
        return SealerStatistics(
            sealed=self._sealed, opened=self._opened, whois_sent=self._whois,
            iam_sent=self._iam, keys_learned=self._taught, held_dropped=self._held_dropped,
            rejected=dict(self._rejected))
