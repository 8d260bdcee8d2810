"""Deterministic tests of SWIM membership: a stepped clock and an in-memory network."""

from __future__ import annotations

import random

import pytest

from somasync.config import MembershipConfig
from somasync.core.budget import AMPLIFICATION_LIMIT
from somasync.core.crypto import Identity
from somasync.core.events import (
    PartitionDetected,
    PartitionHealed,
    PeerFailed,
    PeerJoined,
    PeerLeft,
    PeerRecovered,
    PeerSuspected,
)
from somasync.core.membership import Membership, PeerState
from somasync.core.membership_wire import (
    CLAIM_DOMAIN as DOMAIN,
    ClaimType,
    DatagramKind,
    decode_datagram,
    encode_claim_body,
    encode_datagram,
)
from somasync.testing import MembershipNet

CONFIG = MembershipConfig.local()


def mesh(n: int, *, seed: int = 1, config: MembershipConfig = CONFIG) -> MembershipNet:
    net = MembershipNet(config, seed=seed)
    for i in range(n):
        net.add(f"n{i}", seeds=["n0"] if i else [])
    net.run(3.0)
    for _ in range(20):  # the tests below start from full membership
        if all(len(net.states(name)) == n for name in net.nodes):
            break
        net.run(0.5)
    assert all(len(net.states(name)) == n for name in net.nodes), "no convergence"
    return net


def signed(identity: Identity, body: bytes) -> bytes:
    return body + identity.sign(DOMAIN, body)


def test_join_through_one_seed_converges_to_full_membership() -> None:
    net = mesh(12)
    for name in net.nodes:
        states = net.states(name)
        assert len(states) == 12, name
        assert set(states.values()) == {PeerState.ALIVE}
    # Every node was announced to every other exactly once.
    for name in net.nodes:
        joined = {e.peer_id for e in net.events_of(name, PeerJoined)}
        assert joined == set(net.nodes) - {name}


def test_probe_is_acked_and_nobody_is_suspected() -> None:
    net = mesh(4)
    net.run(20.0)
    for name, node in net.nodes.items():
        stats = node.statistics()
        assert stats.probes > 0
        assert stats.probes_failed == 0, name
        assert not net.events_of(name, PeerSuspected)
        assert stats.local_health == 0


def test_probe_timeout_leads_to_indirect_probe_then_suspicion_then_failure() -> None:
    net = mesh(6)
    net.crash("n5")
    net.run(1.0)
    prober_stats = [n.statistics() for name, n in net.nodes.items() if name != "n5"]
    assert sum(s.probes_failed for s in prober_stats) >= 1
    assert sum(s.indirect_probes for s in prober_stats) >= 1
    assert any(net.events_of(name, PeerSuspected) for name in net.nodes if name != "n5")
    # Suspicion is not failure: at N = 6 the lone-suspicion timeout is 8 x 0.2 s.
    net.run(10.0)
    for name in net.nodes:
        if name == "n5":
            continue
        failed = net.events_of(name, PeerFailed)
        assert [e.peer_id for e in failed] == ["n5"], name
        assert net.states(name)["n5"] == PeerState.FAILED
        # Order of facts as seen by each survivor: suspected (or told it failed) first.
        kinds = [type(e) for e in net.events[name] if getattr(e, "peer_id", "") == "n5"]
        assert kinds.index(PeerFailed) > kinds.index(PeerJoined)


def test_suspicion_timeout_shrinks_with_independent_confirmations() -> None:
    # Probes far apart, so only the suspicions given below are in play.
    config = CONFIG.replace(suspicion_confirmations=2, probe_interval=100.0,
                            probe_timeout=50.0, suspicion_mult=0.002)
    minimum = config.suspicion_mult * config.probe_interval  # log10(6 members) < 1
    others = [Identity(bytes([i + 1]) * 32) for i in range(5)]
    target = others[0]

    def node_suspected_by(accusers: list[Identity]) -> Membership:
        node = Membership(config, Identity(bytes(32)), "me", "me", rng=random.Random(1),
                          now=0.0)
        for i, identity in enumerate(others):
            alive = signed(identity, encode_claim_body(
                ClaimType.ALIVE, identity.public_key, 0, node_id=f"o{i}", address=f"o{i}"))
            node.receive_datagram(f"o{i}", claims_datagram(identity.public_key, alive),
                                  now=0.0)
        for by in accusers:
            claim = signed(by, encode_claim_body(ClaimType.SUSPECT, target.public_key, 0,
                                                 author=by.public_key))
            node.receive_datagram("x", claims_datagram(by.public_key, claim), now=0.0)
        return node

    def state_at(node: Membership, moment: float) -> PeerState:
        node.handle_timer(now=moment)
        found = node.member(target.public_key)
        assert found is not None
        return found.state

    lone = node_suspected_by(others[1:2])
    confirmed = node_suspected_by(others[1:4])
    # A lone suspicion waits suspicion_max_mult x the minimum; k confirmations, the minimum.
    assert state_at(lone, minimum + 0.001) == PeerState.SUSPECT
    assert state_at(confirmed, minimum + 0.001) == PeerState.FAILED
    assert state_at(lone, config.suspicion_max_mult * minimum - 0.01) == PeerState.SUSPECT
    assert state_at(lone, config.suspicion_max_mult * minimum + 0.001) == PeerState.FAILED


