"""Logging a fact once: the first time it happens, never again per retry or per frame.

A peer that keeps reconnecting after it was refused, or a host that keeps opening
connections past its limit, would otherwise write one line per attempt; the counters
(``get_stats().rejected``, the runtimes' refusals) keep the totals.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable

from somasync.core.budget import TokenBucket

__all__ = ["LogOnce"]


class LogOnce:
    """Logs each ``key`` the first time only, remembering the last ``capacity`` keys (a
    fact forgotten that long ago may be logged again: memory stays bounded whatever
    peers do), and at most ``per_minute`` new facts a minute: peers can make up new keys
    (addresses, names), so past that the facts are counted, and the next line logged
    says how many were left out."""

    def __init__(self, logger: logging.Logger, capacity: int = 4096, *,
                 per_minute: int = 30, clock: Callable[[], float] = time.monotonic) -> None:
        self._logger = logger
        self._seen: OrderedDict[Hashable, None] = OrderedDict()
        self._capacity = capacity
        self._lines = TokenBucket(per_minute / 60.0, per_minute, now=clock())
        self._clock = clock
        self._left_out = 0

    def warning(self, key: Hashable, message: str, *args: object) -> None:
        if key in self._seen:
            self._seen.move_to_end(key)
            return
        self._seen[key] = None
        if len(self._seen) > self._capacity:
            self._seen.popitem(last=False)
        if not self._lines.take(now=self._clock()):
            self._left_out += 1
            return
        if self._left_out:
            message += f" ({self._left_out} more such facts not logged, to bound the log)"
            self._left_out = 0
        self._logger.warning(message, *args)
