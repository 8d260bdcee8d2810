"""Anti-entropy: which sequence numbers of each stream a node has, and the catch-up store.

A stream is one origin's run of messages ``(origin key, source)``; its sequence numbers
count up by one. Each node keeps, per stream, the closed intervals of sequence numbers it
has delivered (:class:`SequenceTracker`) and a bounded store of recent messages
(:class:`MessageStore`). Neighbours exchange their intervals (a DIGEST); each side then
sends the stored messages the other lacks, so a node that was disconnected, restarted or
partitioned catches up without re-sending what it already has.

Holes that no neighbour can fill (a message never sent, or expired everywhere) are given
up after ``gap_timeout`` so that digests stay short and nobody asks forever; so are the
oldest holes of a stream with more than :data:`MAX_INTERVALS` runs. A hole listed as
held by a neighbour that says it defers its repairs to us (a rate-limited neighbour,
whose queue may take longer than ``gap_timeout`` to drain: ``FLAG_DEFERRED``) is kept
``gap_timeout`` from that digest instead, though never past :data:`HOLD_GAP_TIMEOUTS`
gap timeouts after it opened: a digest lists given-up holes as held too, and that
neighbour may have given this one up itself. A hole given up is claimed in digests
(nobody is asked for it again) but is *not* treated as delivered: a copy that still
arrives by gossip is delivered, never mistaken for a duplicate.
"""

from __future__ import annotations

import bisect
import heapq
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping, Sequence

from somasync.core import wire
from somasync.core.wire import Envelope, StreamKey

__all__ = ["HOLD_GAP_TIMEOUTS", "MessageStore", "SequenceTracker", "StreamTable",
           "count_lacking", "covers"]

#: Most intervals (runs with holes between them) tracked per stream; more give the
#: oldest hole up. As many as one digest can carry per stream, so that a digest always
#: describes every hole: a burst reordered by priority opens hundreds at once.
MAX_INTERVALS = wire.MAX_INTERVALS_PER_STREAM

#: Given-up holes remembered per stream so their late copies still count as new; past
#: this the oldest is forgotten (its sequence numbers then read as delivered).
MAX_GIVEN_UP = 256

#: A hole a deferring neighbour keeps listing as held is given up at the latest this many
#: ``gap_timeout`` after it opened (and not past ``max_message_age``): an overload of a
#: rate-limited link up to about this long is repaired, while a hole nobody can fill,
#: listed because that neighbour gave it up too, is asked for no longer than this.
HOLD_GAP_TIMEOUTS = 20


