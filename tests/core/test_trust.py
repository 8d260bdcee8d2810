"""The trust policy (core/trust.py) and how the endpoint enforces it, attacked as a
stranger, an impostor or a revoked node would, on a stepped clock."""

from __future__ import annotations

import contextlib
import itertools
import random

import pytest
from hypothesis import given, strategies as st

from somasync.config import GossipConfig
from somasync.core import wire
from somasync.core.crypto import Identity
from somasync.core.events import FrameRejected, PeerConnected, PeerRevoked
from somasync.core.payload import MessageType
from somasync.core.trust import Certificate, Trust, parse_revocation, revocation_payload
from somasync.errors import DecodeError
from somasync.message import Message
from somasync.testing import WALL, Mesh

OPERATOR = Identity(bytes([9]) * 32)
NODES = {name: Identity(bytes([i + 1]) * 32) for i, name in enumerate("abcdx")}
DAY = 86_400


def cert(name: str, *, operator: Identity = OPERATOR, key: bytes | None = None,
         start: float = WALL - DAY, days: float = 30, publish: bool = True) -> Certificate:
    return Certificate.issue(operator, name, key or NODES[name].public_key,
                             not_before=int(start), not_after=int(start + days * DAY),
                             may_publish=publish)


# --- certificates -----------------------------------------------------------------------

def test_a_certificate_round_trips_and_its_signature_covers_every_field() -> None:
    original = cert("a")
    decoded = Certificate.decode(original.encode())
    assert decoded == original
    assert decoded.signature_ok()
    raw = bytearray(original.encode())
    for position in range(1, len(raw) - 64):  # any field but the version byte
        raw[position] ^= 0x01
        with contextlib.suppress(DecodeError):
            assert not Certificate.decode(bytes(raw)).signature_ok()
        raw[position] ^= 0x01


