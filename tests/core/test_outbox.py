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


def test_a_frame_lower_bands_make_room_for_is_taken_while_its_band_is_refused() -> None:
    # One large frame that did not fit must not leave its band behind lower ones.
    outbox = Outbox(10_000)
    for _ in range(30):
        assert outbox.push(bytes(100), 0) == 0
    for _ in range(60):
        assert outbox.push(bytes(100), 100) == 0  # 9,000 B queued, 3,000 of band 0
    assert outbox.push(bytes(5_000), 100) == 1  # band 0 cannot free enough for it
    assert outbox.push(bytes(100), 100) == 0  # fits, while band 0 stays queued
    assert outbox.size == 9_100
    assert outbox.push(bytes(1_000), 100) == 1  # needs 100 B of band 0: evicts one
    assert outbox._band_bytes == [2_900, 7_100, 0, 0]
    assert outbox.push(bytes(100), 0) == 1  # band 0 itself is still refused


def test_a_small_critical_frame_evicts_bulk_after_a_large_one_did_not_fit() -> None:
    outbox = Outbox(10_000)
    for _ in range(5):
        assert outbox.push(bytes(100), 0) == 0
    for _ in range(95):
        assert outbox.push(bytes(100), 255) == 0  # a paused link: 9,500 B critical
    assert outbox.push(bytes(1_000), 255) == 1  # too large even with all bulk evicted
    assert outbox.push(bytes(100), 255) == 1  # evicts one bulk frame for it
    assert outbox._band_bytes == [400, 0, 0, 9_600]