class SequenceTracker:
    """The set of delivered sequence numbers of one stream, as sorted closed intervals."""

    __slots__ = ("_gap_heard", "_gap_opened", "_given_his", "_given_los", "_his", "_los",
                 "forgotten", "given_up")

    def __init__(self) -> None:
        self._los: list[int] = []
        self._his: list[int] = []
        # _gap_opened[i]: when the hole between interval i and i + 1 was first seen.
        self._gap_opened: list[float] = []
        # _gap_heard[i]: when that hole opened or a neighbour's digest last listed some of
        # it as held, whichever is later (see heard).
        self._gap_heard: list[float] = []
        # Holes merged into the intervals without being delivered, as sorted disjoint
        # closed ranges: claimed in digests, still open to a late copy.
        self._given_los: list[int] = []
        self._given_his: list[int] = []
        self.given_up = 0
        """Holes given up so far (timed out, or beyond :data:`MAX_INTERVALS`)."""
        self.forgotten = 0
        """Given-up holes dropped from memory (beyond :data:`MAX_GIVEN_UP`): late copies
        of their sequence numbers are taken for duplicates."""

    def __contains__(self, sequence: int) -> bool:
        """True when ``sequence`` was delivered (a given-up hole was not)."""
        i = bisect.bisect_right(self._los, sequence) - 1
        return i >= 0 and sequence <= self._his[i] and self._given_up_at(sequence) < 0

    def _given_up_at(self, sequence: int) -> int:
        if not self._given_los:
            return -1
        i = bisect.bisect_right(self._given_los, sequence) - 1
        return i if i >= 0 and sequence <= self._given_his[i] else -1

    def intervals(self) -> list[tuple[int, int]]:
        return list(zip(self._los, self._his, strict=True))

    def add(self, sequence: int, *, now: float) -> bool:
        """Record ``sequence``; False when it was already recorded."""
        los, his, gaps, heard = self._los, self._his, self._gap_opened, self._gap_heard
        if his and sequence == his[-1] + 1:
            his[-1] = sequence  # the usual case: the next of an in-order stream
            return True
        i = bisect.bisect_right(los, sequence) - 1
        if i >= 0 and sequence <= his[i]:
            return self._fill_given_up(sequence)
        joins_left = i >= 0 and his[i] + 1 == sequence
        joins_right = i + 1 < len(los) and los[i + 1] - 1 == sequence
        if joins_left and joins_right:
            his[i] = his[i + 1]
            del los[i + 1], his[i + 1], gaps[i], heard[i]
        elif joins_left:
            his[i] = sequence
        elif joins_right:
            los[i + 1] = sequence
        else:
            # A new interval inside an existing hole splits it in two (both keep the
            # hole's age); past either end it opens a new hole now.
            inside_hole = 0 <= i < len(gaps)
            los.insert(i + 1, sequence)
            his.insert(i + 1, sequence)
            if inside_hole:
                gaps.insert(i + 1, gaps[i])
                heard.insert(i + 1, heard[i])
            elif len(los) > 1:
                gaps.insert(i + 1 if i >= 0 else 0, now)
                heard.insert(i + 1 if i >= 0 else 0, now)
            if len(los) > MAX_INTERVALS:
                self._merge(0)
        return True

    @property
    def has_gaps(self) -> bool:
        return bool(self._gap_opened)

    def fill(self, lo: int, hi: int) -> None:
        """Record all of ``lo..hi`` when both ends are recorded already: the intervals
        between them merge into one (any hole inside is delivered, not given up)."""
        los, his, gaps, heard = self._los, self._his, self._gap_opened, self._gap_heard
        first = bisect.bisect_right(los, lo) - 1
        last = bisect.bisect_right(los, hi) - 1
        if first < 0 or not los[first] <= lo <= his[first] or hi > his[last]:
            raise ValueError("fill needs both ends recorded")
        if last > first:
            his[first] = his[last]
            del los[first + 1:last + 1], his[first + 1:last + 1], gaps[first:last]
            del heard[first:last]

    def heard(self, held: Sequence[tuple[int, int]], *, now: float) -> int:
        """A neighbour's digest lists ``held`` (sorted, disjoint closed intervals) as held:
        the holes it overlaps count as heard of now. Returns the work done: intervals and
        holes looked at."""
        los, his, heard = self._los, self._his, self._gap_heard
        holes = len(heard)
        if 4 * len(held) >= holes:
            # About as many intervals as holes: one pass over both.
            j = 0
            for i in range(holes):
                while j < len(held) and held[j][1] <= his[i]:
                    j += 1
                if j == len(held):
                    return i + 1 + j
                if held[j][0] < los[i + 1]:
                    heard[i] = now
            return holes + min(j + 1, len(held))
        # Few intervals (a digest listing one run of what its sender holds) against many
        # holes: each finds the holes it overlaps by bisection, and marks them at once.
        work = 0
        for lo, hi in held:
            # Hole i is his[i] + 1 .. los[i + 1] - 1: lo..hi overlaps it when
            # los[i + 1] > lo and his[i] < hi.
            first = max(0, bisect.bisect_right(los, lo) - 1)
            end = min(bisect.bisect_left(his, hi), holes)
            work += 1 + max(0, end - first)
            if first < end:
                heard[first:end] = [now] * (end - first)
        return work

    def expire_gaps(self, *, now: float, gap_timeout: float,
                    hold_limit: float | None = None) -> int:
        """Give up holes nobody was heard to hold for ``gap_timeout``, and any hole open
        for ``hold_limit`` (default: ``gap_timeout``); returns how many were closed."""
        if hold_limit is None:
            hold_limit = gap_timeout
        closed = 0
        i = 0
        while i < len(self._gap_opened):
            if now - self._gap_heard[i] >= gap_timeout \
                    or now - self._gap_opened[i] >= hold_limit:
                self._merge(i)
                closed += 1
            else:
                i += 1
        return closed

    def _merge(self, i: int) -> None:
        """Give up the hole between intervals ``i`` and ``i + 1``."""
        lo, hi = self._his[i] + 1, self._los[i + 1] - 1
        self._his[i] = self._his[i + 1]
        del self._los[i + 1], self._his[i + 1], self._gap_opened[i], self._gap_heard[i]
        self.given_up += 1
        at = bisect.bisect_left(self._given_los, lo)
        self._given_los.insert(at, lo)
        self._given_his.insert(at, hi)
        if len(self._given_los) > MAX_GIVEN_UP:
            del self._given_los[0], self._given_his[0]
            self.forgotten += 1

    def _fill_given_up(self, sequence: int) -> bool:
        """A late copy of a sequence number inside a given-up hole: now delivered."""
        i = self._given_up_at(sequence)
        if i < 0:
            return False
        lo, hi = self._given_los[i], self._given_his[i]
        los = ([lo] if lo < sequence else []) + ([sequence + 1] if sequence < hi else [])
        his = ([sequence - 1] if lo < sequence else []) + ([hi] if sequence < hi else [])
        self._given_los[i:i + 1] = los
        self._given_his[i:i + 1] = his
        return True


