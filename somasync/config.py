"""Configuration: frozen dataclasses, one docstring per field, and named presets.

Every field says its unit and why its default was chosen. Invalid values raise
:class:`~somasync.errors.ConfigError` naming the field, at construction time, so a bad
configuration fails before a node touches the network.

Presets follow memberlist's ``DefaultLANConfig`` idea: :meth:`GossipConfig.lan` is the
default, :meth:`GossipConfig.wan` trades speed for tolerance of slow links, and
:meth:`GossipConfig.local` makes tests and demos on one host converge quickly.
"""

from __future__ import annotations

import dataclasses
import enum
import importlib.util
import ipaddress
import math
from collections.abc import Mapping
from dataclasses import InitVar, dataclass, field
from datetime import timedelta
from typing import Any

from somasync.errors import ConfigError

__all__ = ["AdaptiveConfig", "DiscoveryConfig", "DiscoveryMethod", "GossipConfig",
           "MembershipConfig",
           "NodeConfig", "OverlayConfig", "SecurityConfig", "parse_address", "require",
           "require_int", "require_number"]

#: Largest frame a node will ever accept, whatever the configuration says (64 MiB).
FRAME_HARD_LIMIT = 64 * 1024 * 1024


def require(condition: bool, field_name: str, message: str) -> None:
    """Raise :class:`~somasync.errors.ConfigError` naming ``field_name`` unless
    ``condition`` holds (the validators of every settings object in the package)."""
    if not condition:
        raise ConfigError(field_name, message)


def require_int(value: Any, field_name: str, *, minimum: int = 1) -> None:
    """``value`` must be an int (not a bool) of at least ``minimum``."""
    require(
        isinstance(value, int) and not isinstance(value, bool) and value >= minimum,
        field_name,
        f"must be an integer >= {minimum}, got {value!r}",
    )


def require_number(value: Any, field_name: str, *, allow_zero: bool = False,
                   unit: str = "seconds") -> None:
    """``value`` must be a finite int or float, > 0 (or >= 0 with ``allow_zero``)."""
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value >= 0 if allow_zero else value > 0)
    bound = ">= 0" if allow_zero else "> 0"
    require(ok, field_name, f"must be a finite number {bound} ({unit}), got {value!r}")


MAX_SIGNING_BATCH = 1024
"""Largest ``NodeConfig.signing_batch_size``: a proof of 10 hashes (163 bytes per
message). Past a few hundred messages per signature, the signature is a negligible part
of a receiver's work, while every message still pays for its proof."""

DEFAULT_PORT = 7946
"""The agent's port (TCP and UDP) unless told otherwise, and a ``dns:`` seed's when it
names none: memberlist's and Serf's, so a second agent on another host can join a first
one by its host name alone, and a firewall rule has one port to open."""

MDNS_SERVICE_TYPE = "_somasync._tcp.local."
"""The DNS-SD service type a node with mDNS discovery announces and browses for."""

MDNS_EXTRA = "mDNS discovery needs the 'mdns' extra: pip install 'somasync[mdns]'"
"""What a node configured for mDNS says when the ``zeroconf`` library is missing."""

DNS_SEED = "dns:"
"""Prefix of a seed given as a DNS name: ``dns:NAME[:PORT]`` stands for every address
``NAME`` resolves to, resolved again at each retry (a Kubernetes headless service, a
round-robin record)."""


def parse_seed(seed: str, field_name: str = "bootstrap_peers") -> tuple[str, int]:
    """Split a seed, ``"host:port"`` or ``"dns:NAME[:PORT]"`` (port
    :data:`DEFAULT_PORT` when left out), into ``(host or name, port)``.

    Raises:
        ConfigError: naming ``field_name`` when the text is neither.
    """
    if isinstance(seed, str) and seed.startswith(DNS_SEED):
        rest = seed[len(DNS_SEED):]
        name, _, port_text = rest.partition(":")
        port_text = port_text or str(DEFAULT_PORT)
        if not name or not port_text.isdigit() or not 0 < int(port_text) <= 65535:
            raise ConfigError(field_name, f"expected 'dns:NAME[:PORT]', got {seed!r}")
        return name, int(port_text)
    return parse_address(seed, field_name)


def parse_address(address: str, field_name: str = "address") -> tuple[str, int]:
    """Split ``"host:port"`` (or ``"[v6]:port"``) into ``(host, port)``.

    Raises:
        ConfigError: naming ``field_name`` when the text is not a host and a port 0-65535.
    """
    if not isinstance(address, str) or ":" not in address:
        raise ConfigError(field_name, f"expected 'host:port', got {address!r}")
    host, _, port_text = address.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ConfigError(field_name, f"expected 'host:port' with port 0-65535, got {address!r}")
    return host, int(port_text)


def _is_ip(text: object) -> bool:
    if not isinstance(text, str):
        return False  # ip_address() would take an int
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


ORIGINAL_GOSSIP_INTERVAL = (
    "the original's heartbeat period has no counterpart: messages are forwarded the moment "
    "they arrive (no gossip rounds), and liveness is SWIM probing, set "
    "MembershipConfig.probe_interval (SynapseNodeBuilder.with_membership_config)")
"""Why ``GossipConfig(gossip_interval=...)`` is refused."""

ORIGINAL_NETWORK_TIMEOUT = (
    "the original never read it; network timeouts are NodeConfig.connect_timeout, "
    "handshake_timeout and frame_timeout")
"""Why ``GossipConfig(network_timeout=...)`` is refused."""


