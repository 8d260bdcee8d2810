"""Seeds given as DNS names: ``dns:NAME[:PORT]`` joins through every address of a name,
and a name that resolves to nothing yet (a pod not ready) is resolved again."""

from __future__ import annotations

import pytest

from somasync import ConfigError, MembershipConfig, SynapseNodeBuilder
from somasync.aio import control
from somasync.config import DEFAULT_PORT, parse_seed
from somasync.testing import wait_until

DEADLINE = 30.0


@pytest.mark.parametrize(("seed", "parsed"), [
    ("dns:seeds.mesh.svc", ("seeds.mesh.svc", DEFAULT_PORT)),
    ("dns:localhost:7000", ("localhost", 7000)),
    ("10.0.0.5:7946", ("10.0.0.5", 7946)),
])
def test_seeds_parse(seed: str, parsed: tuple[str, int]) -> None:
    assert parse_seed(seed) == parsed


@pytest.mark.parametrize("seed", ["dns:", "dns::7946", "dns:name:port", "dns:name:0",
                                  "dns:name:70000", "no-port"])
def test_a_bad_seed_is_refused_naming_the_field(seed: str) -> None:
    with pytest.raises(ConfigError, match="bootstrap_peers"):
        SynapseNodeBuilder().add_bootstrap_peer(seed)


def builder(name: str) -> SynapseNodeBuilder:
    return (SynapseNodeBuilder().with_node_id(name).with_bind_address("127.0.0.1:0")
            .with_membership_config(MembershipConfig.local()))


async def test_a_node_joins_through_every_address_of_a_dns_name() -> None:
    first, _m, _e = builder("first").build()
    async with first:
        port = first.listen_address.rsplit(":", 1)[1]
        second, _m2, _e2 = builder("second").add_bootstrap_peer(f"dns:localhost:{port}").build()
        async with second:
            await wait_until(lambda: {m.node_id for m in second.members()} >=
                             {"first", "second"}, "the second node to join", DEADLINE)
            await wait_until(lambda: "second" in {m.node_id for m in first.members()},
                             "the first node to see it", DEADLINE)


async def test_a_name_that_resolves_later_is_joined_once_it_does(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Kubernetes publishes a headless service's addresses only once pods are ready:
    the name resolves to nothing at first."""
    first, _m, _e = builder("first").build()
    async with first:
        ready = False
        asked: list[list[str]] = []
        real = control.resolve_seeds

        async def resolve_when_ready(names: list[str], family: int, *,
                                     lookup_timeout: float) -> dict[str, list[str]]:
            asked.append(names)
            if ready:
                return await real(names, family, lookup_timeout=lookup_timeout)
            return {name: [] for name in names}

        monkeypatch.setattr(control, "resolve_seeds", resolve_when_ready)
        port = first.listen_address.rsplit(":", 1)[1]
        second, _m2, _e2 = builder("second").add_bootstrap_peer(f"dns:localhost:{port}").build()
        async with second:
            assert [m.node_id for m in second.members()] == ["second"]
            ready = True
            await wait_until(lambda: "first" in {m.node_id for m in second.members()},
                             "the second node to join once the name resolves", DEADLINE)
            assert len(asked) >= 2  # resolved again, not only at the start
