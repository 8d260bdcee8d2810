"""``SynapseNodeBuilder``: the way to configure and create a node."""

from __future__ import annotations

import os
from typing import Literal

import nacl.signing

from somasync.aio.channel import Stream
from somasync.aio.node import Event, SynapseNode
from somasync.config import (
    DiscoveryConfig,
    DiscoveryMethod,
    GossipConfig,
    MembershipConfig,
    NodeConfig,
    OverlayConfig,
    SecurityConfig,
    parse_seed,
)
from somasync.core.crypto import Identity
from somasync.datadir import kept_identity
from somasync.enterprise import EnterpriseGossipConfig
from somasync.errors import ConfigError
from somasync.message import Message

__all__ = ["SynapseNodeBuilder"]


class SynapseNodeBuilder:
    """Fluent configuration of a node; ``build()`` returns ``(node, messages, events)``.

    Every ``with_*`` method validates its argument at once and raises
    :class:`~somasync.errors.ConfigError` naming the field.
    """

    def __init__(self) -> None:
        self._config = NodeConfig()
        self._node_id_set = False
        self._signing_key: Identity | None = None

    def with_node_id(self, node_id: str) -> SynapseNodeBuilder:
        """The node's name, carried as ``source`` in every message it originates
        (1-255 bytes of UTF-8); ``node-`` and its key's first bytes when not given."""
        self._config = self._config.replace(node_id=node_id)
        self._node_id_set = True
        return self

    def with_bind_address(self, address: str) -> SynapseNodeBuilder:
        """``host:port`` to listen on; port 0 picks a free port."""
        self._config = self._config.replace(bind_address=address)
        return self

    def with_gossip_config(self, gossip: GossipConfig) -> SynapseNodeBuilder:
        """How messages spread and are remembered (see
        :class:`~somasync.config.GossipConfig`)."""
        self._config = self._config.replace(gossip=gossip)
        return self

    def with_security_config(self, security: SecurityConfig) -> SynapseNodeBuilder:
        """Link encryption and trust (see :class:`~somasync.config.SecurityConfig`)."""
        self._config = self._config.replace(security=security)
        return self

    def with_max_connections(self, count: int) -> SynapseNodeBuilder:
        """Inbound connections held at once (``NodeConfig.max_connections``)."""
        self._config = self._config.replace(max_connections=count)
        return self

    def with_handshake_timeout(self, seconds: float) -> SynapseNodeBuilder:
        """Seconds a new connection has to finish its handshake (``NodeConfig``)."""
        self._config = self._config.replace(handshake_timeout=seconds)
        return self

    def with_membership_config(self, membership: MembershipConfig) -> SynapseNodeBuilder:
        """Failure-detection timings (``MembershipConfig.lan()``, ``.wan()``, ``.local()``)."""
        self._config = self._config.replace(membership=membership)
        return self

    def with_overlay_config(self, overlay: OverlayConfig) -> SynapseNodeBuilder:
        """The overlay that picks broadcast links (``OverlayConfig.lan()``, ``.local()``)."""
        self._config = self._config.replace(overlay=overlay)
        return self

    def with_enterprise_config(self, enterprise: EnterpriseGossipConfig
                               ) -> SynapseNodeBuilder:
        """Gossip settings from an :class:`~somasync.enterprise.EnterpriseGossipConfig`:
        its ``to_gossip_config()`` becomes the node's gossip settings and its derived
        degree, if any, the overlay's ``active_size`` (see
        :meth:`EnterpriseGossipConfig.apply`). Replaces an earlier
        ``with_gossip_config``; a later ``with_overlay_config`` replaces the degree."""
        if not isinstance(enterprise, EnterpriseGossipConfig):
            raise ConfigError("enterprise", "must be an EnterpriseGossipConfig")
        self._config = enterprise.apply(self._config)
        return self

    def with_mesh_config(self, *configs: OverlayConfig | MembershipConfig
                         ) -> SynapseNodeBuilder:
        """The mesh's topology and health checks (the original's ``MeshConfig``): an
        :class:`~somasync.config.OverlayConfig` (which links each node keeps: the
        original's ``max_connections``/``min_connections``), a
        :class:`~somasync.config.MembershipConfig` (failure detection and partitions:
        its ``health_check_interval`` and ``partition_threshold``), or both.

        The original's route settings (``route_timeout``, ``route_cache_ttl``,
        ``max_route_hops``) have no counterpart: every message reaches every node, no
        route is looked up."""
        if not configs:
            raise ConfigError("mesh", "give an OverlayConfig, a MembershipConfig or both")
        for config in configs:
            if isinstance(config, OverlayConfig):
                self.with_overlay_config(config)
            elif isinstance(config, MembershipConfig):
                self.with_membership_config(config)
            else:
                raise ConfigError("mesh", f"must be an OverlayConfig or a MembershipConfig, "
                                          f"got {type(config).__name__}")
        return self

    def with_discovery_config(self, discovery: DiscoveryConfig) -> SynapseNodeBuilder:
        """Discovery methods, seeds and mDNS interfaces in one object (replaces earlier
        ``with_discovery``, ``with_auto_discovery`` and ``add_bootstrap_peer`` calls);
        see :class:`~somasync.config.DiscoveryConfig`."""
        if not isinstance(discovery, DiscoveryConfig):
            raise ConfigError("discovery", "must be a DiscoveryConfig")
        self._config = self._config.replace(
            discovery=discovery.methods, bootstrap_peers=discovery.bootstrap_peers,
            mdns_interfaces=discovery.mdns_interfaces)
        return self

    def with_message_buffer_size(self, size: int) -> SynapseNodeBuilder:
        """Messages buffered for the application's ``messages`` stream
        (``NodeConfig.delivery_queue_size``): beyond it, deliveries are dropped and
        counted (``DeliveryDropped``). The original's ``message_buffer_size`` was never
        read; its channels were unbounded."""
        self._config = self._config.replace(delivery_queue_size=size)
        return self

    def with_discovery(self, *methods: DiscoveryMethod | str) -> SynapseNodeBuilder:
        """How members are found: any of ``"static"``, ``"gossip"`` (the default),
        ``"mdns"`` (see :class:`~somasync.config.DiscoveryMethod`)."""
        try:
            chosen = frozenset(DiscoveryMethod(m) for m in methods)
        except ValueError as exc:
            raise ConfigError("discovery", str(exc)) from None
        if not chosen:
            raise ConfigError("discovery", "name at least one method")
        self._config = self._config.replace(discovery=chosen)
        return self

    def with_auto_discovery(self, enabled: bool = True) -> SynapseNodeBuilder:
        """True: find members without configuring them, by gossip peer exchange from any
        one seed (the default). False: talk only to the bootstrap peers and peers added
        with ``add_peer``."""
        if enabled:
            self._config = self._config.replace(
                discovery=frozenset({DiscoveryMethod.GOSSIP}))
        else:
            self._config = self._config.replace(
                discovery=frozenset({DiscoveryMethod.STATIC}))
        return self

    def add_bootstrap_peer(self, address: str) -> SynapseNodeBuilder:
        """A seed, ``host:port`` or ``dns:NAME[:PORT]`` (every address the name resolves
        to, resolved again at each retry): membership joins the mesh through it (any one
        reachable seed is enough). With static discovery it is also dialled and
        re-dialled after failures."""
        parse_seed(address, "bootstrap_peers")
        self._config = self._config.replace(
            bootstrap_peers=(*self._config.bootstrap_peers, address))
        return self

    def with_signing_key(self, key: nacl.signing.SigningKey | bytes) -> SynapseNodeBuilder:
        """The node's Ed25519 identity (a SigningKey or its 32-byte seed); a fresh key
        is generated when none is given."""
        try:
            self._signing_key = Identity(key)
        except (TypeError, ValueError) as exc:
            raise ConfigError("signing_key", str(exc)) from None
        return self

    def with_data_dir(self, path: str | os.PathLike[str] | None) -> SynapseNodeBuilder:
        """Keep the node's identity, what it delivered and the revocations it applied in
        ``path`` (created, mode 0700), so a node restarted with the same directory
        delivers nothing twice and catches up on what it missed; None keeps nothing
        (the default). See :mod:`somasync.datadir`."""
        self._config = self._config.replace(data_dir="" if path is None else os.fspath(path))
        return self

    def with_workers(self, workers: int | Literal["auto"]) -> SynapseNodeBuilder:
        """Worker processes; 0 (the default) runs the node in the caller's event loop,
        ``"auto"`` starts one per usable core. The caller's process becomes the
        supervisor that shards peers and message streams over the workers."""
        if workers == "auto":
            workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
                else (os.cpu_count() or 1)
        self._config = self._config.replace(workers=workers)
        return self

    def with_cpu_pinning(self, pin: bool = True) -> SynapseNodeBuilder:
        """Pin worker ``i`` to CPU ``i mod cores`` (steadier benchmarks, no migrations)."""
        self._config = self._config.replace(pin_workers=pin)
        return self

    def with_batch_signing(self, size: int = 64, window: float = 0.002) -> SynapseNodeBuilder:
        """Sign this node's messages ``size`` to one signature, waiting at most ``window``
        seconds for a batch to fill (``NodeConfig.signing_batch_size`` and
        ``signing_batch_window``); ``size`` 1 signs each alone."""
        self._config = self._config.replace(signing_batch_size=size,
                                            signing_batch_window=window)
        return self

    def with_config(self, config: NodeConfig) -> SynapseNodeBuilder:
        """Replace the whole configuration at once."""
        if not isinstance(config, NodeConfig):
            raise ConfigError("config", "must be a NodeConfig")
        self._config = config
        self._node_id_set = True
        return self

    @property
    def config(self) -> NodeConfig:
        """The configuration ``build()`` would use now."""
        return self._config

    def build(self) -> tuple[SynapseNode, Stream[Message], Stream[Event]]:
        """Create the node and its two streams (messages delivered, events)."""
        config = self._config
        # The data directory's key, when it has one, so the node stays the same member.
        identity = kept_identity(config.data_dir, self._signing_key) if config.data_dir \
            else self._signing_key or Identity.generate()
        if not self._node_id_set:
            config = config.replace(node_id="node-" + identity.public_key[:6].hex())
        messages: Stream[Message] = Stream(config.delivery_queue_size)
        events: Stream[Event] = Stream(config.event_queue_size)
        node = SynapseNode(config, identity, messages, events)
        return node, messages, events