def covers(intervals: Sequence[tuple[int, int]], sequence: int) -> bool:
    """True when ``sequence`` lies in one of the sorted closed ``intervals``."""
    i = bisect.bisect_right(intervals, (sequence, 0xFFFFFFFFFFFFFFFF)) - 1
    return i >= 0 and sequence <= intervals[i][1]


def count_lacking(mine: Sequence[tuple[int, int]], theirs: Iterable[tuple[int, int]],
                  cap: int) -> int:
    """How many sequence numbers in ``theirs`` are outside ``mine`` (both sorted and
    disjoint), counted up to ``cap``: the work is bounded by the intervals, not by
    how many numbers they span."""
    lacking = 0
    for lo, hi in theirs:
        i = max(0, bisect.bisect_right(mine, (lo, 0xFFFFFFFFFFFFFFFF)) - 1)
        cursor = lo
        while cursor <= hi and i < len(mine):
            have_lo, have_hi = mine[i]
            if have_hi < cursor:
                i += 1
                continue
            if have_lo > hi:
                break
            lacking += max(0, have_lo - cursor)
            cursor = have_hi + 1
            i += 1
        if cursor <= hi:
            lacking += hi - cursor + 1
        if lacking >= cap:
            return cap
    return lacking


class StreamTable:
    """A bounded map of stream -> tracker, dropping the least recently active first."""

    __slots__ = ("_gapped", "_trackers", "capacity", "dropped", "scanned")

    def __init__(self, capacity: int) -> None:
        self._trackers: OrderedDict[StreamKey, SequenceTracker] = OrderedDict()
        # Streams with holes: the periodic sweep visits only these (most streams have
        # none, and a node may track thousands).
        self._gapped: dict[StreamKey, None] = {}
        self.capacity = capacity
        self.dropped = 0
        self.scanned = 0
        """Holes and listed intervals :meth:`heard` looked at, since creation."""

    def __len__(self) -> int:
        return len(self._trackers)

    def get(self, stream: StreamKey) -> SequenceTracker | None:
        return self._trackers.get(stream)

    def has(self, stream: StreamKey, sequence: int) -> bool:
        tracker = self._trackers.get(stream)
        if tracker is None:
            return False
        # Asked once per message received, and a live stream's next message lies past
        # everything recorded: answered without a search.
        his = tracker._his
        return bool(his) and sequence <= his[-1] and sequence in tracker

    def add(self, stream: StreamKey, sequence: int, *, now: float) -> bool:
        trackers = self._trackers
        tracker = trackers.get(stream)
        if tracker is None:
            tracker = trackers[stream] = SequenceTracker()
            if len(trackers) > self.capacity:
                dropped, _ = trackers.popitem(last=False)
                self._gapped.pop(dropped, None)
                self.dropped += 1
        else:
            trackers.move_to_end(stream)
        added = tracker.add(sequence, now=now)
        if tracker._gap_opened:  # has_gaps, without a property call per message
            self._gapped[stream] = None
        return added

    def items(self) -> list[tuple[StreamKey, SequenceTracker]]:
        return list(self._trackers.items())

    def restore(self, stream: StreamKey, intervals: Sequence[tuple[int, int]], *,
                now: float) -> None:
        """Record every sequence number of the sorted, disjoint closed ``intervals`` as
        delivered (what a restarted shard learns its node already delivered); holes
        between them open now, as if just seen."""
        for lo, hi in intervals:
            for sequence in (lo, hi):
                self.add(stream, sequence, now=now)
            tracker = self._trackers[stream]
            tracker.fill(lo, hi)

    def heard(self, held: Mapping[StreamKey, Sequence[tuple[int, int]]], *,
              now: float) -> int:
        """A neighbour's digest lists ``held``: see :meth:`SequenceTracker.heard`. Returns
        how many holes and intervals that looked at (also added to ``scanned``)."""
        gapped, trackers = self._gapped, self._trackers
        scanned = 0
        for stream, intervals in held.items():
            if intervals and stream in gapped:
                tracker = trackers.get(stream)
                if tracker is not None:
                    scanned += tracker.heard(intervals, now=now)
        self.scanned += scanned
        return scanned

    def expire_gaps(self, *, now: float, gap_timeout: float,
                    hold_limit: float | None = None) -> int:
        closed = 0
        for stream in list(self._gapped):
            tracker = self._trackers.get(stream)
            if tracker is not None:
                closed += tracker.expire_gaps(now=now, gap_timeout=gap_timeout,
                                              hold_limit=hold_limit)
            if tracker is None or not tracker.has_gaps:
                del self._gapped[stream]
        return closed