def test_claims_are_checked_by_the_injected_verifier_once_each() -> None:
    calls: list[bytes] = []

    def refusing(public_key: bytes, signature: bytes, domain: bytes, data: bytes) -> bool:
        calls.append(signature)
        return False

    other = Identity(bytes([7]) * 32)
    alive = signed(other, encode_claim_body(ClaimType.ALIVE, other.public_key, 0,
                                            node_id="o", address="o"))
    node = Membership(CONFIG, Identity(bytes(32)), "me", "me", rng=random.Random(1),
                      now=0.0, verify=refusing)
    node.receive_datagram("o", claims_datagram(other.public_key, alive), now=0.0)
    assert node.member(other.public_key) is None  # the verifier said no: not a member
    assert node.statistics().rejected == {"bad_signature": 1}
    assert len(calls) == 1

    accepting = Membership(CONFIG, Identity(bytes(32)), "me", "me", rng=random.Random(1),
                           now=0.0, verify=lambda *_: True)
    for _ in range(3):
        accepting.receive_datagram("o", claims_datagram(other.public_key, alive), now=0.0)
    assert accepting.member(other.public_key) is not None


def test_refutation_with_higher_incarnation_wins() -> None:
    net = mesh(6)
    net.pause("n3")
    # Long enough to be suspected by several probers, not long enough to be declared dead.
    net.run(0.6)
    assert any(net.events_of(name, PeerSuspected) for name in net.nodes if name != "n3")
    net.resume("n3")
    net.run(3.0)
    assert net.nodes["n3"].incarnation >= 1
    assert net.nodes["n3"].statistics().refutations >= 1
    for name in net.nodes:
        assert net.states(name)["n3"] == PeerState.ALIVE, name
        assert not net.events_of(name, PeerFailed), name
        if name != "n3" and net.events_of(name, PeerSuspected):
            assert [e.peer_id for e in net.events_of(name, PeerRecovered)] == ["n3"]


def test_a_paused_node_is_failed_then_recovers_when_resumed() -> None:
    net = mesh(6)
    net.pause("n2")
    net.run(10.0)
    for name in net.nodes:
        if name != "n2":
            assert net.states(name)["n2"] == PeerState.FAILED, name
    net.resume("n2")
    net.run(5.0)
    for name in net.nodes:
        assert set(net.states(name).values()) == {PeerState.ALIVE}, name
    # The paused node's own timers fired late: it blamed itself, not the others.
    paused = net.nodes["n2"].statistics()
    assert paused.stalls >= 1
    assert not net.events_of("n2", PeerFailed)


def test_graceful_leave_drops_the_node_at_once_without_suspicion() -> None:
    net = mesh(6)
    net.nodes["n4"].leave(now=net.now)
    net._collect("n4")
    net.run(1.0)
    for name in net.nodes:
        if name == "n4":
            continue
        assert net.states(name)["n4"] == PeerState.LEFT, name
        assert [e.peer_id for e in net.events_of(name, PeerLeft)] == ["n4"]
        assert not net.events_of(name, PeerSuspected)


def test_restarted_node_rejoins_and_replaces_its_stale_entry() -> None:
    net = mesh(5)
    old = net.nodes["n4"]
    identity = old.identity
    net.crash("n4")
    net.run(10.0)
    assert net.states("n0")["n4"] == PeerState.FAILED
    # A new process with the same key starts from incarnation 0 and joins via a seed.
    net.add("n4", seeds=["n1"], identity=identity)
    net.run(3.0)
    assert net.nodes["n4"].incarnation >= 1
    for name in net.nodes:
        member = {m.node_id: m for m in net.nodes[name].members()}["n4"]
        assert member.state == PeerState.ALIVE, name
        assert member.incarnation == net.nodes["n4"].incarnation
    assert [e.peer_id for e in net.events_of("n0", PeerRecovered)] == ["n4"]


def test_a_later_joiner_is_not_told_about_members_that_died_before_it() -> None:
    net = mesh(5)
    net.crash("n3")
    net.run(10.0)
    assert net.states("n0")["n3"] == PeerState.FAILED
    net.add("late", seeds=["n0"])
    net.run(40.0)  # past a push-pull round, whose full state still lists n3's verdict
    assert "n3" not in net.states("late")
    assert not [e for e in net.events_of("late", PeerJoined) if e.peer_id == "n3"]
    assert not net.events_of("late", PeerFailed)
    assert set(net.states("late")) == {"late", "n0", "n1", "n2", "n4"}


