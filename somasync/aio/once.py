"""Logging a fact once: the first time it happens, never again per retry or per frame.

A peer that keeps reconnecting after it was refused, or a host that keeps opening
connections past its limit, would otherwise write one line per attempt; the counters
(``get_stats().rejected``, the runtimes' refusals) keep the totals.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Hashable

__all__ = ["LogOnce"]


class LogOnce:
    """Logs each ``key`` the first time only, remembering the last ``capacity`` keys (a
    fact forgotten that long ago may be logged again: memory stays bounded whatever
    peers do)."""

    def __init__(self, logger: logging.Logger, capacity: int = 4096) -> None:
        self._logger = logger
        self._seen: OrderedDict[Hashable, None] = OrderedDict()
        self._capacity = capacity

    def warning(self, key: Hashable, message: str, *args: object) -> None:
        if key in self._seen:
            self._seen.move_to_end(key)
            return
        self._seen[key] = None
        if len(self._seen) > self._capacity:
            self._seen.popitem(last=False)
        self._logger.warning(message, *args)