class _Stored:
    """One stored message (``python -m somasync.bench memory`` measures its cost)."""

    __slots__ = ("expires_at", "frame", "message_id", "priority", "sequence", "stored_at",
                 "stream")

    def __init__(self, message_id: bytes, frame: bytes, priority: int, stream: StreamKey,
                 sequence: int, expires_at: float, stored_at: float) -> None:
        self.message_id = message_id
        self.frame = frame
        """The message as a repair frame (FLAG_REPAIR, hops as it reached this node),
        ready to send: the decoded envelope costs about three times the memory."""
        self.priority = priority
        self.stream = stream
        self.sequence = sequence
        self.expires_at = expires_at
        self.stored_at = stored_at


class _StreamEntries:
    """The stored sequence numbers of one stream, sorted, so that the messages a digest
    lacks are found by walking its gaps rather than the store.

    ``sequences[head:]`` are live: eviction takes the oldest message, which is almost
    always the stream's lowest sequence number, so it advances ``head`` in O(1) and the
    list is compacted only once its dead front outweighs the rest.
    """

    __slots__ = ("by_sequence", "head", "sequences")

    def __init__(self) -> None:
        self.sequences: list[int] = []
        self.head = 0
        self.by_sequence: dict[int, _Stored] = {}

    def add(self, stored: _Stored) -> None:
        sequences, sequence = self.sequences, stored.sequence
        self.by_sequence[sequence] = stored
        if len(sequences) == self.head or sequence > sequences[-1]:
            sequences.append(sequence)
        else:
            # Out of order (a burst reordered by priority, a repair): O(n) memmove in C.
            bisect.insort(sequences, sequence, lo=self.head)

    def remove(self, sequence: int) -> None:
        if self.by_sequence.pop(sequence, None) is None:
            return
        sequences, head = self.sequences, self.head
        if sequences[head] == sequence:
            head += 1
            if head > 32 and 2 * head > len(sequences):
                del sequences[:head]
                head = 0
            self.head = head
        else:
            del sequences[bisect.bisect_left(sequences, sequence, head)]

    def __bool__(self) -> bool:
        return bool(self.by_sequence)


