"""Invalid configuration raises ConfigError naming the field; presets are valid."""

from __future__ import annotations

import math
from typing import Any

import pytest

from somasync import (
    ConfigError,
    DiscoveryMethod,
    GossipConfig,
    MembershipConfig,
    NodeConfig,
    SynapseNodeBuilder,
)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("fanout", 0),
        ("fanout", 2.5),
        ("fanout", True),
        ("max_hops", 256),
        ("seen_cache_size", -1),
        ("seen_ttl", 0),
        ("seen_ttl", math.inf),
        ("max_message_age", -5.0),
        ("anti_entropy_interval", math.nan),
        ("max_frame", 10),
        ("max_frame", 2**40),
        ("link_queue_bytes", 100),
        ("require_signatures", "yes"),
        ("trusted_keys", frozenset({b"short"})),
        ("max_clock_skew", -1),
    ],
)
def test_gossip_config_names_the_bad_field(field: str, value: Any) -> None:
    with pytest.raises(ConfigError) as caught:
        GossipConfig(**{field: value})
    assert caught.value.field == f"gossip.{field}"
    assert f"gossip.{field}" in str(caught.value)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("node_id", ""),
        ("node_id", "x" * 256),
        ("bind_address", "no-port"),
        ("bind_address", "127.0.0.1:70000"),
        ("bootstrap_peers", ("127.0.0.1:abc",)),
        ("connect_timeout", 0),
        ("reconnect_max_delay", 0.001),
        ("max_connections", 0),
        ("workers", -1),
    ],
)
def test_node_config_names_the_bad_field(field: str, value: Any) -> None:
    with pytest.raises(ConfigError) as caught:
        NodeConfig(**{field: value})
    assert caught.value.field == field


def test_presets_are_valid_and_differ() -> None:
    lan, wan, local = GossipConfig.lan(), GossipConfig.wan(), GossipConfig.local()
    assert lan == GossipConfig()
    assert wan.anti_entropy_interval > lan.anti_entropy_interval > local.anti_entropy_interval
    assert lan.replace(fanout=7).fanout == 7
    with pytest.raises(ConfigError):
        lan.replace(fanout=-1)


def test_builder_validates_at_once() -> None:
    with pytest.raises(ConfigError) as caught:
        SynapseNodeBuilder().with_bind_address("nowhere")
    assert caught.value.field == "bind_address"
    with pytest.raises(ConfigError) as caught:
        SynapseNodeBuilder().add_bootstrap_peer("host:")
    assert caught.value.field == "bootstrap_peers"
    with pytest.raises(ConfigError) as caught:
        SynapseNodeBuilder().with_signing_key(b"too short")
    assert caught.value.field == "signing_key"


def test_builder_defaults_name_the_node_after_its_key() -> None:
    node, messages, events = SynapseNodeBuilder().build()
    assert node.node_id == "node-" + node.public_key[:6].hex()
    assert len(messages) == 0
    assert len(events) == 0


# --- membership and discovery ---------------------------------------------------------------

@pytest.mark.parametrize(("changes", "field_name"), [
    ({"probe_interval": 0}, "membership.probe_interval"),
    ({"probe_timeout": 0.6}, "membership.probe_timeout"),
    ({"suspicion_max_mult": 0.5}, "membership.suspicion_max_mult"),
    ({"indirect_checks": -1}, "membership.indirect_checks"),
    ({"max_datagram": 100}, "membership.max_datagram"),
    ({"max_datagram": 70_000}, "membership.max_datagram"),
    ({"gossip_nodes": 0}, "membership.gossip_nodes"),
])
def test_membership_config_names_the_bad_field(changes: dict, field_name: str) -> None:
    with pytest.raises(ConfigError) as caught:
        MembershipConfig(**changes)
    assert caught.value.field == field_name


def test_membership_presets_are_valid_and_ordered() -> None:
    lan, wan, local = MembershipConfig.lan(), MembershipConfig.wan(), MembershipConfig.local()
    assert local.probe_interval < lan.probe_interval < wan.probe_interval
    assert NodeConfig().membership == lan


def test_discovery_methods() -> None:
    assert NodeConfig().discovery == frozenset({DiscoveryMethod.GOSSIP})
    builder = SynapseNodeBuilder().with_auto_discovery(False)
    assert builder.config.discovery == frozenset({DiscoveryMethod.STATIC})
    with pytest.raises(ConfigError, match="discovery"):
        SynapseNodeBuilder().with_discovery("carrier-pigeon")
    assert SynapseNodeBuilder().with_discovery("gossip", "mdns").config.discovery == \
        frozenset({DiscoveryMethod.GOSSIP, DiscoveryMethod.MDNS})  # tests/aio/test_mdns.py
    with pytest.raises(ConfigError, match="overlay"):
        NodeConfig(overlay=6)  # type: ignore[arg-type]
