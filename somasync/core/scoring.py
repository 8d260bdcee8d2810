"""Peer scores: what each neighbour's behaviour earned it, and what it may still do.

Theory of operation
-------------------
Every neighbour (by public key, so a score survives a reconnect) has three decaying
counters, in the spirit of gossipsub v1.1's peer score (its P2, P4 and P7):

* ``useful``: messages it was first to bring (capped, so a long-lived peer cannot bank
  credit to spend on misbehaviour later);
* ``invalid``: frames that prove it broken or hostile (a forged signature, a frame that
  does not decode, a protocol violation that closes the link);
* ``greedy``: protocol violations no honest node makes (GRAFTs naming an id many times,
  frames sent while graylisted) and broken promises (an announced message it did not
  send when GRAFTed). Digests past their budget and announcements past a link's share
  of the missing messages are refused but not scored: an honest node catching up on a
  backlog asks and announces that much.

``score = USEFUL_WEIGHT * min(useful, USEFUL_CAP) - INVALID_WEIGHT * invalid**2 -
GREEDY_WEIGHT * greedy**2``. Squares, as in gossipsub, so that an occasional slip costs
little and a habit costs a lot. Three thresholds act on it, each stricter than the last:

* below :attr:`ScoreThresholds.gossip` the peer's announcements are ignored (it cannot
  make this node GRAFT);
* below :attr:`ScoreThresholds.graylist` every frame it sends is dropped unread (no
  decode, no verify: its bytes cost nothing but the read);
* below :attr:`ScoreThresholds.disconnect` its link is closed, which itself counts as
  an invalid frame, and a new link is refused until the score has decayed back above
  the graylist threshold (about seven minutes after nine violations), so a peer comes
  back only once it would be heard.

Counters decay exponentially (``useful`` in about a minute, the penalties over about
ten: a peer that stops misbehaving is readmitted by itself); a peer's score is kept for
:data:`RETAIN` seconds after its link closes, and at most :data:`MAX_PEERS` scores are
kept (the least recently touched forgotten first). Pure logic: time is the caller's.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

__all__ = ["GREEDY_WEIGHT", "INVALID_WEIGHT", "PeerScores", "ScoreThresholds"]

USEFUL_WEIGHT = 0.1
USEFUL_CAP = 100.0
"""At most +10: enough to forgive a slip, never a habit."""
USEFUL_DECAY = 0.98
"""Per second: half-life about 34 s."""
INVALID_WEIGHT = 10.0
"""One invalid frame puts a peer at -10 (ignored for gossip), two at -40 (graylisted),
three at -90 (disconnected)."""
GREEDY_WEIGHT = 1.0
"""Four violations: -16 (ignored for gossip); seven: -49 (graylisted); nine: -81
(disconnected)."""
PENALTY_DECAY = 0.999
"""Per second: half-life about 11.5 minutes, so three invalid frames keep a peer out for
about a minute, and a steady offender stays out."""
BROKEN_PROMISE = 0.25
"""A GRAFT left unanswered counts a quarter of a violation: a congested honest link may
miss one now and then."""
RETAIN = 3600.0
MAX_PEERS = 4096


DISCONNECT_THRESHOLD = -80.0


@dataclass(frozen=True, slots=True)
class ScoreThresholds:
    """Where a peer's score starts to cost it (each a negative score)."""

    gossip: float = -10.0
    """Below: its IHAVE announcements are ignored."""
    graylist: float = -40.0
    """Below: every frame it sends is dropped before decoding."""
    disconnect: float = DISCONNECT_THRESHOLD
    """Below: its link is closed; reconnections are refused until the score is back
    above ``graylist``."""


class _Score:
    __slots__ = ("greedy", "invalid", "updated", "useful")

    def __init__(self, now: float) -> None:
        self.useful = 0.0
        self.invalid = 0.0
        self.greedy = 0.0
        self.updated = now

    def decay(self, now: float) -> None:
        elapsed = now - self.updated
        if elapsed > 0:
            self.useful *= USEFUL_DECAY ** elapsed
            penalty = PENALTY_DECAY ** elapsed
            self.invalid *= penalty
            self.greedy *= penalty
            self.updated = now

    @property
    def value(self) -> float:
        return (USEFUL_WEIGHT * min(self.useful, USEFUL_CAP)
                - INVALID_WEIGHT * self.invalid ** 2 - GREEDY_WEIGHT * self.greedy ** 2)


class PeerScores:
    """The scores of the peers this node has met, by public key."""

    __slots__ = ("_scores", "thresholds")

    def __init__(self, thresholds: ScoreThresholds | None = None) -> None:
        self.thresholds = thresholds or ScoreThresholds()
        self._scores: OrderedDict[bytes, _Score] = OrderedDict()

    def _get(self, key: bytes, now: float) -> _Score:
        score = self._scores.get(key)
        if score is None:
            score = self._scores[key] = _Score(now)
            if len(self._scores) > MAX_PEERS:
                self._scores.popitem(last=False)
        else:
            self._scores.move_to_end(key)
            score.decay(now)
        return score

    def score(self, key: bytes, *, now: float) -> float:
        """The peer's score now (0 for a peer never met)."""
        score = self._scores.get(key)
        if score is None:
            return 0.0
        score.decay(now)
        return score.value

    def useful(self, key: bytes, *, now: float, count: int = 1) -> None:
        """The peer brought ``count`` messages first."""
        self._get(key, now).useful += count

    def invalid(self, key: bytes, *, now: float) -> float:
        """The peer sent a frame that proves it broken or hostile; returns the score."""
        score = self._get(key, now)
        score.invalid += 1.0
        return score.value

    def greedy(self, key: bytes, *, now: float, amount: float = 1.0) -> float:
        """The peer broke a budget (or, with ``amount`` :data:`BROKEN_PROMISE`, a
        promise); returns the score."""
        score = self._get(key, now)
        score.greedy += amount
        return score.value

    def condemn(self, key: bytes, *, now: float) -> None:
        """Another part of the node disconnected the peer for its score (a sharded
        node's other worker): hold at least as much against it here."""
        score = self._get(key, now)
        while score.value >= self.thresholds.disconnect:
            score.invalid += 1.0

    def forget_idle(self, connected: set[bytes], *, now: float) -> None:
        """Drop the scores of peers gone for :data:`RETAIN` seconds."""
        for key in [k for k, s in self._scores.items()
                    if k not in connected and now - s.updated > RETAIN]:
            del self._scores[key]

    def __len__(self) -> int:
        return len(self._scores)
