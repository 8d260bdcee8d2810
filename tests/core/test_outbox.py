"""Outbox: a peer's bounded send queue under a steady overload."""

from __future__ import annotations

from somasync.core.outbox import REFILL, Outbox


def test_a_steady_overload_drops_runs_of_frames_and_keeps_the_link_busy() -> None:
    # Two frames offered for each one the link takes: half must go, and a queue that
    # takes a frame whenever one frame's room frees drops every other one, a hole per
    # two messages at the peer. In runs the peer has few holes, each one long.
    frame = bytes(100)
    outbox = Outbox(100 * 100)
    dropped = []
    for turn in range(2000):
        dropped.extend(outbox.push(frame, 128) == 1 for _ in range(2))
        if turn >= 100:
            _, frames = outbox.drain(len(frame))
            assert frames == 1  # never empty: the link takes a frame every turn
    runs = sum(1 for before, now in zip([False, *dropped], dropped, strict=False)
               if now and not before)
    assert sum(dropped) >= 1800
    assert runs <= sum(dropped) // (100 // REFILL)


def test_a_higher_band_still_gets_in_while_a_lower_one_is_refused() -> None:
    outbox = Outbox(1000)
    for _ in range(10):
        assert outbox.push(bytes(100), 0) == 0
    assert outbox.push(bytes(100), 0) == 1  # full: band 0 refused from now on
    outbox.drain(100)
    assert outbox.push(bytes(100), 0) == 1  # room for one, but not down to the low mark
    assert outbox.push(bytes(100), 200) == 0  # critical: never refused for the run
    outbox.drain(300)
    assert outbox.push(bytes(100), 0) == 0  # drained to the low mark: taken again