def test_partitioned_halves_merge_back_after_heal() -> None:
    net = mesh(8)
    left, right = [f"n{i}" for i in range(4)], [f"n{i}" for i in range(4, 8)]
    net.partition(left, right)
    net.run(15.0)
    assert net.states("n0")["n7"] == PeerState.FAILED
    assert net.states("n7")["n0"] == PeerState.FAILED
    net.heal()
    net.run(10.0)
    for name in net.nodes:
        assert set(net.states(name).values()) == {PeerState.ALIVE}, (name, net.states(name))


def test_the_live_count_kept_as_states_change_matches_a_recount() -> None:
    """The N of the formulas is kept incrementally; every transition must keep it true."""
    def check(net: MembershipNet) -> None:
        for name, node in net.nodes.items():
            if name in net.crashed:
                continue
            live = sum(1 for m in node.members()[1:]
                       if m.state in (PeerState.ALIVE, PeerState.SUSPECT))
            assert node._live_count() == 1 + live, name

    net = mesh(8)
    check(net)
    net.pause("n2")  # suspected, failed, then refuted: every transition
    net.run(10.0)
    check(net)
    net.resume("n2")
    net.run(5.0)
    check(net)
    net.nodes["n5"].leave(now=net.now)
    net._collect("n5")
    net.crash("n6")
    net.run(12.0)
    check(net)
    net.run(100.0)  # left members are forgotten
    check(net)


def test_stalled_node_blames_itself_not_the_others() -> None:
    net = mesh(4)
    node = net.nodes["n1"]
    # Its timers fire 3 s late while everyone else keeps answering: a CPU-starved host.
    net.pause("n1")
    net.run(3.0)
    net.resume("n1")
    net.run(0.5)
    assert node.statistics().stalls == 1
    assert not net.events_of("n1", PeerSuspected)
    assert node.local_health > 0


# --- forged and stale claims ---------------------------------------------------------------

@pytest.fixture
def joined() -> tuple[Membership, Identity, Identity]:
    """A node that knows one other member; plus an outsider's identity."""
    node = Membership(CONFIG, Identity(bytes(32)), "me", "me", rng=random.Random(3), now=0.0)
    member = Identity(bytes([1]) * 32)
    alive = signed(member, encode_claim_body(ClaimType.ALIVE, member.public_key, 5,
                                             node_id="member", address="m"))
    node.receive_datagram("m", encode_datagram(DatagramKind.GOSSIP, member.public_key, 0,
                                               [alive]), now=0.0)
    assert node.member(member.public_key) is not None
    return node, member, Identity(bytes([2]) * 32)


def claims_datagram(sender: bytes, *claims: bytes) -> bytes:
    return encode_datagram(DatagramKind.GOSSIP, sender, 0, list(claims))


def test_alive_claim_for_another_node_is_rejected(joined: tuple) -> None:
    node, member, outsider = joined
    # The outsider signs "member is alive at a new address": the signature is not member's.
    forged = signed(outsider, encode_claim_body(ClaimType.ALIVE, member.public_key, 6,
                                                node_id="member", address="evil"))
    node.receive_datagram("x", claims_datagram(outsider.public_key, forged), now=1.0)
    assert node.member(member.public_key).address == "m"  # type: ignore[union-attr]
    assert node.statistics().rejected == {"bad_signature": 1}


def test_leave_for_another_node_is_rejected(joined: tuple) -> None:
    node, member, outsider = joined
    forged = signed(outsider, encode_claim_body(ClaimType.LEAVE, member.public_key, 5))
    node.receive_datagram("x", claims_datagram(outsider.public_key, forged), now=1.0)
    assert node.member(member.public_key).state == PeerState.ALIVE  # type: ignore[union-attr]
    assert node.statistics().rejected == {"bad_signature": 1}
    assert node.take_events()[-1].__class__ is PeerJoined


def test_refutation_for_another_node_is_rejected(joined: tuple) -> None:
    node, member, outsider = joined
    me = Identity(bytes([9]) * 32)
    accuse = signed(node.identity, encode_claim_body(ClaimType.SUSPECT, member.public_key, 5,
                                                     author=node.identity.public_key))
    node.receive_datagram("x", claims_datagram(me.public_key, accuse), now=1.0)
    assert node.member(member.public_key).state == PeerState.SUSPECT  # type: ignore[union-attr]
    refute = signed(outsider, encode_claim_body(ClaimType.ALIVE, member.public_key, 6,
                                                node_id="member", address="m"))
    node.receive_datagram("x", claims_datagram(outsider.public_key, refute), now=1.1)
    assert node.member(member.public_key).state == PeerState.SUSPECT  # type: ignore[union-attr]
    assert node.statistics().rejected == {"bad_signature": 1}


