"""LogOnce: each fact once, and a bounded number of new facts a minute."""

from __future__ import annotations

import logging

import pytest

from somasync.aio.once import LogOnce


def test_each_fact_once_and_a_flood_of_new_ones_bounded(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="test.once")
    now = [0.0]
    log = LogOnce(logging.getLogger("test.once"), per_minute=5, clock=lambda: now[0])
    for _ in range(3):
        log.warning(("x", "a"), "fact %s", "a")
    assert len(caplog.records) == 1  # once per fact
    for i in range(100):  # a peer making up new names: 100 new facts at once
        log.warning(("x", i), "fact %s", i)
    assert len(caplog.records) == 5
    now[0] += 60.0
    log.warning(("x", "later"), "fact %s", "later")
    assert "96 more such facts not logged" in caplog.records[-1].getMessage()
