"""Message lifetimes in seconds, the original crate's ``ttl`` constants (``Message.ttl``).

A receiver refuses a message older than its ``ttl`` (and, whatever its ``ttl``, older
than ``GossipConfig.max_message_age``, one hour by default: a longer ``ttl`` only counts
where that bound is raised too).
"""

from __future__ import annotations

__all__ = ["IMMEDIATE", "LONG", "MEDIUM", "PERSISTENT", "SHORT"]

IMMEDIATE = 60
"""One minute: status that is useless once stale."""

SHORT = 300
"""Five minutes."""

MEDIUM = 3600
"""One hour, the default of :class:`~somasync.message.Message`."""

LONG = 86_400
"""One day (accepted only where ``GossipConfig.max_message_age`` is raised to match)."""

PERSISTENT = 604_800
"""One week (likewise bounded by ``GossipConfig.max_message_age``)."""