def test_suspicion_of_a_node_by_itself_is_rejected(joined: tuple) -> None:
    node, member, _ = joined
    claim = signed(member, encode_claim_body(ClaimType.SUSPECT, member.public_key, 5,
                                             author=member.public_key))
    node.receive_datagram("m", claims_datagram(member.public_key, claim), now=1.0)
    assert node.member(member.public_key).state == PeerState.ALIVE  # type: ignore[union-attr]
    assert node.statistics().rejected == {"self_accusation": 1}


def test_accusation_by_an_unknown_key_is_rejected(joined: tuple) -> None:
    node, member, outsider = joined
    claim = signed(outsider, encode_claim_body(ClaimType.DEAD, member.public_key, 5,
                                               author=outsider.public_key))
    node.receive_datagram("x", claims_datagram(outsider.public_key, claim), now=1.0)
    assert node.member(member.public_key).state == PeerState.ALIVE  # type: ignore[union-attr]
    assert node.statistics().rejected == {"unknown_author": 1}


def test_stale_incarnation_is_ignored_and_counted(joined: tuple) -> None:
    node, member, _ = joined
    old = signed(member, encode_claim_body(ClaimType.ALIVE, member.public_key, 4,
                                           node_id="member", address="old"))
    leave_old = signed(member, encode_claim_body(ClaimType.LEAVE, member.public_key, 4))
    node.receive_datagram("m", claims_datagram(member.public_key, old, leave_old), now=1.0)
    found = node.member(member.public_key)
    assert found is not None
    assert (found.address, found.state) == ("m", PeerState.ALIVE)
    assert node.statistics().stale_claims == 2


def test_garbage_datagrams_are_counted_and_change_nothing(joined: tuple) -> None:
    node, _, _ = joined
    before = node.members()
    garbage = (b"", b"\x01", b"\x09" * 50, bytes(43) + b"\xff\xff",
               b"\x01\x07" + bytes(40) + b"\x00\x01")
    for data in garbage:
        node.receive_datagram("x", data, now=1.0)
    assert node.members() == before
    assert sum(node.statistics().rejected.values()) == 5


def test_accusation_against_self_is_refuted() -> None:
    net = mesh(3)
    n0, n1 = net.nodes["n0"], net.nodes["n1"]
    claim = signed(n0.identity, encode_claim_body(ClaimType.DEAD, n1.identity.public_key, 0,
                                                  author=n0.identity.public_key))
    n1.receive_datagram("n0", claims_datagram(n0.identity.public_key, claim), now=net.now)
    assert n1.incarnation == 1
    net._collect("n1")
    net.run(2.0)
    for name in net.nodes:
        member = {m.node_id: m for m in net.nodes[name].members()}["n1"]
        assert (member.state, member.incarnation) == (PeerState.ALIVE, 1), name


def test_trusted_keys_policy_refuses_outsiders() -> None:
    me, friend, stranger = (Identity(bytes([i]) * 32) for i in (1, 2, 3))
    node = Membership(CONFIG, me, "me", "me", rng=random.Random(1), now=0.0,
                      trusted_keys=frozenset({me.public_key, friend.public_key}))
    for identity, name in ((friend, "friend"), (stranger, "stranger")):
        alive = signed(identity, encode_claim_body(ClaimType.ALIVE, identity.public_key, 0,
                                                   node_id=name, address=name))
        node.receive_datagram(name, claims_datagram(identity.public_key, alive), now=0.0)
    assert {m.node_id for m in node.members()} == {"me", "friend"}
    assert node.statistics().rejected == {"untrusted": 1}


def test_memory_is_bounded_by_max_members() -> None:
    config = CONFIG.replace(max_members=4)
    node = Membership(config, Identity.generate(), "me", "me", rng=random.Random(1), now=0.0)
    for i in range(10):
        identity = Identity(bytes([i + 1]) * 32)
        alive = signed(identity, encode_claim_body(ClaimType.ALIVE, identity.public_key, 0,
                                                   node_id=f"o{i}", address=f"o{i}"))
        node.receive_datagram(f"o{i}", claims_datagram(identity.public_key, alive), now=0.0)
    assert len(node.members()) == 4
    assert node.statistics().rejected == {"members_full": 7}


def test_spoofed_ping_gets_a_bare_ack_without_gossip() -> None:
    net = mesh(3)
    n0 = net.nodes["n0"]
    stranger = Identity.generate()
    ping = encode_datagram(DatagramKind.PING, stranger.public_key, 42, [],
                           target=n0.identity.public_key)
    n0.receive_datagram("victim", ping, now=net.now)
    [(address, ack)] = n0.datagrams_to_send()
    assert address == "victim"
    assert len(ack) == 44  # header and an empty claim list: no amplification


