"""The original's configuration API on real settings: ``EnterpriseGossipConfig``, the
original ``GossipConfig`` field names, the builder's ``with_*`` additions, the
``priority`` and ``ttl`` constants and ``Message.estimated_size``."""

from __future__ import annotations

import math
from datetime import timedelta

import pytest

import somasync
from somasync import (
    ConfigError,
    DiscoveryConfig,
    DiscoveryMethod,
    EnterpriseGossipConfig,
    GossipConfig,
    MembershipConfig,
    Message,
    MessageType,
    OverlayConfig,
    SynapseNodeBuilder,
    priority,
    ttl,
)
from somasync.core import wire
from somasync.core.crypto import Identity
from somasync.enterprise import epidemic_degree

# --- EnterpriseGossipConfig --------------------------------------------------------------


def test_epidemic_degree_is_ln_n_plus_c() -> None:
    # exp(-exp(-c)) = p  =>  c = -ln(-ln p)
    assert epidemic_degree(1000, 0.95) == math.ceil(math.log(1000) - math.log(-math.log(0.95)))
    assert epidemic_degree(1000, 0.95) == 10
    assert epidemic_degree(1000, 0.999) == 14
    assert epidemic_degree(10_000, 0.999) == 17
    assert epidemic_degree(1, 0.5) == 1
    with pytest.raises(ConfigError, match="target_delivery_probability"):
        epidemic_degree(10, 1.0)


def test_threat_intel_preset_sets_real_knobs() -> None:
    config = EnterpriseGossipConfig.for_threat_intel()
    gossip = config.to_gossip_config()
    default = GossipConfig()
    assert gossip.require_signatures
    assert gossip.max_clock_skew < default.max_clock_skew
    assert gossip.lazy_timeout < default.lazy_timeout
    assert gossip.anti_entropy_interval < default.anti_entropy_interval
    assert gossip.max_send_rate == 5_000_000
    assert gossip.anti_entropy_batch == 25
    assert gossip.fanout == config.degree() == 14  # 1,000 nodes at p = 0.999, within 4-15
    assert config.to_overlay_config().active_size == 14


def test_large_networks_preset_sets_real_knobs() -> None:
    config = EnterpriseGossipConfig.for_large_networks()
    gossip = config.to_gossip_config()
    assert gossip.forwarding == "tree"
    assert gossip.max_send_rate > 0
    assert 0 < gossip.max_link_send_rate < gossip.max_send_rate
    assert gossip.anti_entropy_interval > GossipConfig().anti_entropy_interval
    assert config.expected_nodes == 10_000
    assert config.degree() == 10  # 13 at p = 0.95, clamped to 5-10


def test_readme_chain_of_the_original() -> None:
    config = (EnterpriseGossipConfig.for_threat_intel()
              .with_adaptive_fanout(10, 50)
              .with_priority_routing()
              .with_smart_routing()
              .with_bandwidth_limit(100_000_000)
              .with_batch_size(100)
              .with_epidemic_tuning(0.9))
    gossip = config.to_gossip_config()
    assert config.fanout_bounds == (10, 50)
    assert gossip.max_send_rate == 100_000_000
    assert gossip.anti_entropy_batch == 100
    assert config.target_delivery_probability == 0.9
    assert config.degree() == 10  # epidemic_degree(1000, 0.9) = 10, within 10-50
    large = EnterpriseGossipConfig.for_large_networks().with_adaptive_fanout(50, 200)
    assert large.degree() == 50
    assert large.with_bandwidth_limit(1_000_000_000).to_gossip_config().max_send_rate \
        == 1_000_000_000


def test_always_on_methods_return_an_equal_config() -> None:
    config = EnterpriseGossipConfig.builder()
    assert config.with_priority_routing() == config
    assert config.with_smart_routing() == config
    assert config.degree() is None
    assert config.to_gossip_config() == GossipConfig()
    assert config.to_overlay_config() == OverlayConfig()


