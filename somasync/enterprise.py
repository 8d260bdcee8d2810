"""``EnterpriseGossipConfig``: the original crate's enterprise presets, on real settings.

The original kept its enterprise settings in fields nothing read (its adaptive fanout,
priority queue, bandwidth limiter and reputation table were allocated and never used).
Here every method of :class:`EnterpriseGossipConfig` changes settings the node runs on:
the :class:`~somasync.config.GossipConfig` it holds (``base``) and, for the derived
degree, ``OverlayConfig.active_size``. Two methods change nothing because what they
asked for is always on; their docstrings say where it lives::

    config = (EnterpriseGossipConfig.for_threat_intel()
              .with_adaptive_fanout(10, 50)          # degree bounds, see below
              .with_bandwidth_limit(100_000_000))    # GossipConfig.max_send_rate
    node, messages, events = (SynapseNodeBuilder().with_enterprise_config(config)
                              .build())

What maps to what:

==============================  =========================================================
original                        here
==============================  =========================================================
``with_adaptive_fanout``        adaptive fanout on (``NodeConfig.adaptive``): overlay
                                degree, push fanout and IHAVE fanout follow the node's
                                estimate of the mesh's size within these bounds, and
                                anti-entropy is paced by it; ``expected_nodes`` gives
                                the starting values (``GossipConfig.fanout``,
                                ``OverlayConfig.active_size``)
``with_epidemic_tuning(p)``     the target delivery probability of that derivation
``with_bandwidth_limit(b)``     ``GossipConfig.max_send_rate`` (``per_link``:
                                ``max_link_send_rate``); shapes, never drops
``with_batch_size(n)``          ``GossipConfig.anti_entropy_batch``; live frames are
                                always coalesced per link write
``with_priority_routing()``     always on: four priority bands per link queue
``with_smart_routing()``        always on: peer scores (:mod:`somasync.core.scoring`)
==============================  =========================================================
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from somasync.config import (
    ADAPTIVE_MAX_DEGREE,
    AdaptiveConfig,
    GossipConfig,
    NodeConfig,
    OverlayConfig,
    require,
    require_int,
)
from somasync.core.sizing import epidemic_fanout
from somasync.errors import ConfigError

__all__ = ["MAX_DEGREE", "EnterpriseGossipConfig", "epidemic_degree"]

MAX_DEGREE = ADAPTIVE_MAX_DEGREE
"""The largest degree a configuration may ask for (the original's ``max_fanout`` bound)."""

ADAPTIVE_PACING_CAP = 10.0
"""Longest anti-entropy interval the adaptive pacing of an enterprise configuration
chooses (seconds; the base's interval when that is longer), and at most a third of the
base's ``gap_timeout``, so a hole is still asked for in three rounds before it is given
up."""

DEFAULT_DELIVERY_PROBABILITY = 0.95
"""The original's ``target_delivery_probability`` default."""


def epidemic_degree(network_size: int, probability: float) -> int:
    """The fanout at which push gossip reaches all ``network_size`` nodes with
    ``probability``: ``ceil(ln N + c)`` with ``c = -ln(-ln p)``.

    Kermarrec, Massoulie and Ganesh (2003): with fanout ``ln N + c`` the probability that
    every node receives a message tends to ``exp(-exp(-c))``. For 1,000 nodes that is 10
    at p = 0.95 and 14 at p = 0.999.
    """
    require_int(network_size, "expected_nodes")
    require(0 < probability < 1, "target_delivery_probability",
            f"must be in (0, 1), got {probability!r}")
    return epidemic_fanout(network_size, probability)


@dataclass(frozen=True, kw_only=True)
class EnterpriseGossipConfig:
    """Gossip settings for large or critical meshes, built with the original's methods.

    Every ``with_*`` method returns a new, validated copy. Apply one to a node with
    ``SynapseNodeBuilder.with_enterprise_config``, to a protocol object with
    ``GossipProtocol.new_enterprise``, or read the result with :meth:`to_gossip_config`
    and :meth:`to_overlay_config`.
    """

    base: GossipConfig = field(default_factory=GossipConfig)
    """The gossip settings every method edits (the original's ``base``). Bandwidth limits
    and batch size are written straight into it."""

    fanout_bounds: tuple[int, int] | None = None
    """``(minimum, maximum)`` of the derived degrees (:meth:`with_adaptive_fanout`): the
    overlay degree, push fanout and IHAVE fanout of adaptive fanout; None with
    ``target_delivery_probability`` None too: adaptive fanout stays off, and the base's
    fanout and the node's overlay are used as they are."""

    target_delivery_probability: float | None = None
    """The probability that a message reaches every one of ``expected_nodes`` by push
    alone, which the degree is derived from (:meth:`with_epidemic_tuning`); None uses
    0.95 (the original's default) once ``fanout_bounds`` asks for a derived degree."""

    expected_nodes: int = 1000
    """How many nodes the mesh is expected to have: the ``N`` the starting degree is
    derived from (``AdaptiveConfig.initial_estimate``); a node then follows its own
    estimate. 1,000 unless a preset or :meth:`with_expected_nodes` says otherwise."""

    def __post_init__(self) -> None:
        require(isinstance(self.base, GossipConfig), "base", "must be a GossipConfig")
        if self.fanout_bounds is not None:
            bounds = self.fanout_bounds
            require(isinstance(bounds, tuple) and len(bounds) == 2, "fanout_bounds",
                    "must be (minimum, maximum)")
            low, high = bounds
            require_int(low, "fanout_bounds")
            require_int(high, "fanout_bounds", minimum=low)
            require(high <= MAX_DEGREE, "fanout_bounds", f"must be <= {MAX_DEGREE}")
        p = self.target_delivery_probability
        if p is not None:
            require(isinstance(p, int | float) and not isinstance(p, bool) and 0 < p < 1,
                    "target_delivery_probability", f"must be in (0, 1), got {p!r}")
        require_int(self.expected_nodes, "expected_nodes")

    def replace(self, **changes: Any) -> EnterpriseGossipConfig:
        """Return a copy with ``changes`` applied (and validated)."""
        return dataclasses.replace(self, **changes)

    # --- presets -------------------------------------------------------------------

    @classmethod
    def builder(cls) -> EnterpriseGossipConfig:
        """Default gossip settings, nothing derived (the original's ``builder()``)."""
        return cls()

    @classmethod
    def with_base(cls, base: GossipConfig) -> EnterpriseGossipConfig:
        """Start from ``base`` instead of the defaults (the original's constructor)."""
        return cls(base=base)

    @classmethod
    def for_threat_intel(cls) -> EnterpriseGossipConfig:
        """Low latency, critical first, strict trust: a mesh that shares alerts.

        * strict trust: unsigned messages refused (``require_signatures``), origin clocks
          within 30 s (``max_clock_skew``), which narrows what a replay could do;
        * low latency: a broken tree is repaired after 0.1 s instead of 0.25
          (``lazy_timeout``, ``graft_retry`` 0.25), digests every second;
        * critical first: always (priority bands); the 5 MB/s limit (the original's
          preset) holds back bulk only, never priority 192 and up;
        * batches of 25 messages per catch-up reply and adaptive degrees derived for a
          0.999 delivery probability (the original's values), between 4 (our default
          fanout) and 15 (the original's maximum), starting from those of 1,000 nodes.
        """
        return cls(
            base=GossipConfig(require_signatures=True, max_clock_skew=30.0,
                              lazy_timeout=0.1, graft_retry=0.25,
                              anti_entropy_interval=1.0, anti_entropy_batch=25,
                              max_send_rate=5_000_000),
            fanout_bounds=(4, 15), target_delivery_probability=0.999,
        )

    @classmethod
    def for_large_networks(cls) -> EnterpriseGossipConfig:
        """Meshes of 10,000 nodes and more: the broadcast tree, bandwidth caps, sparse
        anti-entropy.

        * the broadcast tree (``forwarding="tree"``): about one copy per node whatever
          the degree;
        * caps of 100 MB/s per node and 25 MB/s per link (``max_send_rate``,
          ``max_link_send_rate``), which shape bulk traffic, never priority 192 and up;
        * a digest every 10 s (``anti_entropy_interval``) and holes asked for 60 s
          (``gap_timeout``): the tree delivers, anti-entropy only repairs;
        * adaptive fanout: degrees follow the estimated mesh size at p = 0.95, within
          5-10, starting from those of 10,000 nodes.
        """
        return cls(
            base=GossipConfig(forwarding="tree", max_send_rate=100_000_000,
                              max_link_send_rate=25_000_000, anti_entropy_interval=10.0,
                              gap_timeout=60.0),
            fanout_bounds=(5, 10), expected_nodes=10_000,
        )

    # --- the original's builder methods --------------------------------------------

    def with_adaptive_fanout(self, *bounds: int) -> EnterpriseGossipConfig:
        """Derive the degree from the mesh size, within bounds.

        ``with_adaptive_fanout(maximum)`` (the original crate's form; the minimum is the
        base's ``fanout``) or ``with_adaptive_fanout(minimum, maximum)`` (its README's).
        The degree, :func:`epidemic_degree` of ``expected_nodes`` and the target
        probability clamped to the bounds, becomes ``GossipConfig.fanout`` (push
        forwarding) and ``OverlayConfig.active_size`` (the links the broadcast tree picks
        its eager and lazy links from) at the start, and a node built with this
        configuration then follows its own estimate of the mesh's size: adaptive fanout
        (:meth:`to_adaptive_config`, :mod:`somasync.core.sizing`) re-derives the degree,
        the push and IHAVE fanouts (all within these bounds) and the anti-entropy pacing
        as the mesh grows or shrinks. (A bare :class:`~somasync.protocol.GossipProtocol`
        has no estimate: it keeps the starting values.)
        """
        if len(bounds) == 1:
            low, high = min(self.base.fanout, bounds[0]), bounds[0]
        elif len(bounds) == 2:
            low, high = bounds
        else:
            raise ConfigError("fanout_bounds", "give (maximum) or (minimum, maximum)")
        return self.replace(fanout_bounds=(low, high))

    def with_epidemic_tuning(self, target_delivery_probability: float,
                             *extra: float) -> EnterpriseGossipConfig:
        """The probability (0-1) that push alone reaches every node, which the degree is
        derived from (see :meth:`with_adaptive_fanout`; without bounds, 1 to
        :data:`MAX_DEGREE`).

        Raises:
            ConfigError: given more than one number. The original's README calls this
                with two (``0.1, 0.9``); its crate took one, this probability, so the
                README's line never compiled and gave the two no meaning.
        """
        if extra:
            raise ConfigError("target_delivery_probability",
                              "takes one number, the target delivery probability (the "
                              "original crate's form; its README's two-number call never "
                              "compiled)")
        return self.replace(target_delivery_probability=target_delivery_probability)

    def with_expected_nodes(self, count: int) -> EnterpriseGossipConfig:
        """The mesh size the degree is derived for (default 1,000)."""
        return self.replace(expected_nodes=count)

    def with_bandwidth_limit(self, bytes_per_sec: int, *,
                             per_link: int | None = None) -> EnterpriseGossipConfig:
        """Cap what the node sends, all links together, at ``bytes_per_sec``
        (``GossipConfig.max_send_rate``), and each link at ``per_link``
        (``max_link_send_rate``) when given. Frames over the rate wait in their link's
        queue, highest priority first; priority 192 and up is never held back."""
        changes: dict[str, int] = {"max_send_rate": bytes_per_sec}
        if per_link is not None:
            changes["max_link_send_rate"] = per_link
        return self._base(**changes)

    def with_batch_size(self, size: int) -> EnterpriseGossipConfig:
        """Most messages one catch-up (anti-entropy) reply carries
        (``GossipConfig.anti_entropy_batch``). Live traffic needs no setting: frames
        queued for a link are always written to it together, and IHAVE announcements go
        out as one frame per link and turn."""
        return self._base(anti_entropy_batch=size)

    def with_priority_routing(self) -> EnterpriseGossipConfig:
        """Changes nothing: priority routing is always on. Every link's send queue has
        four bands (see :mod:`somasync.priority`) and sends the highest first; a
        bandwidth limit never holds back priority 192 and up, and a full queue drops the
        lowest band first."""
        return self

    def with_smart_routing(self) -> EnterpriseGossipConfig:
        """Changes nothing: reputation is always on. Each peer is scored
        (:mod:`somasync.core.scoring`) by the messages it brought first and the invalid
        or greedy frames it sent; a low score stops this node from acting on its
        announcements, then from reading it, then disconnects it, and a full node evicts
        its lowest-scoring inbound peer for a newcomer."""
        return self

    def _base(self, **changes: Any) -> EnterpriseGossipConfig:
        return self.replace(base=self.base.replace(**changes))

    # --- what it sets ----------------------------------------------------------------

    def calculate_adaptive_fanout(self, network_size: int) -> int:
        """The degree for a mesh of ``network_size`` nodes: :func:`epidemic_degree`
        clamped to ``fanout_bounds`` (the original's method of the same name, which
        nothing called; here :meth:`degree` uses it)."""
        p = self.target_delivery_probability or DEFAULT_DELIVERY_PROBABILITY
        low, high = self.fanout_bounds or (1, MAX_DEGREE)
        return min(max(epidemic_degree(network_size, p), low), high)

    def degree(self) -> int | None:
        """The derived degree for ``expected_nodes``, or None when nothing asks for one
        (neither bounds nor a target probability)."""
        if self.fanout_bounds is None and self.target_delivery_probability is None:
            return None
        return self.calculate_adaptive_fanout(self.expected_nodes)

    def to_gossip_config(self) -> GossipConfig:
        """The gossip settings a node or protocol object runs on: ``base``, with the
        derived degree as ``fanout``."""
        degree = self.degree()
        return self.base if degree is None else self.base.replace(fanout=degree)

    def to_adaptive_config(self) -> AdaptiveConfig:
        """Adaptive fanout as this configuration asks: on, with ``fanout_bounds`` (1 to
        :data:`MAX_DEGREE` when only a probability was given) bounding the overlay
        degree, the push fanout and the IHAVE fanout, the target probability, and
        ``expected_nodes`` as the starting estimate; anti-entropy paced from the base's
        interval up to :data:`ADAPTIVE_PACING_CAP`. Off (the defaults) when nothing
        asks for a derived degree."""
        if self.degree() is None:
            return AdaptiveConfig()
        bounds = self.fanout_bounds or (1, MAX_DEGREE)
        base = self.base
        cap = max(base.anti_entropy_interval,
                  min(ADAPTIVE_PACING_CAP, base.gap_timeout / 3))
        return AdaptiveConfig(
            enabled=True,
            target_delivery_probability=(self.target_delivery_probability
                                         or DEFAULT_DELIVERY_PROBABILITY),
            degree_bounds=bounds, fanout_bounds=bounds, ihave_bounds=bounds,
            max_anti_entropy_interval=cap, initial_estimate=self.expected_nodes)

    def to_overlay_config(self, overlay: OverlayConfig | None = None) -> OverlayConfig:
        """``overlay`` (the defaults when None) with the derived degree as
        ``active_size``."""
        overlay = overlay if overlay is not None else OverlayConfig()
        degree = self.degree()
        return overlay if degree is None else overlay.replace(active_size=degree)

    def apply(self, config: NodeConfig) -> NodeConfig:
        """``config`` with these gossip settings, the derived degree as the starting one,
        and adaptive fanout (:meth:`to_adaptive_config`)."""
        return config.replace(gossip=self.to_gossip_config(),
                              overlay=self.to_overlay_config(config.overlay),
                              adaptive=self.to_adaptive_config())