ORIGIN_SHARE = 4
"""An origin key holding more than ``capacity / ORIGIN_SHARE`` of a full store is
evicted from first (the lowest sequence number of the stream it adds to), so one origin,
under as many source names as it likes, cannot flush the others."""


class MessageStore:
    """The recent messages a node can hand to a neighbour that missed them.

    Bounded by count (oldest first) and by age in the store; expired messages (origin
    timestamp + TTL in the past) are dropped too, and never handed out. Messages are kept
    as ready-to-send frames; ``(frame, priority)`` pairs come out.

    Every operation costs in proportion to the work it does, never to the history the
    store holds: answering a digest walks the *gaps* in the asker's intervals (a bisect
    each) and touches only stored messages inside them; age eviction pops from the front;
    TTL expiry pops a heap that holds only the messages whose TTL ends before their age
    does. ``scanned`` counts what answering digests touched, so the bound is checkable.
    """

    __slots__ = ("_by_id", "_by_stream", "_per_origin", "_ttl_heap", "capacity", "max_age",
                 "scanned")

    def __init__(self, capacity: int, max_age: float) -> None:
        # Store order, oldest first: count and age eviction pop from the front in O(1)
        # (a plain dict would leave holes there that every later pop walks over).
        self._by_id: OrderedDict[bytes, _Stored] = OrderedDict()
        self._by_stream: dict[StreamKey, _StreamEntries] = {}
        self._per_origin: dict[bytes, int] = {}  # origin key -> messages stored
        # (expires at, id) of messages whose TTL ends before max_age would evict them;
        # stale entries (evicted meanwhile) are skipped when popped, and the heap is
        # rebuilt whenever they outnumber the live ones, so it stays O(store).
        self._ttl_heap: list[tuple[float, bytes]] = []
        self.capacity = capacity
        self.max_age = max_age
        self.scanned = 0
        """Gaps and stored messages examined while answering digests, since creation."""

    def __len__(self) -> int:
        return len(self._by_id)

    def __contains__(self, message_id: bytes) -> bool:
        return message_id in self._by_id

    @property
    def streams(self) -> int:
        """Streams with at least one stored message."""
        return len(self._by_stream)

    def add(self, envelope: Envelope, *, now: float, wall_now: float, hops: int = 0) -> None:
        """Keep ``envelope``; ``hops``: what a neighbour would see in this node's copy;
        ``wall_now``: the wall clock, to tell whether its TTL ends before ``max_age``
        evicts it."""
        # Once per accepted message: each field is read once, into a local.
        message_id = envelope.id
        by_id = self._by_id
        if self.capacity == 0 or message_id in by_id:
            return
        stream = envelope.stream
        sequence = envelope.sequence
        entries = self._by_stream.get(stream)
        if entries is None:
            entries = self._by_stream[stream] = _StreamEntries()
        elif sequence in entries.by_sequence:
            return  # another message under a sequence number already held: keep the first
        expires_at = envelope.expires_at
        priority = envelope.priority
        stored = _Stored(message_id,
                         wire.encode_message_frame(envelope, hops=min(hops, 255), repair=True),
                         priority, stream, sequence, expires_at, now)
        by_id[message_id] = stored
        entries.add(stored)
        origin = stream[0]
        per_origin = self._per_origin
        per_origin[origin] = per_origin.get(origin, 0) + 1
        horizon = wall_now + self.max_age
        if expires_at < horizon:
            heap = self._ttl_heap
            heapq.heappush(heap, (expires_at, message_id))
            if len(heap) > 2 * len(by_id) + 64:
                self._ttl_heap = [(s.expires_at, mid) for mid, s in by_id.items()
                                  if s.expires_at < horizon]
                heapq.heapify(self._ttl_heap)
        if len(by_id) > self.capacity:
            if per_origin[origin] > self.capacity // ORIGIN_SHARE:
                # An origin with its share of a full store makes room from its own:
                # however fast it publishes, it cannot flush the others' messages.
                oldest = entries.by_sequence[entries.sequences[entries.head]]
                del self._by_id[oldest.message_id]
                self._forget(oldest)
            while len(self._by_id) > self.capacity:
                self._pop_oldest()

    def get(self, message_id: bytes) -> tuple[bytes, int] | None:
        """The stored message with this id as ``(repair frame, priority)``, if held."""
        stored = self._by_id.get(message_id)
        return None if stored is None else (stored.frame, stored.priority)

    def _pop_oldest(self) -> None:
        _, stored = self._by_id.popitem(last=False)
        self._forget(stored)

    def _forget(self, stored: _Stored) -> None:
        origin = stored.stream[0]
        count = self._per_origin.get(origin, 0)
        if count > 1:
            self._per_origin[origin] = count - 1
        else:
            self._per_origin.pop(origin, None)
        entries = self._by_stream.get(stored.stream)
        if entries is not None:
            entries.remove(stored.sequence)
            if not entries:
                del self._by_stream[stored.stream]

    def expire(self, *, now: float, wall_now: float) -> None:
        """Drop messages held longer than ``max_age`` or past their TTL."""
        by_id = self._by_id
        while by_id:
            oldest = next(iter(by_id.values()))
            if now - oldest.stored_at < self.max_age:
                break
            self._pop_oldest()
        heap = self._ttl_heap
        while heap and heap[0][0] < wall_now:
            _, message_id = heapq.heappop(heap)
            stored = by_id.pop(message_id, None)
            if stored is not None:
                self._forget(stored)

    def missing_for(self, theirs: Mapping[StreamKey, Sequence[tuple[int, int]]], *,
                    complete: bool, limit: int, wall_now: float) -> list[tuple[bytes, int]]:
        """Stored messages outside ``theirs``, oldest sequence first per stream, as
        ``(repair frame, priority)``.

        ``theirs`` maps streams to sorted, disjoint closed intervals (the decoder refuses
        anything else). ``complete`` says the digest lists every stream its sender
        knows, so a stream it does not mention is one it has nothing of.
        """
        found: list[tuple[bytes, int]] = []
        by_stream = self._by_stream
        if complete:
            streams: Iterable[StreamKey] = list(by_stream)
        else:
            streams = [stream for stream in theirs if stream in by_stream]
        for stream in streams:
            entries = by_stream[stream]
            intervals = theirs.get(stream, ())
            if not self._collect(entries, intervals, found, limit, wall_now):
                break
        return found

    def _collect(self, entries: _StreamEntries, intervals: Sequence[tuple[int, int]],
                 found: list[tuple[bytes, int]], limit: int, wall_now: float) -> bool:
        """Append the stored messages of one stream that lie in the gaps of
        ``intervals``; False once ``found`` holds ``limit``."""
        sequences, by_sequence = entries.sequences, entries.by_sequence
        for gap_lo, gap_hi in self._gaps(intervals, sequences[entries.head], sequences[-1]):
            i = bisect.bisect_left(sequences, gap_lo, entries.head)
            while i < len(sequences) and sequences[i] <= gap_hi:
                stored = by_sequence[sequences[i]]
                self.scanned += 1
                i += 1
                if stored.expires_at >= wall_now:
                    found.append((stored.frame, stored.priority))
                    if len(found) >= limit:
                        return False
        return True

    def _gaps(self, intervals: Sequence[tuple[int, int]], first: int,
              last: int) -> Iterator[tuple[int, int]]:
        """The ranges of ``[first, last]`` (the stored sequence numbers' span) outside the
        sorted, disjoint ``intervals``; each interval looked at counts as scanned."""
        gap_lo = first
        for lo, hi in intervals:
            self.scanned += 1
            if hi < gap_lo:
                continue
            if lo > gap_lo:
                yield gap_lo, min(lo - 1, last)
            gap_lo = hi + 1
            if gap_lo > last:
                return
        yield gap_lo, last