@given(st.binary(max_size=300))
def test_decoding_anything_raises_only_decode_error(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        Certificate.decode(data)


def test_every_strict_prefix_of_a_certificate_is_refused() -> None:
    raw = cert("a").encode()
    for cut in range(len(raw)):
        with pytest.raises(DecodeError):
            Certificate.decode(raw[:cut])


def test_revocation_payloads() -> None:
    key = NODES["c"].public_key
    assert parse_revocation(revocation_payload(key, 1)) == key
    assert parse_revocation(b"something else") is None
    assert parse_revocation(revocation_payload(key, 1)[:-1]) is None


# --- the three policies --------------------------------------------------------------------

def test_open_policy_binds_a_name_to_the_first_key() -> None:
    trust = Trust()
    a, x = NODES["a"].public_key, NODES["x"].public_key
    assert trust.admit(a, "a", b"", wall=WALL) is None
    assert trust.admit(x, "a", b"", wall=WALL) == "name_taken"
    assert trust.admit(a, "a", b"", wall=WALL) is None  # the same key again is fine
    assert trust.check_source(a, "a", wall=WALL) is None
    assert trust.check_source(a, "b", wall=WALL) == "source_mismatch"  # a is "a"
    assert trust.check_source(x, "a", wall=WALL) == "source_mismatch"  # "a" is a's
    assert trust.check_source(x, "feed-x", wall=WALL) is None  # nobody's yet
    assert trust.refusals == {"name_taken": 1}
    assert trust.take_learned() == [("a", a, b"")]


def test_allowlist_policy_admits_exactly_the_list() -> None:
    a = NODES["a"].public_key
    trust = Trust("allowlist", allowlist={"a": a})
    assert trust.admit(a, "a", b"", wall=WALL) is None
    assert trust.admit(NODES["x"].public_key, "x", b"", wall=WALL) == "not_allowed"
    assert trust.admit(NODES["x"].public_key, "a", b"", wall=WALL) == "not_allowed"
    assert trust.admit(a, "b", b"", wall=WALL) == "not_allowed"
    assert trust.admits_key(a)
    assert not trust.admits_key(NODES["x"].public_key)
    assert trust.check_source(a, "a", wall=WALL) is None
    assert trust.check_source(NODES["x"].public_key, "x", wall=WALL) == "source_mismatch"


@pytest.mark.parametrize(("certificate", "name", "reason"), [
    (lambda: cert("a"), "a", None),
    (lambda: cert("a", start=WALL - 40 * DAY), "a", "certificate_expired"),
    (lambda: cert("a", start=WALL + DAY), "a", "certificate_not_yet_valid"),
    (lambda: cert("b", key=NODES["a"].public_key), "a", "certificate_mismatch"),
    (lambda: cert("a"), "b", "certificate_mismatch"),
    (lambda: cert("a", operator=NODES["x"]), "a", "unknown_operator"),
    (lambda: None, "a", "no_certificate"),
])
def test_certificates_policy_refuses_each_bad_certificate_by_name(
        certificate, name: str, reason: str | None) -> None:  # type: ignore[no-untyped-def]
    trust = Trust("certificates", operators=[OPERATOR.public_key])
    made = certificate()
    credential = made.encode() if made is not None else b""
    assert trust.admit(NODES["a"].public_key, name, credential, wall=WALL) == reason


def test_a_forged_certificate_signature_is_refused() -> None:
    trust = Trust("certificates", operators=[OPERATOR.public_key])
    raw = bytearray(cert("a").encode())
    raw[-1] ^= 0x01
    assert trust.admit(NODES["a"].public_key, "a", bytes(raw), wall=WALL) == "bad_certificate"
    assert trust.admit(NODES["a"].public_key, "a", b"\x01garbage", wall=WALL) == \
        "bad_certificate"


def test_certificates_decide_which_source_a_key_may_use() -> None:
    trust = Trust("certificates", operators=[OPERATOR.public_key])
    a, b = NODES["a"].public_key, NODES["b"].public_key
    assert trust.admit(a, "a", cert("a").encode(), wall=WALL) is None
    assert trust.admit(b, "b", cert("b", publish=False).encode(), wall=WALL) is None
    assert trust.check_source(a, "a", wall=WALL) is None
    assert trust.check_source(a, "b", wall=WALL) == "source_mismatch"
    assert trust.check_source(b, "b", wall=WALL) == "may_not_publish"
    assert trust.check_source(NODES["x"].public_key, "x", wall=WALL) == "unknown_origin"
    assert trust.check_source(a, "a", wall=WALL + 60 * DAY) == "certificate_expired"


def test_a_revoked_key_is_refused_everywhere_in_the_policy() -> None:
    trust = Trust("certificates", operators=[OPERATOR.public_key])
    a = NODES["a"].public_key
    assert trust.admit(a, "a", cert("a").encode(), wall=WALL) is None
    assert trust.revoke(a, b"notice")
    assert not trust.revoke(a, b"notice")
    assert trust.admit(a, "a", cert("a").encode(), wall=WALL) == "revoked"
    assert trust.check_source(a, "a", wall=WALL) == "revoked"
    assert not trust.admits_key(a)
    assert trust.revocation_frames() == [b"notice"]


# --- enforced by the endpoint ------------------------------------------------------------------

def signed(identity: Identity, source: str, sequence: int = 1, *,
           timestamp: float = WALL, ttl: int = 3600,
           payload: MessageType | None = None) -> wire.Envelope:
    message = Message(payload or MessageType.Data("x"), source, sequence=sequence,
                      timestamp=timestamp, ttl=ttl)
    return message.sign_with_ed25519(identity).to_envelope()


def chain(names: str, **trusts: Trust) -> Mesh:
    mesh = Mesh()
    for name in names:
        mesh.add(name, identity=NODES[name], trust=trusts.get(name))
    for left, right in itertools.pairwise(names):
        mesh.connect(left, right)
    mesh.settle()
    return mesh


def test_a_message_whose_source_is_another_nodes_name_is_refused_by_its_receiver() -> None:
    """Before: key X broadcast as "node-Y" and receivers delivered it, signature valid."""
    mesh = chain("abc")
    mesh.nodes["a"].broadcast(signed(NODES["a"], "c"), now=mesh.now)  # a poses as c
    mesh.nodes["a"].broadcast(signed(NODES["x"], "b", 1), now=mesh.now)  # so does x, as b
    mesh.settle()
    assert mesh.delivered["b"] == []
    assert mesh.delivered["c"] == []
    assert mesh.nodes["b"].statistics().rejected == {"source_mismatch": 2}
    refused = [e for e in mesh.events["b"] if isinstance(e, FrameRejected)]
    assert [e.closed for e in refused] == [False, False]  # a may be an honest relay
    # Under its own names, the same keys are heard.
    mesh.nodes["a"].broadcast(signed(NODES["a"], "a", 2), now=mesh.now)
    mesh.nodes["a"].broadcast(signed(NODES["x"], "x-feed", 2), now=mesh.now)
    mesh.settle()
    assert len(mesh.delivered["c"]) == 2


def test_a_message_older_than_max_message_age_is_refused_whatever_its_ttl() -> None:
    mesh = chain("ab")
    age = mesh.config.max_message_age
    mesh.nodes["a"].broadcast(signed(NODES["a"], "a", 1, timestamp=WALL - age - 5,
                                     ttl=0xFFFFFFFF), now=mesh.now)
    mesh.settle()
    assert mesh.delivered["b"] == []
    assert mesh.nodes["b"].statistics().rejected == {"too_old": 1}


def test_under_an_allowlist_a_stranger_gets_no_link_and_nothing_else() -> None:
    listed = {name: NODES[name].public_key for name in "ab"}
    mesh = Mesh()
    for name in "ab":
        mesh.add(name, identity=NODES[name], trust=Trust("allowlist", allowlist=listed))
    mesh.add("x", identity=NODES["x"])
    mesh.connect("a", "b")
    stranger = mesh.connect("x", "a")
    mesh.nodes["a"].broadcast(signed(NODES["a"], "a"), now=mesh.now)
    mesh.settle()
    assert mesh.delivered["b"] != []
    assert mesh.delivered["x"] == []
    assert not [e for e in mesh.events["a"] if isinstance(e, PeerConnected)
                and e.public_key == NODES["x"].public_key]
    assert mesh.nodes["a"].statistics().rejected == {"not_allowed": 1}
    assert (("x", stranger.link_a) not in mesh.wires)  # closed
    assert mesh.nodes["x"].statistics().frames_in == 0  # not even a digest


def certified_mesh(names: str) -> tuple[Mesh, dict[str, Trust]]:
    trusts = {name: Trust("certificates", operators=[OPERATOR.public_key]) for name in names}
    mesh = Mesh()
    for name in names:
        mesh.add(name, identity=NODES[name], trust=trusts[name],
                 credential=cert(name).encode())
    return mesh, trusts


def revocation(key: bytes, sequence: int = 1) -> wire.Envelope:
    return signed(OPERATOR, "somasync-operator", sequence,
                  payload=MessageType.Binary(revocation_payload(key, int(WALL))))


def test_a_revoked_node_is_cut_off_everywhere_also_by_a_node_that_joins_later() -> None:
    mesh, trusts = certified_mesh("abcd")
    mesh.connect("a", "b")
    mesh.connect("b", "c")
    mesh.settle()
    c = NODES["c"].public_key
    assert {e.peer_id for e in mesh.events["b"] if isinstance(e, PeerConnected)} == {"a", "c"}
    # The operator's notice enters at a and travels like any message.
    mesh.nodes["a"].broadcast(revocation(c), now=mesh.now)
    mesh.settle()
    for name in "ab":
        assert trusts[name].is_revoked(c), name
    assert [e.public_key for e in mesh.events["b"] if isinstance(e, PeerRevoked)] == [c]
    assert ("b", mesh.link_of("b", "a")) in mesh.wires
    assert not any(owner == "b" and "c" in (w.a, w.b) for (owner, _), w in mesh.wires.items())
    # c's messages are refused by its former neighbour...
    mesh.connect("c", "b")
    mesh.settle()
    assert mesh.nodes["b"].statistics().rejected.get("revoked", 0) >= 1
    # ...and by d, which joins through b after it all happened.
    mesh.connect("d", "b")
    mesh.settle()
    assert trusts["d"].is_revoked(c)
    mesh.connect("c", "d")
    mesh.settle()
    assert mesh.nodes["d"].statistics().rejected.get("revoked", 0) == 1
    assert not [e for e in mesh.events["d"] if isinstance(e, PeerConnected)
                and e.public_key == c]


def test_a_revocation_signed_by_anyone_but_the_operator_changes_nothing() -> None:
    mesh, trusts = certified_mesh("ab")
    mesh.connect("a", "b")
    mesh.settle()
    forged = signed(NODES["a"], "a", 1,
                    payload=MessageType.Binary(revocation_payload(NODES["b"].public_key, 0)))
    mesh.nodes["a"].broadcast(forged, now=mesh.now)
    mesh.settle()
    assert not trusts["b"].is_revoked(NODES["b"].public_key)
    assert len(mesh.delivered["b"]) == 1  # just a message from a


def test_a_node_without_a_valid_certificate_gets_no_link() -> None:
    mesh, _ = certified_mesh("ab")
    mesh.add("x", identity=NODES["x"],
             credential=cert("x", operator=NODES["d"]).encode())  # its own "operator"
    mesh.connect("x", "a")
    mesh.settle()
    assert mesh.nodes["a"].statistics().rejected == {"unknown_operator": 1}
    assert not [e for e in mesh.events["a"] if isinstance(e, PeerConnected)]


def test_settings_round_trip_through_the_config() -> None:
    assert GossipConfig().max_message_age >= 3600  # the replay bound is in hours


def test_under_the_open_policy_a_name_is_free_again_once_its_key_is_declared_gone() -> None:
    trust = Trust()
    a, x = NODES["a"].public_key, NODES["x"].public_key
    assert trust.admit(a, "a", b"", wall=WALL) is None
    assert trust.admit(x, "a", b"", wall=WALL) == "name_taken"
    trust.release(a)  # membership: a failed, or left
    assert trust.take_released() == [a]
    assert trust.admit(x, "a", b"", wall=WALL) is None  # a restarted with a new key
    assert trust.admit(a, "a", b"", wall=WALL) == "name_taken"  # the old life is not back


def test_membership_releases_the_name_of_a_member_that_left() -> None:
    from somasync.config import MembershipConfig
    from somasync.core.membership import Membership
    from somasync.core.membership_wire import (
        CLAIM_DOMAIN,
        ClaimType,
        DatagramKind,
        encode_claim_body,
        encode_datagram,
    )

    trust = Trust()
    node = Membership(MembershipConfig.local(), NODES["d"], "d", "d:1",
                      rng=random.Random(1), now=0.0, trust=trust)

    def claim(identity: Identity, body: bytes) -> bytes:
        raw = body + identity.sign(CLAIM_DOMAIN, body)
        return encode_datagram(DatagramKind.GOSSIP, identity.public_key, 0, [raw])

    old, new = NODES["a"], NODES["x"]
    node.receive_datagram("a:1", claim(old, encode_claim_body(
        ClaimType.ALIVE, old.public_key, 0, node_id="a", address="a:1")), now=0.0)
    node.receive_datagram("x:1", claim(new, encode_claim_body(
        ClaimType.ALIVE, new.public_key, 0, node_id="a", address="x:1")), now=0.1)
    assert node.member(new.public_key) is None
    assert node.statistics().rejected == {"name_taken": 1}
    node.receive_datagram("a:1", claim(old, encode_claim_body(
        ClaimType.LEAVE, old.public_key, 0)), now=0.2)
    node.receive_datagram("x:1", claim(new, encode_claim_body(
        ClaimType.ALIVE, new.public_key, 1, node_id="a", address="x:1")), now=0.3)
    assert node.member(new.public_key) is not None
    assert trust.name_of(new.public_key) == "a"