@dataclass(frozen=True, kw_only=True)
class GossipConfig:
    """How messages spread, how long they are remembered, and how much a peer may send.

    These settings drive the sans-IO core (:class:`somasync.core.endpoint.Endpoint`); the
    same object configures a single-process node, each worker of a sharded node, and every
    virtual node of the simulator.

    Memory: what a node remembers is bounded by these fields, never by its uptime. At a
    steady ``rate`` of messages/s it plateaus at its baseline plus::

        min(seen_cache_size, rate x seen_ttl) x 100 B              (seen ids)
      + min(max_stored_messages, rate x max_message_age) x (frame + 330 B)   (store)
      + origins x 1.4 kB                                           (streams)

    (frame = payload + about 175 B of envelope, signature and header; figures measured
    on CPython 3.11 by ``python -m somasync.bench memory``). With these defaults at
    1,000 msg/s of 256-byte payloads that is 9.5 + 7.3 MiB, reached after 100 s; a
    single-process node's baseline is about 31 MiB.
    """

    fanout: int = 4
    """Push forwarding (``forwarding="push"``) only: neighbours a received message is
    forwarded to (chosen at random, never the sender). The broadcast tree sends to its
    tree links instead.

    Push gossip reaches every node with high probability when fanout >= ln(N) + c; 4 covers
    meshes of tens of nodes per hop, and anti-entropy repairs the rare miss. A node's own
    broadcasts go to *every* neighbour (flood publish), as in gossipsub."""

    max_hops: int = 64
    """A message that has travelled this many hops is delivered but not forwarded further.

    Bounds the damage of a forwarding loop (the seen cache already stops loops; this is
    the backstop). Push gossip reaches 4^16 nodes in 16 hops, but the broadcast tree's
    paths are longer: one tree serves every origin, and the simulator measured up to 25
    hops across 1,000 nodes. A limit below the tree's depth starves the far side of the
    tree, which then lives on GRAFTs (16 hops at 1,000 nodes: redundancy 0.15 and p99
    latency 0.5 s, against 0.002 and 7.5 ms with 64)."""

    seen_cache_size: int = 100_000
    """Message ids remembered for de-duplication before anything is decoded (entries;
    about 100 bytes each, so 9.5 MiB when full).

    100k ids at 1k msg/s is 100 s: every copy the tree, a GRAFT or a repair still
    carries arrives well within that. An older copy is still caught, after its envelope
    is decoded, by the per-origin sequence intervals (a few bytes per origin)."""

    seen_ttl: float = 4200.0
    """Seconds a message id stays in the seen cache (while ``seen_cache_size`` has room).
    Longer than ``max_message_age``, so a copy young enough to be accepted is still
    recognised; older copies are refused as too old."""

    max_stored_messages: int = 10_000
    """Recent messages kept for anti-entropy (the catch-up store). Oldest go first, but
    an origin holding more than a quarter of a full store loses its own first.

    Each costs its frame (payload + about 175 B) plus about 330 B: 10k messages of 1 KiB
    is about 13 MiB per node, minutes of alert traffic and 10 s at 1k msg/s. Answering a
    digest costs in proportion to what the asker lacks, not to this size."""

    max_message_age: float = 3600.0
    """Seconds after its origin's timestamp a message is still accepted, whatever its TTL,
    and kept in the catch-up store (while ``max_stored_messages`` has room). The replay
    bound: a captured message cannot be delivered again later than this, even to a node
    that restarted and forgot what it saw. One hour covers restarts, partitions and
    catch-up after maintenance; a node disconnected longer misses what was sent before."""

    anti_entropy_interval: float = 2.0
    """Seconds between digest exchanges with one random neighbour (push-pull).

    Digests also go out at once when a link comes up, so a reconnecting node does not wait
    for this timer. 2 s keeps the cost near zero (one small frame per interval)."""

    anti_entropy_batch: int = 1024
    """Most messages one digest reply carries; the rest follow in the next rounds."""

    max_digest_streams: int = 1024
    """Most origins (streams) described in one digest frame; more rotate across rounds."""

    max_streams: int = 10_000
    """Origins whose sequence numbers a node tracks; the least recently active is dropped
    first (a dropped origin is re-learnt from its next message)."""

    gap_timeout: float = 30.0
    """Seconds a hole in an origin's sequence numbers is asked for before it is given up
    (the message may never have been sent, or has expired everywhere). Counted from the
    last digest that lists the hole as held from a neighbour that defers its repairs to
    this node, when one does: a neighbour whose link is rate-limited (``max_send_rate``,
    ``max_link_send_rate``) sends what its full queue dropped only once the queue drains,
    which an overload can put off longer than this, and says so in its digests. Such a
    hole is still given up ``somasync.core.antientropy.HOLD_GAP_TIMEOUTS`` (20) times
    this after it opened (at most ``max_message_age``), since a digest lists the holes its
    sender gave up as held too."""

    max_frame: int = 1024 * 1024
    """Largest frame accepted, in bytes, checked against the length prefix before any
    allocation. 1 MiB fits large IOC batches; a bigger claim closes the connection."""

    link_queue_bytes: int = 8 * 1024 * 1024
    """Bytes queued for one slow peer before its lowest-priority frames are dropped (and
    counted). Keeps a stalled peer from growing memory without bound; anti-entropy
    repairs what it misses once it drains. Once full, the queue drops a band's frames
    until it is down to 7/8 of this (``somasync.core.outbox.REFILL``), so the peer's
    holes are few and long rather than one every few messages."""

    read_ahead_bytes: int = 32 * 1024 * 1024
    """Bytes of message frames below priority 192 a node may hold read but not yet
    handled, all links together (a sharded node: each worker an equal share). A node
    reads its peers' bytes as they arrive, handles critical frames (192 and up) and
    control frames at once, and the rest highest band first, one link after another
    (:mod:`somasync.core.inbox`): a critical alert overtakes the bulk read before it.
    Past this room the link holding the most sheds its oldest lowest-band frames,
    counted as ``ingress_shed`` and repaired by anti-entropy later. 32 MiB is seconds of
    verification at a core's rate. 0: no read-ahead; each link is read a slice
    (``NodeConfig.read_slice``) per loop turn and its frames handled in arrival order,
    TCP pushing back on a fast sender."""

    max_send_rate: int = 0
    """Bytes per second this node sends its peers, all links together (0: no limit). Frames
    over the rate wait in their link's queue, highest priority first, rather than being
    dropped (only a queue past ``link_queue_bytes`` drops, lowest band first); frames of
    priority 192 and up (critical) are never held back, and their bytes count against what
    bulk may send after them. A sharded node gives each worker an equal share."""

    max_link_send_rate: int = 0
    """Bytes per second sent to any one peer (0: no limit); shapes like
    ``max_send_rate``."""

    require_signatures: bool = True
    """Reject data messages that carry no signature. Unsigned alerts are trivially forged,
    so this is on unless a deployment explicitly decides otherwise."""

    trusted_keys: frozenset[bytes] | None = None
    """Ed25519 public keys (32 bytes each) whose messages are accepted; ``None`` accepts
    any valid signature (the ``open`` trust policy)."""

    max_clock_skew: float = 60.0
    """Seconds an origin's timestamp may lie in the future before the message is rejected.
    Clocks of healthy hosts agree within a second; 60 s tolerates a badly kept one."""

    forwarding: str = "tree"
    """How a new message travels on: ``"tree"`` (epidemic broadcast tree, Plumtree: the
    full message along tree links, batched IHAVE announcements of its id to the other
    neighbours, GRAFT to pull a message announced but not received, PRUNE on duplicates),
    or ``"push"`` (plain push gossip to ``fanout`` random neighbours). The tree sends each
    node about one copy (redundancy near 0) where push sends ``fanout``; push stays for
    comparison and for tiny meshes."""

    lazy_timeout: float = 0.25
    """Tree: seconds to wait, after the first IHAVE for a message not yet received, before
    sending GRAFT to the announcer. Longer than the usual gap between the tree copy and an
    announcement on a LAN (milliseconds), short enough that a broken tree heals within a
    fraction of a second (Plumtree's timer 1)."""

    graft_retry: float = 0.5
    """Tree: seconds after a GRAFT before the next announcer is asked, should the first
    not answer (Plumtree's timer 2)."""

    announce_interval: float = 0.0
    """Tree: seconds between two IHAVE frames to one neighbour. 0: each turn's (one
    input's) announcements go at once, one frame per link. A positive interval sends the
    first announcement after a quiet spell at once and gathers the ones that follow until
    the interval has passed: at high message rates one frame (and one wake-up of the
    neighbour) carries many ids, for a broken tree noticed up to that much later."""

    max_missing: int = 10_000
    """Tree: announced-but-missing message ids remembered; beyond it the oldest are
    forgotten (and counted): anti-entropy still repairs them."""

    max_stream_trees: int = 4096
    """Tree: origins (streams) whose own broadcast tree a node remembers, least recently
    used first out. Each costs a few hundred bytes (its pruned links); a forgotten
    stream's next message floods once and prunes again. 4096 covers every publisher of
    most deployments."""

    # --- the original crate's field names, accepted when constructing (not stored) ----
    # InitVars: dataclasses.fields() and replace() ignore them (reading one gives None);
    # what they set is read back under our name.

    sync_interval: InitVar[float | timedelta | None] = None
    """The original's anti-entropy period, accepted as ``anti_entropy_interval`` (the
    same mechanism: a periodic digest exchange with one random neighbour; it wins over
    ``anti_entropy_interval`` when both are given). Seconds or a ``timedelta``; not
    stored (reading it gives None): read ``anti_entropy_interval``."""

    gossip_interval: InitVar[float | timedelta | None] = None
    """Refused with :class:`~somasync.errors.ConfigError`: the original's heartbeat
    period has no counterpart here. Messages are forwarded the moment they arrive (there
    are no gossip rounds to pace), and liveness is SWIM probing:
    ``MembershipConfig.probe_interval``."""

    network_timeout: InitVar[float | timedelta | None] = None
    """Refused with :class:`~somasync.errors.ConfigError`: the original never read it.
    Network timeouts are ``NodeConfig.connect_timeout``, ``handshake_timeout`` and
    ``frame_timeout``."""

    def __post_init__(self, sync_interval: float | timedelta | None,
                      gossip_interval: float | timedelta | None,
                      network_timeout: float | timedelta | None) -> None:
        if gossip_interval is not None:
            raise ConfigError("gossip.gossip_interval", ORIGINAL_GOSSIP_INTERVAL)
        if network_timeout is not None:
            raise ConfigError("gossip.network_timeout", ORIGINAL_NETWORK_TIMEOUT)
        if sync_interval is not None:
            if isinstance(sync_interval, timedelta):
                sync_interval = sync_interval.total_seconds()
            require_number(sync_interval, "gossip.sync_interval")
            object.__setattr__(self, "anti_entropy_interval", sync_interval)
        require_int(self.fanout, "gossip.fanout")
        require_int(self.max_hops, "gossip.max_hops")
        require(self.max_hops <= 255, "gossip.max_hops", "must be <= 255 (one byte on the wire)")
        require_int(self.seen_cache_size, "gossip.seen_cache_size")
        require_number(self.seen_ttl, "gossip.seen_ttl")
        require_int(self.max_stored_messages, "gossip.max_stored_messages", minimum=0)
        require_number(self.max_message_age, "gossip.max_message_age")
        require_number(self.anti_entropy_interval, "gossip.anti_entropy_interval")
        require_int(self.anti_entropy_batch, "gossip.anti_entropy_batch")
        require_int(self.max_digest_streams, "gossip.max_digest_streams")
        require_int(self.max_streams, "gossip.max_streams")
        require_number(self.gap_timeout, "gossip.gap_timeout")
        require_int(self.max_frame, "gossip.max_frame", minimum=1024)
        require(
            self.max_frame <= FRAME_HARD_LIMIT,
            "gossip.max_frame",
            f"must be <= {FRAME_HARD_LIMIT} bytes",
        )
        require_int(self.link_queue_bytes, "gossip.link_queue_bytes", minimum=self.max_frame)
        require_int(self.read_ahead_bytes, "gossip.read_ahead_bytes", minimum=0)
        require_int(self.max_send_rate, "gossip.max_send_rate", minimum=0)
        require_int(self.max_link_send_rate, "gossip.max_link_send_rate", minimum=0)
        require_number(self.max_clock_skew, "gossip.max_clock_skew", allow_zero=True)
        require(self.forwarding in ("tree", "push"), "gossip.forwarding",
                 f"must be 'tree' or 'push', got {self.forwarding!r}")
        require_number(self.lazy_timeout, "gossip.lazy_timeout")
        require_number(self.graft_retry, "gossip.graft_retry")
        require_number(self.announce_interval, "gossip.announce_interval", allow_zero=True)
        require_int(self.max_missing, "gossip.max_missing")
        require_int(self.max_stream_trees, "gossip.max_stream_trees")
        require(
            isinstance(self.require_signatures, bool),
            "gossip.require_signatures",
            "must be a bool",
        )
        if self.trusted_keys is not None:
            require(
                isinstance(self.trusted_keys, frozenset)
                and all(isinstance(k, bytes) and len(k) == 32 for k in self.trusted_keys),
                "gossip.trusted_keys",
                "must be a frozenset of 32-byte Ed25519 public keys, or None",
            )

    def replace(self, **changes: Any) -> GossipConfig:
        """Return a copy with ``changes`` applied (and validated)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def lan(cls) -> GossipConfig:
        """Defaults for one data centre or LAN (sub-millisecond to few-ms links)."""
        return cls()

    @classmethod
    def wan(cls) -> GossipConfig:
        """Defaults for links across regions: more fanout, slower anti-entropy, more skew."""
        return cls(fanout=6, anti_entropy_interval=10.0, max_clock_skew=300.0, gap_timeout=120.0)

    @classmethod
    def local(cls) -> GossipConfig:
        """Defaults for tests and demos on one host: fast anti-entropy, small caches."""
        return cls(
            anti_entropy_interval=0.25,
            seen_cache_size=20_000,
            max_stored_messages=5_000,
            gap_timeout=5.0,
        )


class DiscoveryMethod(enum.StrEnum):
    """How a node finds the other members of its mesh (the original's ``DiscoveryMethod``).

    ``STATIC``: only the configured bootstrap peers and peers added with ``add_peer`` are
    dialled. ``GOSSIP`` (the default): membership spreads by peer exchange, and the node
    keeps broadcast links to members it learned about. ``MDNS``: the node announces
    itself on the local network with multicast DNS (DNS-SD service
    :data:`MDNS_SERVICE_TYPE`), browses for the other nodes' announcements and joins
    through every node it finds, like through a seed; combined with ``GOSSIP`` it picks
    broadcast links among the members, alone it keeps a link to every node it found.
    Needs the ``mdns`` extra (``pip install 'somasync[mdns]'``, the ``zeroconf``
    library).
    """

    STATIC = "static"
    GOSSIP = "gossip"
    MDNS = "mdns"


@dataclass(frozen=True, kw_only=True)
class DiscoveryConfig:
    """How a node finds members, in one object (the original's ``DiscoveryConfig``, for
    ``SynapseNodeBuilder.with_discovery_config``): it sets ``NodeConfig.discovery``,
    ``bootstrap_peers`` and ``mdns_interfaces``.

    The original's other fields have no counterpart: ``discovery_interval``,
    ``max_peers`` and ``min_peers`` (membership and the overlay decide whom to link
    to: ``OverlayConfig.active_size``, ``NodeConfig.max_connections``),
    ``validation_timeout`` (``NodeConfig.handshake_timeout``) and ``local_port_range``
    (it was never read). Its ``LocalScan``, ``Dht`` and ``Bootstrap`` methods were never
    built: seeds are ``bootstrap_peers`` with any method.
    """

    methods: frozenset[DiscoveryMethod] = frozenset({DiscoveryMethod.GOSSIP})
    """See :class:`DiscoveryMethod` (``NodeConfig.discovery``)."""

    bootstrap_peers: tuple[str, ...] = ()
    """Seeds, ``host:port`` or ``dns:NAME[:PORT]`` (``NodeConfig.bootstrap_peers``)."""

    mdns_interfaces: tuple[str, ...] = ()
    """mDNS only: addresses to announce (``NodeConfig.mdns_interfaces``)."""

    def __post_init__(self) -> None:
        require(isinstance(self.methods, frozenset) and bool(self.methods)
                and all(isinstance(m, DiscoveryMethod) for m in self.methods),
                "discovery.methods", "must be a non-empty frozenset of DiscoveryMethod")
        require(isinstance(self.bootstrap_peers, tuple), "discovery.bootstrap_peers",
                "must be a tuple")
        for seed in self.bootstrap_peers:
            parse_seed(seed, "discovery.bootstrap_peers")
        require(isinstance(self.mdns_interfaces, tuple), "discovery.mdns_interfaces",
                "must be a tuple")


@dataclass(frozen=True, kw_only=True)
class MembershipConfig:
    """SWIM failure detection with Lifeguard, and how membership changes spread.

    The defaults (:meth:`lan`) follow memberlist's ``DefaultLANConfig`` in shape but probe
    twice as often and let strong evidence shorten suspicion, so a crashed node is known
    dead by everyone within about two seconds while a merely slow one has time to refute.
    Timeouts are driven by the node's monotonic clock only, never by a peer's wall clock.
    """

    probe_interval: float = 0.5
    """Seconds between two probes of a (randomised round-robin) member. Each node probes
    one member per interval, so in steady state every member is probed about once per
    interval by someone. memberlist uses 1 s; 0.5 s halves detection time for ~2
    datagrams per second per node."""

    probe_timeout: float = 0.25
    """Seconds to wait for a direct ack before asking ``indirect_checks`` members to probe
    on our behalf. Should exceed the 99th percentile round trip (sub-ms on a LAN, so
    this leaves room for a loaded host)."""

    indirect_checks: int = 3
    """Members asked to probe a target that missed its direct ack (SWIM's k). 3 as in
    memberlist: one lossy path between us and the target cannot cause a suspicion."""

    suspicion_mult: float = 1.0
    """Minimum suspicion timeout = suspicion_mult x max(1, log10(N)) x probe_interval,
    reached only once ``suspicion_confirmations`` other members independently suspect
    the same node (0.75 s at N = 32)."""

    suspicion_max_mult: float = 8.0
    """Maximum suspicion timeout = suspicion_max_mult x the minimum (6 s at N = 32): what a
    lone suspicion waits, giving a slow but alive node time to refute (Lifeguard)."""

    suspicion_confirmations: int = 3
    """Independent suspicions that bring the timeout down to the minimum (Lifeguard's k;
    memberlist: suspicion_mult - 2 = 2). 3 means four members failed to reach the node
    directly and through three helpers each."""

    awareness_max_multiplier: int = 8
    """Local-health ceiling: a node that misses acks or nacks (it is itself slow) scales
    its probe interval, probe timeout and suspicion timeouts by up to this factor instead
    of accusing others (Lifeguard; memberlist's value)."""

    gossip_interval: float = 0.2
    """Seconds between dedicated gossip rounds of queued membership changes (they also
    ride on every probe and ack). memberlist LAN value."""

    gossip_nodes: int = 3
    """Members each gossip round sends to. memberlist LAN value."""

    retransmit_mult: int = 4
    """Each membership change is sent retransmit_mult x ceil(log10(N + 1)) times (8 at
    N = 32), then dropped: enough for an epidemic to reach everyone with high probability."""

    gossip_to_the_dead: float = 30.0
    """Seconds after a member failed or left during which gossip still goes to it, so a
    falsely accused node hears the accusation and refutes (memberlist: 30 s)."""

    push_pull_interval: float = 30.0
    """Seconds between full-state exchanges with one random member (scaled up by
    log2(N) - 5 above 32 nodes, as memberlist does): repairs whatever gossip missed."""

    reconnect_interval: float = 5.0
    """Seconds between attempts to reach one random failed member (or a seed, when no
    member is alive), so the halves of a healed partition merge without an operator.
    Serf uses 30 s; 5 s merges a healed LAN partition within seconds for one datagram."""

    reconnect_timeout: float = 24 * 3600.0
    """Seconds a failed member is remembered and retried before it is forgotten (Serf's
    default: a day)."""

    forget_left_after: float = 300.0
    """Seconds a member that left gracefully is remembered (so stale gossip about it
    cannot bring it back) before it is forgotten."""

    max_members: int = 100_000
    """Members remembered at most, so a flood of identities cannot exhaust memory. A
    full table forgets its longest-failed or departed member for a new one; with only
    live members, claims of further new members are dropped and counted. One host (IP)
    may introduce at most a quarter of it: made-up identities from one place cannot lock
    real members out (``introductions_limited``)."""

    max_datagram: int = 1400
    """Largest membership datagram in bytes (memberlist's UDP buffer size: fits a
    1500-byte Ethernet MTU). Gossip piggybacks up to this size; full state is split."""

    partition_fraction: float = 0.3
    """``PartitionDetected`` is reported when at least this fraction of the live
    members (and at least two) fail within about two probe rounds (``probe_interval`` x
    members x 2: the time it takes to probe all of them twice), the signature of a cut
    network rather than of crashes; ``PartitionHealed`` once half of them are back. 1
    turns it off."""

    def __post_init__(self) -> None:
        for name in ("probe_interval", "probe_timeout", "gossip_interval",
                     "gossip_to_the_dead", "push_pull_interval", "reconnect_interval",
                     "reconnect_timeout", "forget_left_after", "suspicion_mult",
                     "suspicion_max_mult"):
            require_number(getattr(self, name), f"membership.{name}",
                            unit="multiplier" if name.startswith("suspicion") else "seconds")
        require(self.probe_timeout < self.probe_interval, "membership.probe_timeout",
                 "must be shorter than membership.probe_interval")
        require(self.suspicion_max_mult >= 1, "membership.suspicion_max_mult",
                 "must be >= 1 (the maximum cannot be below the minimum)")
        require_int(self.indirect_checks, "membership.indirect_checks", minimum=0)
        require_int(self.suspicion_confirmations, "membership.suspicion_confirmations",
                      minimum=0)
        require_int(self.awareness_max_multiplier, "membership.awareness_max_multiplier")
        require_int(self.gossip_nodes, "membership.gossip_nodes")
        require_int(self.retransmit_mult, "membership.retransmit_mult")
        require_int(self.max_members, "membership.max_members", minimum=2)
        require(isinstance(self.partition_fraction, int | float)
                and not isinstance(self.partition_fraction, bool)
                and 0 < self.partition_fraction <= 1, "membership.partition_fraction",
                f"must be a number in (0, 1], got {self.partition_fraction!r}")
        require_int(self.max_datagram, "membership.max_datagram", minimum=512)
        require(self.max_datagram <= 65_000, "membership.max_datagram",
                 "must be <= 65000 bytes (one UDP datagram)")

    def replace(self, **changes: Any) -> MembershipConfig:
        """Return a copy with ``changes`` applied (and validated)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def lan(cls) -> MembershipConfig:
        """Defaults for one data centre or LAN."""
        return cls()

    @classmethod
    def wan(cls) -> MembershipConfig:
        """Links across regions: memberlist's WAN timings (probe 5 s / 3 s, gossip 0.5 s
        to 4, push-pull 60 s) and longer suspicion, since round trips vary widely."""
        return cls(probe_interval=5.0, probe_timeout=3.0, suspicion_mult=6.0,
                   suspicion_max_mult=6.0, suspicion_confirmations=4, gossip_interval=0.5,
                   gossip_nodes=4, gossip_to_the_dead=60.0, push_pull_interval=60.0,
                   reconnect_interval=30.0)

    @classmethod
    def local(cls) -> MembershipConfig:
        """Tests and demos on one host: everything about four times faster than LAN."""
        return cls(probe_interval=0.2, probe_timeout=0.1, gossip_interval=0.05,
                   gossip_to_the_dead=10.0, push_pull_interval=5.0, reconnect_interval=1.0,
                   forget_left_after=30.0)


@dataclass(frozen=True, kw_only=True)
class SecurityConfig:
    """How a node's links and datagrams are protected (on by default, nothing to set)."""

    encrypt_links: bool = True
    """Seal every TCP frame after the handshake (ChaCha20-Poly1305 records, see
    :mod:`somasync.core.handshake`). The handshake itself always proves both identities
    with fresh keys; False only leaves the records that follow in clear, and only when
    the peer asks for that too. For benchmarks measuring what sealing costs; a
    deployment has no reason to turn it off."""

    seal_datagrams: bool = True
    """Seal every membership and overlay datagram to its recipient (a key only the two
    nodes can compute from their identities; XChaCha20-Poly1305; a sliding replay
    window), see :mod:`somasync.core.datagrams`. Off only in the simulator's large runs,
    where the key agreements of thousands of virtual nodes would dominate its time."""

    trust: str = "open"
    """Who may link, join and publish under which name: ``"open"`` (a name belongs to
    the first key seen with it; for development), ``"allowlist"`` (only the names and
    keys in :attr:`allowlist`) or ``"certificates"`` (only nodes presenting a
    certificate signed by one of :attr:`operator_keys`). See
    :mod:`somasync.core.trust` and the README's "Securing a mesh"."""

    allowlist: Mapping[str, bytes] | None = None
    """``allowlist`` policy: node name -> 32-byte Ed25519 public key
    (``somasync.keys.load_allowlist`` reads one from a file)."""

    operator_keys: frozenset[bytes] = frozenset()
    """``certificates`` policy: the operators' 32-byte public keys."""

    certificate: bytes = b""
    """``certificates`` policy: this node's certificate (``Certificate.encode()``; the
    ``somasync keys certify`` command writes one), presented to every peer."""

    datagram_max_age: float = 60.0
    """Seconds a sealed datagram's sender clock may differ from this node's before it is
    refused as a replay. NTP keeps hosts within milliseconds; 60 s tolerates a badly kept
    clock, and bounds how long a captured datagram could be replayed to a node that
    never heard from its sender."""

    def __post_init__(self) -> None:
        require(isinstance(self.encrypt_links, bool), "security.encrypt_links",
                 "must be a bool")
        require(isinstance(self.seal_datagrams, bool), "security.seal_datagrams",
                 "must be a bool")
        require_number(self.datagram_max_age, "security.datagram_max_age")
        require(self.trust in ("open", "allowlist", "certificates"), "security.trust",
                 f"must be 'open', 'allowlist' or 'certificates', got {self.trust!r}")
        if self.allowlist is not None:
            require(isinstance(self.allowlist, Mapping) and all(
                isinstance(name, str) and 0 < len(name.encode()) <= 255
                and isinstance(key, bytes) and len(key) == 32
                for name, key in self.allowlist.items()), "security.allowlist",
                "must map node names (1-255 bytes of UTF-8) to 32-byte public keys")
        require(isinstance(self.operator_keys, frozenset)
                 and all(isinstance(k, bytes) and len(k) == 32 for k in self.operator_keys),
                 "security.operator_keys", "must be a frozenset of 32-byte public keys")
        require(isinstance(self.certificate, bytes), "security.certificate",
                 "must be bytes (an encoded certificate)")
        if self.trust == "allowlist":
            require(bool(self.allowlist), "security.allowlist",
                     "the allowlist policy needs at least one name and key")
        if self.trust == "certificates":
            require(bool(self.operator_keys), "security.operator_keys",
                     "the certificates policy needs at least one operator key")
            require(bool(self.certificate), "security.certificate",
                     "the certificates policy needs this node's certificate")

    def replace(self, **changes: Any) -> SecurityConfig:
        """Return a copy with ``changes`` applied (and validated)."""
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True, kw_only=True)
class NodeConfig:
    """Everything a single node needs: identity, addresses, timeouts and gossip settings."""

    node_id: str = "somasync-node"
    """Human-readable node name, carried in every message this node originates as its
    ``source``. 1-255 bytes of UTF-8."""

    bind_address: str = "127.0.0.1:0"
    """``host:port`` to listen on. Port 0 lets the OS choose (read it back with
    ``node.listen_address`` after start); loopback by default so nothing is exposed
    unless asked."""

    bootstrap_peers: tuple[str, ...] = ()
    """Seeds: ``host:port`` addresses, or ``dns:NAME[:PORT]`` for every address a DNS
    name resolves to (resolved again at each retry, so members that appear later are
    found), joined through at start and retried until each is an alive member."""

    gossip: GossipConfig = field(default_factory=GossipConfig)
    """Protocol settings, see :class:`GossipConfig`."""

    membership: MembershipConfig = field(default_factory=MembershipConfig)
    """Failure detection and membership spread, see :class:`MembershipConfig`."""

    discovery: frozenset[DiscoveryMethod] = frozenset({DiscoveryMethod.GOSSIP})
    """How members are found (see :class:`DiscoveryMethod`). Gossip peer exchange by
    default; mDNS is opt-in because it announces the node to the whole LAN."""

    mdns_interfaces: tuple[str, ...] = ()
    """mDNS discovery only: IP addresses of this host's interfaces to announce and
    browse on (multicast reaches one link per interface); the node is announced at
    these addresses, all of ``bind_address``'s family. Empty: ``bind_address``'s, which
    must then be an IP address other than a wildcard (``0.0.0.0``, ``::``: the others
    could not dial it)."""

    overlay: OverlayConfig = field(default_factory=lambda: OverlayConfig())
    """The HyParView overlay that picks this node's broadcast links (gossip discovery),
    see :class:`OverlayConfig`. One rule at every size: a mesh of up to
    ``overlay.active_size + 1`` nodes (6 by default) is a full mesh; a larger one gives
    each node ``active_size`` symmetric random links, replaced from the passive view when
    membership or the transport reports one failed."""

    security: SecurityConfig = field(default_factory=SecurityConfig)
    """Link encryption and, later, trust policy, see :class:`SecurityConfig`."""

    adaptive: AdaptiveConfig = field(default_factory=lambda: AdaptiveConfig())
    """Adaptive fanout: the overlay degree, push fanout, IHAVE fanout and anti-entropy
    pacing re-derived as the estimated mesh size changes (off by default), see
    :class:`AdaptiveConfig`."""

    connect_timeout: float = 5.0
    """Seconds a TCP connect may take before it counts as failed."""

    handshake_timeout: float = 5.0
    """Seconds a new connection has to finish its handshake (prove its identity) before
    it is closed."""

    frame_timeout: float = 30.0
    """Seconds a link may hold an incomplete frame (or sealed record) before it is closed:
    a peer that trickles bytes cannot keep a connection slot. A 1 MiB frame needs only
    0.3 Mbit/s to arrive within it."""

    reconnect_initial_delay: float = 0.05
    """Seconds before the first re-dial of a lost peer; doubles per failure (with jitter)."""

    reconnect_max_delay: float = 5.0
    """Upper bound on the re-dial delay, so a healed peer is found again within seconds."""

    read_slice: int = 16 * 1024
    """Bytes of one link handled per event-loop turn (its reading pauses meanwhile):
    a neighbour that floods the node is slowed by TCP instead of delaying every other
    link's messages (``python -m somasync.bench flood`` measures it). 0 handles each read
    whole."""

    max_connections: int = 1024
    """Inbound connections (peers that dialled this node, handshakes under way included)
    held at once. When they are all taken, a newcomer is let in on probation (a few at a
    time) if some established inbound peer has a score of 0 or less (it never brought a
    message first: idle, or worse); once the newcomer's handshake succeeds, the lowest
    such peer is evicted (the most recent among equals). Peers that proved useful keep
    their slots; with none to evict the newcomer is refused (``connection_limit``).
    Outbound dials never count against it, so inbound load cannot keep this node from
    reaching its own neighbours."""

    max_connections_per_host: int = 128
    """Inbound connections from one host (IP address) held at once, handshakes under way
    included: one machine cannot take every slot. More are refused (``host_limit``)."""

    max_bundle_bytes: int = 64 * 1024 * 1024
    """The largest payload (bytes of its encoding) ``broadcast_message`` carries when it
    does not fit one frame: it travels as a bundle of signed chunks (see
    :mod:`somasync.bundle`), and receivers refuse larger bundles. A receiver holds at most
    twice this in bundles not yet complete. 64 MiB: threat-intelligence bundles of tens of
    MiB, with room for one to complete while another arrives."""

    delivery_queue_size: int = 100_000
    """Messages buffered for the application's ``messages`` iterator. When the application
    falls this far behind, further deliveries are dropped and counted in the stats."""

    event_queue_size: int = 10_000
    """Events buffered for the application's ``events`` iterator (dropped and counted
    beyond that)."""

    sign_outgoing: bool = True
    """Sign every message this node originates with its own key."""

    signing_batch_size: int = 64
    """Messages this node originates that may be signed together, under one Ed25519
    signature over a Merkle tree of their ids (1: each alone). Receivers check one
    signature per batch and a proof of ``ceil(log2(size))`` hashes per message, so a
    node publishing faster than a core verifies gets through several times faster. Only
    a node publishing faster than one message per ``signing_batch_window`` batches: a
    message that finds the signer idle is signed alone at once. A batched message grows
    by 3 + 16 x ceil(log2(batch)) bytes (51 for 8, 99 for 64) and stays verifiable,
    forwardable and repairable alone. 64 makes the signature's share of a receiver's
    work negligible next to the rest of a message's handling. At most 1,024."""

    signing_batch_window: float = 0.002
    """Seconds the first message of an unfilled batch may wait for others before the
    batch is signed as it is: the most batching adds to a message's latency. 2 ms is far
    below a WAN hop. Messages of priority 192 or more (the critical band) are never held:
    each is signed alone at once."""

    workers: int = 0
    """Worker processes (0 = everything in the caller's event loop). Each worker runs one
    event loop and verifies the messages of its share of the streams; use about one per
    core (``SynapseNodeBuilder.with_workers("auto")``)."""

    ring_capacity: int = 4 * 1024 * 1024
    """Bytes of each shared-memory ring between two processes of a sharded node. 4 MiB
    holds tens of thousands of in-flight frames; a full ring pushes back on its producer."""

    pin_workers: bool = False
    """Pin worker ``i`` to CPU ``i mod cores`` (psutil), for steadier benchmarks."""

    data_dir: str = ""
    """A directory where the node keeps its identity, what it delivered and the
    revocations it applied, so that after a restart it delivers nothing twice, keeps its
    replay protection and catches up on what it missed (see :mod:`somasync.datadir`).
    Empty: nothing is kept (a restarted node is a new node that knows nothing)."""

    def __post_init__(self) -> None:
        require(
            isinstance(self.node_id, str) and 0 < len(self.node_id.encode()) <= 255,
            "node_id",
            f"must be 1-255 bytes of UTF-8, got {self.node_id!r}",
        )
        parse_address(self.bind_address, "bind_address")
        require(isinstance(self.bootstrap_peers, tuple), "bootstrap_peers", "must be a tuple")
        for address in self.bootstrap_peers:
            parse_seed(address, "bootstrap_peers")
        require(isinstance(self.gossip, GossipConfig), "gossip", "must be a GossipConfig")
        require(isinstance(self.membership, MembershipConfig), "membership",
                 "must be a MembershipConfig")
        require(isinstance(self.discovery, frozenset)
                 and all(isinstance(m, DiscoveryMethod) for m in self.discovery),
                 "discovery", "must be a frozenset of DiscoveryMethod values")
        # Checked here, not at start: a node configured for mDNS on a host without the
        # library fails before it touches the network, like any other bad setting.
        require(DiscoveryMethod.MDNS not in self.discovery
                 or importlib.util.find_spec("zeroconf") is not None, "discovery", MDNS_EXTRA)
        require(isinstance(self.mdns_interfaces, tuple), "mdns_interfaces", "must be a tuple")
        for interface in self.mdns_interfaces:
            require(_is_ip(interface), "mdns_interfaces",
                     f"must be IP addresses of this host's interfaces, got {interface!r}")
        host = parse_address(self.bind_address, "bind_address")[0]
        # The node's one UDP socket reaches one address family: what mDNS announces and
        # finds must be of it.
        families = {ipaddress.ip_address(a).version
                    for a in (*self.mdns_interfaces, *([host] if _is_ip(host) else []))}
        require(len(families) <= 1, "mdns_interfaces",
                 "must be of one address family, bind_address's")
        if DiscoveryMethod.MDNS in self.discovery and not self.mdns_interfaces:
            require(_is_ip(host) and not ipaddress.ip_address(host).is_unspecified,
                     "mdns_interfaces", f"mDNS announces the address the node is bound to; "
                     f"bound to {host!r}, name the interfaces (their IP addresses) to "
                     f"announce instead")
        require(isinstance(self.overlay, OverlayConfig), "overlay", "must be an OverlayConfig")
        require(isinstance(self.security, SecurityConfig), "security",
                 "must be a SecurityConfig")
        require(isinstance(self.adaptive, AdaptiveConfig), "adaptive",
                "must be an AdaptiveConfig")
        if self.adaptive.enabled:
            require(self.adaptive.max_anti_entropy_interval
                    >= self.gossip.anti_entropy_interval,
                    "adaptive.max_anti_entropy_interval",
                    f"must be >= gossip.anti_entropy_interval "
                    f"({self.gossip.anti_entropy_interval!r}), the pacing's lower bound")
        require_number(self.connect_timeout, "connect_timeout")
        require_number(self.handshake_timeout, "handshake_timeout")
        require_number(self.frame_timeout, "frame_timeout")
        require_number(self.reconnect_initial_delay, "reconnect_initial_delay")
        require_number(self.reconnect_max_delay, "reconnect_max_delay")
        require(
            self.reconnect_max_delay >= self.reconnect_initial_delay,
            "reconnect_max_delay",
            "must be >= reconnect_initial_delay",
        )
        require_int(self.max_connections, "max_connections")
        require_int(self.max_connections_per_host, "max_connections_per_host")
        require_int(self.read_slice, "read_slice", minimum=0)
        require_int(self.delivery_queue_size, "delivery_queue_size")
        require_int(self.max_bundle_bytes, "max_bundle_bytes")
        require_int(self.event_queue_size, "event_queue_size")
        require_int(self.signing_batch_size, "signing_batch_size")
        require(self.signing_batch_size <= MAX_SIGNING_BATCH, "signing_batch_size",
                f"must be at most {MAX_SIGNING_BATCH}, got {self.signing_batch_size!r}")
        require_number(self.signing_batch_window, "signing_batch_window", allow_zero=True)
        require(
            isinstance(self.workers, int) and not isinstance(self.workers, bool)
            and self.workers >= 0,
            "workers",
            f"must be an integer >= 0, got {self.workers!r}",
        )
        require_int(self.ring_capacity, "ring_capacity", minimum=64 * 1024)
        require(self.ring_capacity % 8 == 0, "ring_capacity", "must be a multiple of 8")
        require(isinstance(self.pin_workers, bool), "pin_workers", "must be a bool")
        require(isinstance(self.data_dir, str), "data_dir", "must be a path (str)")

    def replace(self, **changes: Any) -> NodeConfig:
        """Return a copy with ``changes`` applied (and validated)."""
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True, kw_only=True)
class OverlayConfig:
    """HyParView peer sampling (:class:`somasync.core.overlay.HyParView`): the small,
    symmetric random overlay that picks every node's broadcast links (gossip discovery),
    in real nodes and in the simulator alike.

    Defaults follow the paper (Leitao, Pereira, Rodrigues, DSN 2007), sized for meshes of
    up to about 10,000 nodes: each node keeps O(log N) state (5 neighbours and 30
    backup addresses), and the overlay stays connected after most nodes fail at once.
    One rule at every size: a mesh of up to ``active_size + 1`` nodes is a full mesh
    (every node is every other's neighbour); a larger one gives each node
    ``active_size`` random neighbours. SWIM membership feeds the passive view (members
    that join or come back) and repairs the active one (a failed member is replaced at
    once), so a lost JOIN or a dry passive view does not isolate a node.
    """

    active_size: int = 5
    """Neighbours in the *active view* (symmetric broadcast links). The paper uses
    fanout + 1 with fanout = log10(N): 5 suits meshes up to 10,000 nodes. With adaptive
    fanout (``NodeConfig.adaptive``) the node derives it from its estimate of the mesh's
    size instead, within ``adaptive.degree_bounds``."""

    passive_size: int = 30
    """Backup addresses in the *passive view*, tried when a neighbour fails. The paper
    sizes it k x (log10(N) + 1) with k = 6: 30 for 10,000 nodes."""

    active_walk_length: int = 6
    """Hops a JOIN's FORWARD_JOIN random walk and a SHUFFLE walk take (the paper's ARWL,
    6): long enough to leave the joiner's neighbourhood. At most 255 (one byte)."""

    passive_walk_length: int = 3
    """Hop count at which a FORWARD_JOIN walk also puts the joiner into a passive view
    (the paper's PRWL, 3). Must not exceed ``active_walk_length``."""

    shuffle_interval: float = 10.0
    """Seconds between two shuffles started by this node (one small datagram walking up
    to ``active_walk_length`` hops, and one reply). The paper shuffles "periodically";
    10 s keeps passive views fresh for next to no traffic."""

    shuffle_active: int = 3
    """Active-view entries one shuffle carries (the paper's ka, 3)."""

    shuffle_passive: int = 4
    """Passive-view entries one shuffle carries (the paper's kp, 4)."""

    neighbor_timeout: float = 1.0
    """Seconds to wait for a NEIGHBOR_REPLY (or a JOIN's acknowledgement) before the peer
    counts as unreachable: it leaves the passive view and another entry is tried. A LAN
    round trip is well under a millisecond; 1 s tolerates a loaded host."""

    max_message: int = 1400
    """Largest overlay datagram in bytes, sent or accepted; larger input is refused before
    decoding. Fits a 1500-byte Ethernet MTU, like ``MembershipConfig.max_datagram``;
    shuffles carry fewer entries if long addresses would exceed it. At least 576 (the
    smallest datagram IPv4 promises to carry), which fits any fixed-size message."""

    reconnect_interval: float = 2.0
    """Seconds between two reconnect attempts of this node: while it remembers neighbours
    whose link failed (``neighbour_down``), it asks one of them every interval to become
    its neighbour again (high priority when its active view is full), which is what
    re-merges the two sides of a healed partition. 2 s lets a healed mesh grow links
    across the former cut within one anti-entropy interval of 2 s, for one small datagram
    per interval, and only while something is left to retry."""

    reconnect_timeout: float = 300.0
    """Seconds a neighbour whose link failed is remembered and retried (at most
    ``passive_size`` of them, the oldest forgotten first). Five minutes covers most
    partitions and restarts, like the asyncio node's redialling of failed members; 0
    turns reconnecting off. Must be 0 or at least ``reconnect_interval``."""

    def __post_init__(self) -> None:
        require_int(self.active_size, "overlay.active_size")
        require_int(self.passive_size, "overlay.passive_size")
        require_int(self.active_walk_length, "overlay.active_walk_length")
        require(self.active_walk_length <= 255, "overlay.active_walk_length",
                 "must be <= 255 (one byte on the wire)")
        require_int(self.passive_walk_length, "overlay.passive_walk_length", minimum=0)
        require(self.passive_walk_length <= self.active_walk_length,
                 "overlay.passive_walk_length", "must be <= overlay.active_walk_length")
        require_number(self.shuffle_interval, "overlay.shuffle_interval")
        require_int(self.shuffle_active, "overlay.shuffle_active", minimum=0)
        require_int(self.shuffle_passive, "overlay.shuffle_passive", minimum=0)
        require(self.shuffle_active + self.shuffle_passive < 255, "overlay.shuffle_passive",
                 "shuffle_active + shuffle_passive must be < 255 (one count byte)")
        require_number(self.neighbor_timeout, "overlay.neighbor_timeout")
        require_int(self.max_message, "overlay.max_message", minimum=576)
        require(self.max_message <= 65_000, "overlay.max_message",
                 "must be <= 65000 bytes (one UDP datagram)")
        require_number(self.reconnect_interval, "overlay.reconnect_interval")
        require_number(self.reconnect_timeout, "overlay.reconnect_timeout", allow_zero=True)
        require(self.reconnect_timeout == 0
                 or self.reconnect_timeout >= self.reconnect_interval,
                 "overlay.reconnect_timeout",
                 "must be 0 (off) or >= overlay.reconnect_interval")

    def replace(self, **changes: Any) -> OverlayConfig:
        """Return a copy with ``changes`` applied (and validated)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def lan(cls) -> OverlayConfig:
        """Defaults for one data centre or LAN (the paper's values)."""
        return cls()

    @classmethod
    def local(cls) -> OverlayConfig:
        """Tests and demos on one host: shuffle every second, give up on a silent peer
        after 0.25 s."""
        return cls(shuffle_interval=1.0, neighbor_timeout=0.25)


ADAPTIVE_MAX_DEGREE = 1000
"""The largest degree or fanout a bound may name (the original's ``max_fanout`` bound)."""


def _require_bounds(value: Any, field_name: str) -> None:
    require(isinstance(value, tuple) and len(value) == 2, field_name,
            f"must be a (minimum, maximum) tuple, got {value!r}")
    low, high = value
    require_int(low, field_name)
    require_int(high, field_name, minimum=low)
    require(high <= ADAPTIVE_MAX_DEGREE, field_name, f"must be <= {ADAPTIVE_MAX_DEGREE}")


@dataclass(frozen=True, kw_only=True)
class AdaptiveConfig:
    """Adaptive fanout and epidemic tuning: degrees that follow the estimated mesh size.

    With ``enabled``, a node estimates how many nodes its mesh has
    (:mod:`somasync.core.sizing`: SWIM's live members where membership runs, else a
    HyperLogLog sketch gossiped between overlay neighbours) and derives from that
    estimate N and ``target_delivery_probability`` p, each within its bounds:

    * the overlay degree (``OverlayConfig.active_size``: the links the broadcast tree
      makes its eager and lazy links of) and the push fanout (``GossipConfig.fanout``):
      ``ceil(ln N - ln(-ln p))``;
    * the IHAVE fanout (lazy links each message is announced to) from the same formula;
    * the anti-entropy interval: ``gossip.anti_entropy_interval`` scaled by
      ``ceil(log2(N / 32)) + 1`` above 32 nodes (memberlist's push-pull scale), at most
      ``max_anti_entropy_interval``.

    The derivation is redone only when the estimate has moved by more than
    ``hysteresis`` from the one the values in force were derived for, and
    ``settle_time`` after the last change. Off by default: a fixed degree of 5 is what
    the measured defaults rest on, and a node whose degree changes opens and closes
    links; the enterprise presets (``EnterpriseGossipConfig.with_adaptive_fanout``,
    ``for_large_networks``) turn it on.
    """

    enabled: bool = False
    """Derive the degrees from the estimated mesh size (False: the fixed settings)."""

    target_delivery_probability: float = 0.95
    """p: the probability that one round of epidemic spread (the first flood of a
    stream over the overlay, or push gossip) reaches every node, before any repair.
    0.95 is the original's default; each tenfold smaller ``-ln p`` adds about 2.3 to
    every derived degree."""

    degree_bounds: tuple[int, int] = (5, 10)
    """(minimum, maximum) overlay degree (``OverlayConfig.active_size``). 5, today's
    fixed degree, is the floor; 10 keeps per-node links, IHAVE traffic and tree state
    to twice that at 10,000 nodes and more (the formula asks 13 there)."""

    fanout_bounds: tuple[int, int] = (4, 12)
    """(minimum, maximum) push fanout (``GossipConfig.fanout``, push forwarding only);
    4 is the fixed default."""

    ihave_bounds: tuple[int, int] = (4, 16)
    """(minimum, maximum) IHAVE fanout: lazy links each message is announced to (tree
    forwarding). Binds only when the degree exceeds it: a node then announces each
    message to that many of its lazy links, in rotation, instead of all of them."""

    max_anti_entropy_interval: float = 10.0
    """Longest anti-entropy interval the pacing may choose (seconds); its shortest is
    ``gossip.anti_entropy_interval``. Holes are given up after ``gap_timeout``, which
    should stay several of these intervals."""

    hysteresis: float = 0.25
    """Relative change of the estimate (0.25: 25 %) from the one the values in force were
    derived for before they are derived again. Above the estimator's noise (about 7 %),
    and one step of any derived degree is a change of ln N by 1 (a factor of e)."""

    settle_time: float = 15.0
    """Seconds after a change before the next one: a mesh still growing is followed in
    steps at most this often, not at every new estimate."""

    initial_estimate: int = 1
    """The mesh size the values are derived for at the start, before the node has an
    estimate of its own (the enterprise configuration's ``expected_nodes``); the first
    estimate-driven change follows ``settle_time`` later. 1: the lower bounds."""

    sketch_interval: float = 1.0
    """Seconds between two sends of the size sketch to the overlay neighbours that lack
    what it holds (membership off only). An estimate grows to the mesh's size within
    about the overlay's diameter times this."""

    sketch_epoch: float = 120.0
    """Seconds of wall clock per sketch epoch: each epoch counts anew, so a node that
    left stops being counted one to two epochs later. At least 8 sketch intervals."""

    def __post_init__(self) -> None:
        require(isinstance(self.enabled, bool), "adaptive.enabled", "must be a bool")
        p = self.target_delivery_probability
        require(isinstance(p, int | float) and not isinstance(p, bool) and 0 < p < 1,
                "adaptive.target_delivery_probability", f"must be in (0, 1), got {p!r}")
        _require_bounds(self.degree_bounds, "adaptive.degree_bounds")
        _require_bounds(self.fanout_bounds, "adaptive.fanout_bounds")
        _require_bounds(self.ihave_bounds, "adaptive.ihave_bounds")
        require_number(self.max_anti_entropy_interval, "adaptive.max_anti_entropy_interval")
        require_number(self.hysteresis, "adaptive.hysteresis", unit="fraction")
        require_int(self.initial_estimate, "adaptive.initial_estimate")
        require_number(self.settle_time, "adaptive.settle_time", allow_zero=True)
        require_number(self.sketch_interval, "adaptive.sketch_interval")
        require_number(self.sketch_epoch, "adaptive.sketch_epoch")
        require(self.sketch_epoch >= 8 * self.sketch_interval, "adaptive.sketch_epoch",
                "must be at least 8 x adaptive.sketch_interval (a sketch converges "
                "within about the overlay's diameter in intervals)")

    def replace(self, **changes: Any) -> AdaptiveConfig:
        """Return a copy with ``changes`` applied (and validated)."""
        return dataclasses.replace(self, **changes)
