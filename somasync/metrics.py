"""Prometheus metrics of a node (the ``prometheus`` extra: ``pip install somasync[prometheus]``).

:class:`NodeMetrics` is a Prometheus collector over the latest :class:`NodeStats`
snapshot of one node. Statistics are gathered in the node's event loop (a sharded node
asks its workers), while Prometheus scrapes from its own thread, so the application (or
the agent) refreshes the snapshot with :meth:`NodeMetrics.refresh` on its loop, every few
seconds; a scrape reports the latest snapshot and ``somasync_stats_age_seconds`` says how
old it is. Register it in your own registry, or serve it with ``prometheus_client``::

    metrics = NodeMetrics(node)
    registry = CollectorRegistry(); registry.register(metrics)
    start_http_server(9464, registry=registry)
    asyncio.create_task(metrics.refresh_every(5.0))

Names follow Prometheus conventions: ``somasync_`` prefix, ``_total`` for counters,
``_bytes``/``_seconds`` units, labels for direction, reason and state.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from somasync.core.endpoint import VERIFY_BOUNDS
from somasync.errors import NodeStateError

try:
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
    )
    from prometheus_client.registry import Collector
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError("somasync.metrics needs the 'prometheus' extra: "
                      "pip install 'somasync[prometheus]'") from exc

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from somasync.aio.node import NodeStats, SynapseNode

__all__ = ["NodeMetrics"]


class NodeMetrics(Collector):
    """Prometheus collector of one node's latest statistics (see the module docstring)."""

    def __init__(self, node: SynapseNode) -> None:
        self._node = node
        self._stats: NodeStats | None = None
        self._taken = 0.0

    async def refresh(self) -> None:
        """Take a new snapshot (on the node's event loop). A node not started yet keeps
        the previous snapshot."""
        try:
            self._stats = await self._node.get_stats()
        except NodeStateError:
            return
        self._taken = time.monotonic()

    async def refresh_every(self, seconds: float) -> None:
        """Refresh until cancelled."""
        while True:
            await self.refresh()
            await asyncio.sleep(seconds)

    def collect(self) -> Iterator[Metric]:
        stats = self._stats
        if stats is None:
            return
        labels = ["node_id"]

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            family = CounterMetricFamily(name, doc, labels=labels)
            family.add_metric([stats.node_id], value)
            return family

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            family = GaugeMetricFamily(name, doc, labels=labels)
            family.add_metric([stats.node_id], value)
            return family

        yield gauge("somasync_stats_age_seconds", "Age of the snapshot these figures come "
                    "from.", time.monotonic() - self._taken)
        yield gauge("somasync_uptime_seconds", "Seconds since the node started.", stats.uptime)
        yield counter("somasync_messages_delivered", "Messages from other nodes delivered "
                      "to the application.", stats.messages_processed)
        yield counter("somasync_messages_originated", "Messages this node originated.",
                      stats.messages_originated)
        yield counter("somasync_duplicates", "Copies of messages already seen.",
                      stats.duplicates)
        yield counter("somasync_deliveries_dropped", "Messages the application did not "
                      "take in time.", stats.deliveries_dropped)
        yield counter("somasync_connect_failures", "Dials that failed.",
                      stats.connect_failures)
        yield counter("somasync_worker_restarts", "Worker processes restarted after they "
                      "died.", stats.worker_restarts)
        yield counter("somasync_ring_corrupted", "Corrupt records found in shared-memory "
                      "rings (each ring rebuilt).", stats.ring_corrupted)
        yield counter("somasync_ring_dropped", "Items dropped because a shared-memory ring "
                      "stayed full.", stats.ring_dropped)
        yield gauge("somasync_peers", "Peers with an established link.",
                    stats.peer_stats.healthy_peers)
        core = stats.core
        copies = CounterMetricFamily(
            "somasync_message_copies", "Message frames by direction and kind: in, a first "
            "copy (delivered) or a duplicate; out, queued to a peer as a push (this node's "
            "own messages and forwards) or a repair (asked for by a digest or a GRAFT).",
            labels=[*labels, "direction", "kind"])
        for direction, kind, value in (
                ("in", "first", core.messages_delivered), ("in", "duplicate", core.duplicates),
                ("out", "push", max(0, core.messages_forwarded - core.repairs_sent)),
                ("out", "repair", core.repairs_sent)):
            copies.add_metric([stats.node_id, direction, kind], value)
        yield copies
        control = CounterMetricFamily(
            "somasync_control_frames", "Control frames sent: broadcast tree (IHAVE, GRAFT, "
            "PRUNE) and anti-entropy digests.", labels=[*labels, "kind"])
        control.add_metric([stats.node_id, "tree"], core.control_frames_out)
        control.add_metric([stats.node_id, "digest"], core.digests_sent)
        yield control
        yield gauge("somasync_send_queue_bytes", "Bytes queued to peers, not yet handed to "
                    "their connections.", core.send_queue_bytes)
        yield counter("somasync_send_queue_dropped_frames", "Frames dropped because a slow "
                      "peer's send queue was full.", core.send_queue_dropped)
        yield gauge("somasync_delivery_queue_messages", "Messages waiting for the "
                    "application to take them.", stats.delivery_queue)
        if stats.workers:
            rings = GaugeMetricFamily(
                "somasync_ring_bytes", "Sharded node: bytes waiting in the shared-memory "
                "rings each worker reads (waiting), and bytes a worker holds back because "
                "a ring was full (pending).", labels=[*labels, "worker", "state"])
            for worker in stats.workers:
                rings.add_metric([stats.node_id, str(worker.index), "waiting"],
                                 worker.ring_in_used)
                rings.add_metric([stats.node_id, str(worker.index), "pending"],
                                 worker.ring_out_pending)
            yield rings
        for name, doc, inbound, outbound in (
                ("somasync_transport_bytes", "Bytes on links.", stats.bytes_in,
                 stats.bytes_out),
                ("somasync_transport_frames", "Frames on links.", stats.frames_in,
                 stats.frames_out)):
            family = CounterMetricFamily(name, doc, labels=[*labels, "direction"])
            family.add_metric([stats.node_id, "in"], inbound)
            family.add_metric([stats.node_id, "out"], outbound)
            yield family
        rejected = CounterMetricFamily("somasync_frames_rejected", "Frames refused, by "
                                       "reason.", labels=[*labels, "reason"])
        for reason, count in sorted(stats.rejected.items()):
            rejected.add_metric([stats.node_id, reason], count)
        yield rejected
        scores = GaugeMetricFamily("somasync_peer_score", "Each connected peer's score "
                                   "(negative: invalid frames, budget violations).",
                                   labels=[*labels, "peer"])
        for peer, score in sorted(stats.core.peer_scores.items()):
            scores.add_metric([stats.node_id, peer], score)
        yield scores
        latency = stats.delivery_latency
        histogram = HistogramMetricFamily(
            "somasync_delivery_latency_seconds", "Origin timestamp to delivery here, wall "
            "clock.", labels=labels)
        histogram.add_metric([stats.node_id], _cumulative(latency.bounds, latency.counts),
                             sum_value=latency.total)
        yield histogram
        verify = HistogramMetricFamily(
            "somasync_verify_seconds", "Time of each signature check (summed over "
            "workers).", labels=labels)
        verify.add_metric([stats.node_id], _cumulative(VERIFY_BOUNDS, stats.core.verify_seconds),
                          sum_value=stats.core.verify_seconds_total)
        yield verify
        membership = stats.membership
        if membership is not None:
            members = GaugeMetricFamily("somasync_members", "Members known, by state.",
                                        labels=[*labels, "state"])
            for state in ("alive", "suspect", "failed", "left"):
                members.add_metric([stats.node_id, state], getattr(membership, state))
            yield members
            yield gauge("somasync_local_health", "Lifeguard score (0: healthy).",
                        membership.local_health)
            yield counter("somasync_membership_suspicions", "Suspicions raised.",
                          membership.suspicions)


def _cumulative(bounds: tuple[float, ...], counts: tuple[int, ...]
                ) -> list[tuple[str, float]]:
    """Prometheus histogram buckets (cumulative, ``+Inf`` last) from per-bucket counts;
    all zero when nothing was counted (``counts`` empty)."""
    counts = counts or (0,) * (len(bounds) + 1)
    total, buckets = 0, []
    for bound, count in zip([*map(str, bounds), "+Inf"], counts, strict=True):
        total += count
        buckets.append((bound, float(total)))
    return buckets