def test_same_seed_same_trace() -> None:
    def trace() -> list[tuple[str, str, str]]:
        net = mesh(6, seed=7)
        net.crash("n3")
        net.run(10.0)
        return [(name, type(e).__name__, e.peer_id) for name in sorted(net.nodes)
                for e in net.events[name]]
    # Identities come from the seeded RNG too, so two runs are identical.
    assert trace() == trace()


# --- authenticated senders (the datagram seal proves who sent each datagram) -----------

def _node_with_members(count: int, config: MembershipConfig = CONFIG
                       ) -> tuple[Membership, list[Identity]]:
    others = [Identity(bytes([i + 1]) * 32) for i in range(count)]
    node = Membership(config, Identity(bytes(32)), "me", "me", rng=random.Random(1),
                      now=0.0)
    for i, identity in enumerate(others):
        alive = signed(identity, encode_claim_body(
            ClaimType.ALIVE, identity.public_key, 0, node_id=f"o{i}", address=f"o{i}"))
        node.receive_datagram(f"o{i}", claims_datagram(identity.public_key, alive), now=0.0,
                              sealed_by=identity.public_key)
    node.datagrams_to_send()
    return node, others


def _first_ping(node: Membership, until: float) -> tuple[str, bytes, int, float]:
    """Run the node until it pings someone: (address, target key, nonce, when)."""
    now = 0.0
    while now < until:
        now = node.get_timer()
        node.handle_timer(now=now)
        for address, data in node.datagrams_to_send():
            datagram = decode_datagram(data)
            if datagram.kind == DatagramKind.PING:
                return address, datagram.target, datagram.nonce, now
    raise AssertionError("no probe")


def test_an_ack_counts_only_from_the_probed_member_not_from_whoever_knows_the_nonce(
        ) -> None:
    """Before: an ACK from any address with the right nonce kept a dead member alive."""
    node, others = _node_with_members(3, CONFIG.replace(indirect_checks=0))
    _, target, nonce, now = _first_ping(node, 5.0)
    stranger = next(o for o in others if o.public_key != target)
    ack = encode_datagram(DatagramKind.ACK, stranger.public_key, nonce, [])
    node.receive_datagram("anywhere", ack, now=now, sealed_by=stranger.public_key)
    # Naming the target's key does not help a datagram the stranger sealed.
    posing = encode_datagram(DatagramKind.ACK, target, nonce, [])
    node.receive_datagram("anywhere", posing, now=now, sealed_by=stranger.public_key)
    rejected = node.statistics().rejected
    assert rejected["ack_from_stranger"] == 1
    assert rejected["sender_mismatch"] == 1
    # The probe still fails, so the silent target is suspected.
    while now < 10.0 and (found := node.member(target)) is not None \
            and found.state == PeerState.ALIVE:
        now = node.get_timer()
        node.handle_timer(now=now)
    assert node.member(target).state != PeerState.ALIVE  # type: ignore[union-attr]


def test_the_probed_members_own_ack_still_counts() -> None:
    node, _ = _node_with_members(3, CONFIG.replace(indirect_checks=0))
    _, target, nonce, now = _first_ping(node, 5.0)
    ack = encode_datagram(DatagramKind.ACK, target, nonce, [])
    node.receive_datagram("o0", ack, now=now, sealed_by=target)
    assert "ack_from_stranger" not in node.statistics().rejected
    assert node.statistics().probes_failed == 0
    node.handle_timer(now=now + 5 * CONFIG.probe_timeout)
    assert node.statistics().probes_failed == 0


def test_one_members_death_claim_about_a_live_member_is_checked_not_believed() -> None:
    """Before: a DEAD claim signed by any member that joined marked a live node failed
    everywhere. Now a node that had not suspected the accused probes it, and shows it the
    claim so it refutes; only its own failed probes can make it fail."""
    node, others = _node_with_members(3)
    accused, accuser = others[0], others[1]
    death = signed(accuser, encode_claim_body(ClaimType.DEAD, accused.public_key, 0,
                                              author=accuser.public_key))
    node.receive_datagram("o1", claims_datagram(accuser.public_key, death), now=0.1,
                          sealed_by=accuser.public_key)
    assert node.member(accused.public_key).state == PeerState.ALIVE  # type: ignore[union-attr]
    assert not [e for e in node.take_events() if isinstance(e, PeerFailed)]
    sent = node.datagrams_to_send()
    assert ("o0", death) in [(a, c.raw) for a, d in sent for c in decode_datagram(d).claims]
    # The accused refutes (a higher incarnation); it stays alive.
    refutation = signed(accused, encode_claim_body(
        ClaimType.ALIVE, accused.public_key, 1, node_id="o0", address="o0"))
    node.receive_datagram("o0", claims_datagram(accused.public_key, refutation), now=0.2,
                          sealed_by=accused.public_key)
    assert node.member(accused.public_key).incarnation == 1  # type: ignore[union-attr]
    assert node.member(accused.public_key).state == PeerState.ALIVE  # type: ignore[union-attr]