def test_one_argument_forms_of_the_crate() -> None:
    config = EnterpriseGossipConfig.with_base(GossipConfig(fanout=3)).with_adaptive_fanout(15)
    assert config.fanout_bounds == (3, 15)
    assert config.with_expected_nodes(10).degree() == 6  # ceil(ln 10 + 2.97), p = 0.95
    assert config.with_expected_nodes(1_000_000).degree() == 15
    tuned = EnterpriseGossipConfig().with_epidemic_tuning(0.99).with_expected_nodes(100)
    assert tuned.degree() == epidemic_degree(100, 0.99) == 10


def test_per_link_bandwidth_limit() -> None:
    gossip = EnterpriseGossipConfig().with_bandwidth_limit(
        10_000_000, per_link=1_000_000).to_gossip_config()
    assert (gossip.max_send_rate, gossip.max_link_send_rate) == (10_000_000, 1_000_000)


@pytest.mark.parametrize(("make", "field"), [
    (lambda: EnterpriseGossipConfig().with_adaptive_fanout(10, 5), "fanout_bounds"),
    (lambda: EnterpriseGossipConfig().with_adaptive_fanout(0, 5), "fanout_bounds"),
    (lambda: EnterpriseGossipConfig().with_adaptive_fanout(1, 5000), "fanout_bounds"),
    (lambda: EnterpriseGossipConfig().with_adaptive_fanout(), "fanout_bounds"),
    (lambda: EnterpriseGossipConfig().with_epidemic_tuning(1.5), "target_delivery_probability"),
    (lambda: EnterpriseGossipConfig().with_epidemic_tuning(0.0), "target_delivery_probability"),
    (lambda: EnterpriseGossipConfig().with_bandwidth_limit(-1), "gossip.max_send_rate"),
    (lambda: EnterpriseGossipConfig().with_batch_size(0), "gossip.anti_entropy_batch"),
    (lambda: EnterpriseGossipConfig().with_expected_nodes(0), "expected_nodes"),
])
def test_bad_values_name_their_field(make: object, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        make()  # type: ignore[operator]
    assert info.value.field == field


def test_readmes_two_argument_epidemic_tuning_is_refused() -> None:
    with pytest.raises(ConfigError, match="one number") as info:
        EnterpriseGossipConfig().with_epidemic_tuning(0.1, 0.9)
    assert info.value.field == "target_delivery_probability"


def test_builder_applies_an_enterprise_config() -> None:
    config = EnterpriseGossipConfig.for_large_networks().with_adaptive_fanout(6, 8)
    node = SynapseNodeBuilder().with_enterprise_config(config).config
    assert node.gossip == config.to_gossip_config()
    assert node.overlay.active_size == 8
    assert node.overlay.passive_size == OverlayConfig().passive_size
    with pytest.raises(ConfigError, match="enterprise"):
        SynapseNodeBuilder().with_enterprise_config(GossipConfig())  # type: ignore[arg-type]


# --- the original GossipConfig field names -------------------------------------------------


def test_sync_interval_is_anti_entropy_interval() -> None:
    assert GossipConfig(sync_interval=30.0).anti_entropy_interval == 30.0
    assert GossipConfig(sync_interval=timedelta(minutes=5)).anti_entropy_interval == 300.0
    config = GossipConfig(sync_interval=7.0, fanout=5)
    assert config.replace(fanout=6).anti_entropy_interval == 7.0
    assert config.replace(anti_entropy_interval=1.0).anti_entropy_interval == 1.0
    with pytest.raises(ConfigError) as info:
        GossipConfig(sync_interval=0)
    assert info.value.field == "gossip.sync_interval"


@pytest.mark.parametrize(("name", "replacement"), [
    ("gossip_interval", "MembershipConfig.probe_interval"),
    ("network_timeout", "NodeConfig.connect_timeout"),
])
def test_original_fields_without_counterpart_say_what_replaced_them(
        name: str, replacement: str) -> None:
    with pytest.raises(ConfigError) as info:
        GossipConfig(**{name: timedelta(seconds=15)})  # type: ignore[arg-type]
    assert info.value.field == f"gossip.{name}"
    assert replacement in str(info.value)


def test_the_originals_basic_configuration_fields_exist() -> None:
    config = GossipConfig(fanout=5, max_message_age=1800.0, max_stored_messages=10_000,
                          max_hops=5)
    assert (config.fanout, config.max_message_age, config.max_stored_messages,
            config.max_hops) == (5, 1800.0, 10_000, 5)


# --- builder additions ----------------------------------------------------------------------


def test_with_mesh_config_takes_overlay_and_membership() -> None:
    overlay, membership = OverlayConfig(active_size=7), MembershipConfig.local()
    config = SynapseNodeBuilder().with_mesh_config(overlay, membership).config
    assert (config.overlay, config.membership) == (overlay, membership)
    with pytest.raises(ConfigError, match="mesh"):
        SynapseNodeBuilder().with_mesh_config(GossipConfig())  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="mesh"):
        SynapseNodeBuilder().with_mesh_config()


