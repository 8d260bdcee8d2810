"""Message priorities, the original crate's ``priority`` constants (``Message.priority``).

A link's send queue has four bands of 64 (0-63, 64-127, 128-191, 192-255) and always
sends the highest band first; frames of 192 and up (:data:`HIGH` and :data:`CRITICAL`)
are never held back by a bandwidth limit (``GossipConfig.max_send_rate``) and are the
last a full queue drops. Within a band, frames keep their order. A receiving node handles
them as soon as it reads them, ahead of other messages read before
(``GossipConfig.read_ahead_bytes``), and a publishing node never holds them for a signed
batch (``NodeConfig.signing_batch_size``).
"""

from __future__ import annotations

from somasync.core import inbox

__all__ = ["BACKGROUND", "CRITICAL", "HIGH", "LOW", "NORMAL"]

CRITICAL = 255
"""An alert that must overtake everything else (top band, never shaped)."""

HIGH = inbox.CRITICAL
"""Urgent traffic, the top band's first priority (192): never held back by a bandwidth
limit, never held for a signed batch, handled as soon as a node reads it."""

NORMAL = 128
"""The default of :class:`~somasync.message.Message`."""

LOW = 64
"""Bulk data that may wait behind normal traffic."""

BACKGROUND = 0
"""Sent when nothing else is queued; the first dropped by a full send queue."""