# --- hostile claims and datagrams (each failed on the code before its defence) -----------

ME = Identity(bytes(32))


def _accusation(author: Identity, subject: bytes, incarnation: int,
                kind: ClaimType = ClaimType.SUSPECT) -> bytes:
    return claims_datagram(author.public_key, signed(author, encode_claim_body(
        kind, subject, incarnation, author=author.public_key)))


def test_a_suspicion_at_the_largest_incarnation_is_refused_not_a_crash() -> None:
    """Before: the refutation overflowed (struct.error out of receive_datagram)."""
    node, others = _node_with_members(3)
    node.receive_datagram("o1", _accusation(others[1], ME.public_key, 2**64 - 1), now=0.1,
                          sealed_by=others[1].public_key)
    assert node.incarnation == 0
    assert node.statistics().rejected["absurd_incarnation"] == 1
    node.handle_timer(now=0.2)
    node.datagrams_to_send()


def test_a_death_at_an_absurd_incarnation_cannot_pin_a_live_member_down() -> None:
    """Before: DEAD at 2^64-1 kept a live node failed everywhere, with no refutation."""
    node, others = _node_with_members(3)
    victim = others[0].public_key
    node.receive_datagram("o1", _accusation(others[1], victim, 2**64 - 1, ClaimType.DEAD),
                          now=0.1, sealed_by=others[1].public_key)
    member = node.member(victim)
    assert member is not None
    assert member.state == PeerState.ALIVE
    assert member.incarnation == 0
    assert node.statistics().rejected["absurd_incarnation"] == 1


def test_a_datagram_larger_than_max_datagram_is_refused_before_decoding() -> None:
    calls: list[bytes] = []
    config = CONFIG.replace(max_datagram=1400)

    def verify(key: bytes, signature: bytes, domain: bytes, data: bytes) -> bool:
        calls.append(data)
        return True

    node = Membership(config, ME, "me", "me", rng=random.Random(1), now=0.0, verify=verify)
    other = Identity(bytes([5]) * 32)
    claims = [signed(other, encode_claim_body(ClaimType.ALIVE, other.public_key, i,
                                              node_id="o", address="o")) for i in range(30)]
    big = encode_datagram(DatagramKind.GOSSIP, other.public_key, 0, claims)
    assert len(big) > 1400
    node.receive_datagram("o", big, now=0.0)
    assert node.statistics().rejected == {"oversize": 1}
    assert calls == []


def test_a_claim_that_failed_verification_is_not_verified_again() -> None:
    """Before: a datagram of bogus claims cost a signature check per claim per copy."""
    calls: list[bytes] = []

    def verify(key: bytes, signature: bytes, domain: bytes, data: bytes) -> bool:
        calls.append(data)
        return False

    node = Membership(CONFIG, ME, "me", "me", rng=random.Random(1), now=0.0, verify=verify)
    other = Identity(bytes([5]) * 32)
    bogus = encode_claim_body(ClaimType.ALIVE, other.public_key, 0, node_id="o",
                              address="o") + bytes(64)
    for _ in range(5):
        node.receive_datagram("o", claims_datagram(other.public_key, bogus), now=0.0)
    assert len(calls) == 1
    assert node.statistics().rejected["bad_signature"] == 5


def test_a_stream_of_forged_suspicions_cannot_drive_local_health_to_its_maximum() -> None:
    """Before: each forged suspicion made this node refute and raised its Lifeguard
    health, so a handful stretched every timeout to the maximum."""
    node, others = _node_with_members(3)
    for incarnation in range(20):
        node.receive_datagram("o1", _accusation(others[1], ME.public_key, incarnation),
                              now=0.01 * incarnation, sealed_by=others[1].public_key)
    assert node.incarnation == 20  # it refuted every one
    assert node.local_health <= 1


def test_a_member_asking_for_the_full_state_over_and_over_is_answered_a_few_times(
        joined: tuple) -> None:
    """Before: every PUSH with reply wanted got the whole membership back (the filed
    amplification bench: x21.6 sealed, at any rate the member liked)."""
    node, member, _outsider = joined
    node.datagrams_to_send()
    push = encode_datagram(DatagramKind.PUSH, member.public_key, 0, [], reply_wanted=True)
    for _ in range(10):
        node.receive_datagram("m", push, now=1.0)
    answers = [d for address, d in node.datagrams_to_send() if address == "m"]
    assert len(answers) == 3
    assert node.statistics().rejected["push_limited"] == 7
    # The budget refills with time: a push/pull interval later it is answered again.
    node.receive_datagram("m", push, now=1.0 + CONFIG.push_pull_interval)
    assert any(address == "m" for address, _ in node.datagrams_to_send())