def test_with_discovery_config_sets_methods_and_seeds() -> None:
    discovery = DiscoveryConfig(methods=frozenset({DiscoveryMethod.STATIC}),
                                bootstrap_peers=("127.0.0.1:7000", "dns:seeds.local"))
    config = SynapseNodeBuilder().add_bootstrap_peer("127.0.0.1:1") \
        .with_discovery_config(discovery).config
    assert config.discovery == frozenset({DiscoveryMethod.STATIC})
    assert config.bootstrap_peers == ("127.0.0.1:7000", "dns:seeds.local")
    with pytest.raises(ConfigError, match=r"discovery\.bootstrap_peers"):
        DiscoveryConfig(bootstrap_peers=("no port",))
    with pytest.raises(ConfigError, match=r"discovery\.methods"):
        DiscoveryConfig(methods=frozenset())


def test_with_message_buffer_size_bounds_the_messages_stream() -> None:
    builder = SynapseNodeBuilder().with_message_buffer_size(3)
    assert builder.config.delivery_queue_size == 3
    _node, messages, _events = builder.build()
    assert [messages.put_nowait(Message(MessageType.Data(str(i)), "x"))
            for i in range(4)] == [True, True, True, False]
    assert messages.dropped == 1
    with pytest.raises(ConfigError, match="delivery_queue_size"):
        SynapseNodeBuilder().with_message_buffer_size(0)


# --- constants and sizes --------------------------------------------------------------------


def test_priority_and_ttl_constants_are_the_originals() -> None:
    assert (priority.CRITICAL, priority.HIGH, priority.NORMAL, priority.LOW,
            priority.BACKGROUND) == (255, 192, 128, 64, 0)
    assert (ttl.IMMEDIATE, ttl.SHORT, ttl.MEDIUM, ttl.LONG, ttl.PERSISTENT) == (
        60, 300, 3600, 86_400, 604_800)
    message = Message(MessageType.Data("x"), "a")
    assert (message.priority, message.ttl) == (priority.NORMAL, ttl.MEDIUM)
    assert somasync.priority is priority


def test_estimated_size_is_the_frames_size() -> None:
    identity = Identity(b"k" * 32)
    message = Message(MessageType.Structured({"temperature": "85.2", "unit": "celsius"}),
                      "sensor").with_header("site", "lab")
    signed = message.sign_with_ed25519(identity)
    frame = wire.encode_message_frame(signed.to_envelope(), hops=0)
    assert signed.estimated_size() == len(frame)
    assert message.estimated_size() == len(frame) - wire.SIGNATURE_SIZE
    bigger = Message(MessageType.Binary(b"\0" * 1000), "sensor")
    assert bigger.estimated_size() - Message(MessageType.Binary(b""), "sensor") \
        .estimated_size() == 1000
