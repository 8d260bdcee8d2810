"""Checking batch-signed messages: one Ed25519 verify per batch, and per message only the
part of its proof that no earlier message of the batch has already proven.

A batch's messages hang from one Merkle tree (:func:`somasync.core.wire.build_batch`).
Recomputing a message's root from its proof takes one BLAKE2b per level (six for a batch
of 64, about 5 us in Python, a quarter of all the work a node does per batch-signed
message). But once one message of a batch is proven, every node on its path and every
sibling beside it is proven too: those values hash up to a root whose signature was
checked. The next message of the batch then only hashes up to the first proven node and
compares the rest of its proof with what that node's proof was, byte for byte. Messages
of a batch arriving in order need about one hash each instead of ``depth``.

Why the rest of the proof is compared and not merely ignored: a relay could keep a
message and its lower siblings and garble the upper ones. Stopping at a proven node
without that comparison would accept the garbled copy, and forward it to neighbours that
check the whole proof, refuse it and blame this node.

Every acceptance still means: the message's id and the proof's siblings hash, level by
level, to the root whose signature was verified, at the depth that signature covers. A
proven node is remembered as its hash followed by the proof from its level up; a
message's path matches it only if its computed hash and its own proof from there up are
equal to those bytes, and finding another path to equal bytes is finding a BLAKE2b
second preimage.

Memory is bounded twice: by the number of batches (``max_batches``, each at least its
root) and by the number of proven nodes over all of them (``max_nodes``). A batch
evicted for room is simply verified again (one Ed25519 check) if more of it comes.
"""

from __future__ import annotations

from collections.abc import Callable

from somasync.core import wire

__all__ = ["BatchVerifier"]

_PROOF_OFFSET = wire.SIGNATURE_SIZE + wire.BATCH_HEAD.size
_ID_SIZE = wire.ID_SIZE
_unpack_head = wire.BATCH_HEAD.unpack_from
_parent = wire.parent_hash

RootCheck = Callable[[bytes, bytes, bytes], bool]
"""(origin key, signature, signed bytes) -> whether the signature over the batch's
``BATCH_DOMAIN``-prefixed signed bytes is the origin's."""


class BatchVerifier:
    """Proven batch trees, per origin and root signature (a sans-IO cache: no clock)."""

    def __init__(self, *, max_batches: int = 4096, max_nodes: int = 1 << 17) -> None:
        if max_batches < 1:
            raise ValueError("max_batches must be at least 1")
        if max_nodes < 1:
            raise ValueError("max_nodes must be at least 1")
        self.max_batches = max_batches
        """Batches remembered: a few per origin publishing at full rate."""
        self.max_nodes = max_nodes
        """Proven nodes remembered over all batches; each costs about 100 to 250 bytes
        (its hash, the proof above it and a dict slot), so the default 131,072 is about
        16 to 32 MiB at most."""
        # key (origin || depth || root signature) -> heap index -> node hash || proof
        # above it. The root is index 1; a node at index i has children 2i and 2i + 1,
        # so a leaf of a depth-d tree is (1 << d) | leaf.
        self._batches: dict[bytes, dict[int, bytes]] = {}
        self._nodes = 0
        self.signatures_checked = 0
        """Ed25519 checks made (one per batch, again after an eviction)."""
        self.proven_from_cache = 0
        """Messages proven against a batch whose root signature was already checked."""

    def __len__(self) -> int:
        return len(self._batches)

    @property
    def nodes(self) -> int:
        """Proven nodes held, over all batches."""
        return self._nodes

    def check(self, origin: bytes, message_id: bytes, authenticator: bytes,
              verify_root: RootCheck) -> bool:
        """Whether ``authenticator`` (a batch authenticator as
        :func:`somasync.core.wire.split_signed` cut it, lengths already checked) proves
        ``message_id`` under ``origin``'s signature; ``verify_root`` is called at most
        once, when the batch is new (or was evicted)."""
        depth, index = _unpack_head(authenticator, wire.SIGNATURE_SIZE)
        signature = authenticator[: wire.SIGNATURE_SIZE]
        key = origin + authenticator[wire.SIGNATURE_SIZE : wire.SIGNATURE_SIZE + 1] + signature
        proof = authenticator[_PROOF_OFFSET:]
        position = (1 << depth) | index
        batch = self._batches.get(key)
        if batch is None:
            return self._first(key, depth, position, message_id, proof, signature, origin,
                               verify_root)
        node, position, offset, path = _climb(message_id, position, proof, batch)
        # The root is always held: the walk ends at a proven node.
        if batch[position] != node + proof[offset:]:
            return False
        self.proven_from_cache += 1
        if path:
            self._remember(batch, path, proof)
        return True

    def _first(self, key: bytes, depth: int, position: int, message_id: bytes, proof: bytes,
               signature: bytes, origin: bytes, verify_root: RootCheck) -> bool:
        node, _, _, path = _climb(message_id, position, proof, {})
        self.signatures_checked += 1
        if not verify_root(origin, signature, wire.batch_signed_bytes(depth, node)):
            return False
        batches = self._batches
        if len(batches) >= self.max_batches:
            self._nodes -= len(batches.pop(next(iter(batches))))
        batch = batches[key] = {1: node}
        self._nodes += 1
        self._remember(batch, path, proof)
        return True

    def _remember(self, batch: dict[int, bytes], path: list[tuple[int, bytes, bytes]],
                  proof: bytes) -> None:
        """Record each node of a proven path and its sibling, with the proof above them."""
        before = len(batch)
        offset = 0
        for position, node, sibling in path:
            above = proof[offset + _ID_SIZE :]
            batch[position] = node + sibling + above
            batch[position ^ 1] = sibling + node + above
            offset += _ID_SIZE
        self._nodes += len(batch) - before
        batches = self._batches
        while self._nodes > self.max_nodes and batches:
            # The oldest batches go first, this one last: a later message of an evicted
            # batch costs one Ed25519 check again, nothing else.
            self._nodes -= len(batches.pop(next(iter(batches))))


def _climb(message_id: bytes, position: int, proof: bytes, proven: dict[int, bytes]
           ) -> tuple[bytes, int, int, list[tuple[int, bytes, bytes]]]:
    """Hash from a leaf up to the first position ``proven`` holds, or to the root: the
    node reached, its position, the proof's offset there, and the path below it as
    (position, node, sibling)."""
    node = message_id
    offset = 0
    path: list[tuple[int, bytes, bytes]] = []
    while position > 1 and position not in proven:
        sibling = proof[offset : offset + _ID_SIZE]
        path.append((position, node, sibling))
        node = _parent(sibling, node) if position & 1 else _parent(node, sibling)
        position >>= 1
        offset += _ID_SIZE
    return node, position, offset, path