def test_one_host_cannot_fill_the_member_table_with_made_up_members() -> None:
    """The filed Sybil flood: one sender's ALIVE claims for identities it made up (each
    self-signed, so each valid) filled ``max_members``, and every real node that joined
    afterwards was refused (members_full). Now one host introduces at most a quarter of
    the table, and a full table makes room by forgetting failed members first."""
    config = CONFIG.replace(max_members=40)
    node = Membership(config, Identity.generate(), "me", "me", rng=random.Random(1), now=0.0)
    attacker = Identity(bytes([200]) * 32)
    own = signed(attacker, encode_claim_body(ClaimType.ALIVE, attacker.public_key, 0,
                                             node_id="attacker", address="10.0.0.66:7946"))
    made_up = []
    for i in range(60):
        fake = Identity(i.to_bytes(2, "big") * 16)
        made_up.append(signed(fake, encode_claim_body(
            ClaimType.ALIVE, fake.public_key, 0, node_id=f"sybil-{i}",
            address=f"10.0.0.66:{20000 + i}")))
    for start in range(0, 60, 5):
        node.receive_datagram("10.0.0.66:7946", claims_datagram(
            attacker.public_key, own, *made_up[start : start + 5]), now=0.0)
    known = len(node.members())
    assert known <= 1 + 1 + 40 // 4  # itself, the attacker, the attacker's quarter
    assert node.statistics().rejected["introductions_limited"] == 60 - (known - 2)
    honest = Identity(bytes([201]) * 32)
    alive = signed(honest, encode_claim_body(ClaimType.ALIVE, honest.public_key, 0,
                                             node_id="honest", address="10.0.0.7:7946"))
    node.receive_datagram("10.0.0.7:7946", claims_datagram(honest.public_key, alive),
                          now=1.0)
    assert node.member(honest.public_key) is not None


def test_a_full_member_table_forgets_a_failed_member_to_admit_a_new_one() -> None:
    config = CONFIG.replace(max_members=4)
    node = Membership(config, Identity.generate(), "me", "me", rng=random.Random(1), now=0.0)
    identities = [Identity(bytes([i + 1]) * 32) for i in range(4)]
    for i, identity in enumerate(identities[:3]):
        alive = signed(identity, encode_claim_body(ClaimType.ALIVE, identity.public_key, 0,
                                                   node_id=f"o{i}", address=f"10.0.1.{i}:1"))
        node.receive_datagram(f"10.0.1.{i}:1", claims_datagram(identity.public_key, alive),
                              now=0.0)
    # o0 leaves: its slot is the first to go when the table is full.
    leave = signed(identities[0], encode_claim_body(ClaimType.LEAVE,
                                                    identities[0].public_key, 0))
    node.receive_datagram("10.0.1.0:1", claims_datagram(identities[0].public_key, leave),
                          now=1.0)
    newcomer = identities[3]
    alive = signed(newcomer, encode_claim_body(ClaimType.ALIVE, newcomer.public_key, 0,
                                               node_id="o3", address="10.0.1.3:1"))
    node.receive_datagram("10.0.1.3:1", claims_datagram(newcomer.public_key, alive), now=2.0)
    assert node.member(newcomer.public_key) is not None
    assert node.member(identities[0].public_key) is None
    assert "members_full" not in node.statistics().rejected


def test_each_member_answered_directly_has_a_round_trip_time() -> None:
    net = mesh(3)
    net.run(5.0)
    node = net.nodes["n0"]
    others = [m for m in node.members() if m.node_id != "n0"]
    assert others
    assert all(m.rtt is not None and m.rtt >= 0 for m in others)
    assert node.members()[0].rtt is None  # itself


def test_a_forged_claim_does_not_cost_a_departed_member_its_entry() -> None:
    """Found in review: a full table made room before checking the claim's signature,
    so each forged ALIVE removed one failed or departed member."""
    config = CONFIG.replace(max_members=3)
    node = Membership(config, Identity.generate(), "me", "me", rng=random.Random(1), now=0.0)
    first, second = Identity(bytes([1]) * 32), Identity(bytes([2]) * 32)
    for i, identity in enumerate((first, second)):
        alive = signed(identity, encode_claim_body(ClaimType.ALIVE, identity.public_key, 0,
                                                   node_id=f"o{i}", address=f"10.0.2.{i}:1"))
        node.receive_datagram(f"10.0.2.{i}:1", claims_datagram(identity.public_key, alive),
                              now=0.0)
    leave = signed(first, encode_claim_body(ClaimType.LEAVE, first.public_key, 0))
    node.receive_datagram("10.0.2.0:1", claims_datagram(first.public_key, leave), now=1.0)
    newcomer, forger = Identity(bytes([3]) * 32), Identity(bytes([4]) * 32)
    body = encode_claim_body(ClaimType.ALIVE, newcomer.public_key, 0, node_id="o3",
                             address="10.0.2.3:1")
    node.receive_datagram("10.0.2.3:1", claims_datagram(newcomer.public_key,
                                                        signed(forger, body)), now=2.0)
    assert node.member(first.public_key) is not None
    assert node.member(newcomer.public_key) is None
    node.receive_datagram("10.0.2.3:1", claims_datagram(newcomer.public_key,
                                                        signed(newcomer, body)), now=3.0)
    assert node.member(newcomer.public_key) is not None
    assert node.member(first.public_key) is None


def test_a_partition_is_reported_once_with_the_lost_members_and_again_when_healed() -> None:
    net = mesh(8)
    side = [f"n{i}" for i in range(4)]
    far = [f"n{i}" for i in range(4, 8)]
    net.partition(side, far)
    net.run(60.0)
    for name in side:
        [detected] = net.events_of(name, PartitionDetected)  # once, not per member lost
        # Reported as soon as the share is reached (3 of 8), with those lost so far.
        assert set(detected.lost) <= set(far)  # type: ignore[attr-defined]
        assert len(detected.lost) >= 3  # type: ignore[attr-defined]
        assert detected.members == 8  # type: ignore[attr-defined]
    net.heal()
    net.run(60.0)
    for name in side:
        [healed] = net.events_of(name, PartitionHealed)
        assert len(healed.returned) >= 2  # type: ignore[attr-defined]
        assert set(healed.returned) <= set(far)  # type: ignore[attr-defined]


def test_one_crashed_member_is_no_partition() -> None:
    net = mesh(8)
    net.crash("n5")
    net.run(60.0)
    for name in (f"n{i}" for i in range(8) if i != 5):
        assert net.events_of(name, PeerFailed)
        assert net.events_of(name, PartitionDetected) == []


def test_a_push_asking_for_the_full_state_gets_at_most_ten_times_its_size() -> None:
    """Before: an empty PUSH (45 bytes) got every member's claim back, x21.6 sealed and
    x60.6 unsealed in the amplification bench, and more the larger the membership."""
    node, others = _node_with_members(60)
    asker = others[0]
    push = encode_datagram(DatagramKind.PUSH, asker.public_key, 0, [], reply_wanted=True)
    node.receive_datagram("o0", push, now=1.0, sealed_by=asker.public_key)
    answer = sum(len(d) for address, d in node.datagrams_to_send() if address == "o0")
    assert 0 < answer <= AMPLIFICATION_LIMIT * len(push)


def test_a_push_asking_for_a_reply_is_padded_and_repeated_ones_cover_every_member() -> None:
    joiner = Membership(CONFIG, Identity(bytes([99]) * 32), "joiner", "j",
                        rng=random.Random(5), now=0.0)
    joiner.join(["seed"], now=0.0)
    [(address, push)] = joiner.datagrams_to_send()
    assert address == "seed"
    assert len(push) == CONFIG.max_datagram  # it pays for the answer it asks for
    assert decode_datagram(push).reply_wanted
    node, others = _node_with_members(60)
    asker = others[0]
    padded = encode_datagram(DatagramKind.PUSH, asker.public_key, 0, [], reply_wanted=True,
                             padding=CONFIG.max_datagram - 45)
    learned: set[bytes] = set()
    for round_ in range(12):
        node.receive_datagram("o0", padded, now=1.0 + round_ * CONFIG.push_pull_interval,
                              sealed_by=asker.public_key)
        answer = [d for address, d in node.datagrams_to_send() if address == "o0"]
        assert sum(map(len, answer)) <= AMPLIFICATION_LIMIT * len(padded)
        learned.update(claim.subject for d in answer for claim in decode_datagram(d).claims)
    assert learned == {o.public_key for o in others} | {ME.public_key}


def test_one_member_accusing_many_at_once_gets_a_few_suspicions_not_all() -> None:
    """Before: one admitted member's SUSPECT claims about every other member, in one
    datagram, put all of them under suspicion at once (each had to refute, and every
    node's view of the mesh turned suspect)."""
    node, others = _node_with_members(8)
    accuser = others[0]
    claims = [signed(accuser, encode_claim_body(ClaimType.SUSPECT, o.public_key, 0,
                                                author=accuser.public_key))
              for o in others[1:]]
    node.receive_datagram("o0", claims_datagram(accuser.public_key, *claims), now=0.1,
                          sealed_by=accuser.public_key)
    suspects = [o for o in others if node.member(o.public_key).state  # type: ignore[union-attr]
                == PeerState.SUSPECT]
    assert len(suspects) == 3
    assert node.statistics().rejected["suspicion_limited"] == len(claims) - 3
    # Another member's suspicion still counts: the budget is per author.
    second = signed(others[1], encode_claim_body(ClaimType.SUSPECT, others[7].public_key, 0,
                                                 author=others[1].public_key))
    node.receive_datagram("o1", claims_datagram(others[1].public_key, second), now=0.2,
                          sealed_by=others[1].public_key)
    assert node.member(others[7].public_key).state == PeerState.SUSPECT  # type: ignore[union-attr]
