"""Consensus wire messages: round trips, signatures, domain separation, strict parsing, evidence."""

from __future__ import annotations

import pytest

from mycelium.encoding import canonical, decode
from mycelium.identity import NodeKey
from mycelium.spores.certificate import precommit_signing_bytes
from mycelium.consensus.messages import (
    NIL, Commitment, MessageError, MessageType, Precommit, Proposal, Reveal, commit_nonce, commitment_hash,
    parse_message, sign, verify_message,
)
from mycelium.consensus.outcomes import EvidenceKind, equivocation, reveal_mismatch, verify_evidence

KEY = NodeKey.from_seed(b"\x01" * 32)
OTHER = NodeKey.from_seed(b"\x02" * 32)
NET = "net-a"
H32 = b"\x07" * 32


def samples(key: NodeKey = KEY):
    me = key.node_id
    return [
        sign(Proposal(3, 1, ("op-a", {"k": 1}), H32, 0, me), key, NET),
        sign(Commitment(3, 1, H32, me), key, NET),
        sign(Reveal(3, 1, H32, b"\x05" * 32, me), key, NET),
        sign(Reveal(3, 1, NIL, b"\x05" * 32, me), key, NET),
        sign(Precommit(3, 1, H32, me), key, NET),
        sign(Precommit(3, 1, NIL, me), key, NET),
    ]


@pytest.mark.parametrize("message", samples(), ids=lambda m: type(m).__name__)
def test_round_trip_through_bytes_keeps_message_and_signature(message):
    wire = canonical(message.to_wire())
    parsed = parse_message(wire)
    assert parsed == message
    assert verify_message(parsed, NET)


@pytest.mark.parametrize("message", samples(), ids=lambda m: type(m).__name__)
def test_signature_is_bound_to_network_and_content(message):
    assert not verify_message(message, "net-b"), "a signature must not be valid in another network"
    wire = message.to_wire()
    wire["r"] = message.round + 1
    assert not verify_message(parse_message(wire), NET), "nor for another round"
    forged = parse_message({**message.to_wire(), "from": OTHER.node_id})
    assert not verify_message(forged, NET), "nor under another validator's name"


def test_steps_are_domain_separated():
    """A commitment's signature never verifies as a precommit for the same bytes, and vice versa."""
    c = sign(Commitment(3, 1, H32, KEY.node_id), KEY, NET)
    as_precommit = Precommit(3, 1, H32, KEY.node_id, c.signature)
    assert not verify_message(as_precommit, NET)


def test_precommit_signs_exactly_the_certificate_bytes():
    p = sign(Precommit(9, 2, H32, KEY.node_id), KEY, NET)
    assert p.signing_bytes(NET) == precommit_signing_bytes(NET, 9, 2, H32)


def test_commitment_binds_candidate_nonce_validator_height_round():
    base = commitment_hash(H32, b"n" * 32, KEY.node_id, 1, 0)
    assert len({base, commitment_hash(NIL, b"n" * 32, KEY.node_id, 1, 0),
                commitment_hash(H32, b"m" * 32, KEY.node_id, 1, 0),
                commitment_hash(H32, b"n" * 32, OTHER.node_id, 1, 0),
                commitment_hash(H32, b"n" * 32, KEY.node_id, 2, 0),
                commitment_hash(H32, b"n" * 32, KEY.node_id, 1, 1)}) == 6


def test_nonce_is_reproducible_by_its_owner_only():
    assert commit_nonce(KEY, NET, 1, 0, H32) == commit_nonce(KEY, NET, 1, 0, H32)
    assert commit_nonce(KEY, NET, 1, 0, H32) != commit_nonce(OTHER, NET, 1, 0, H32)
    assert commit_nonce(KEY, NET, 1, 0, H32) != commit_nonce(KEY, NET, 1, 1, H32)


@pytest.mark.parametrize("raw,why", [
    (b"\xc1", "undecodable"),
    ([1, 2], "is a map"),
    ({"v": 2, "t": 1}, "version"),
    ({"v": 1, "t": 99}, "unknown message type"),
    ({"v": 1, "t": True}, "unknown message type"),
    ({"v": 1, "t": 2, "h": -1, "r": 0}, "'h'"),
    ({"v": 1, "t": 2, "h": 1, "r": 0, "c": b"short", "from": KEY.node_id, "sig": b"s" * 64}, "'c'"),
    ({"v": 1, "t": 2, "h": 1, "r": 0, "c": H32, "from": "nobody", "sig": b"s" * 64}, "'from'"),
    ({"v": 1, "t": 2, "h": 1, "r": 0, "c": H32, "from": KEY.node_id, "sig": b"s"}, "'sig'"),
    ({"v": 1, "t": 1, "h": 1, "r": 0, "vr": 0, "batch": [], "prev": H32, "from": KEY.node_id, "sig": b"s" * 64}, "'vr'"),
    ({"v": 1, "t": 1, "h": 1, "r": 0, "vr": -1, "batch": "x", "prev": H32, "from": KEY.node_id, "sig": b"s" * 64}, "batch"),
    ({"v": 1, "t": 3, "h": 1, "r": 0, "cand": H32, "nonce": NIL, "from": KEY.node_id, "sig": b"s" * 64}, "'nonce'"),
    ({"v": 1, "t": 5, "h": 1, "batch": [], "prev": H32, "qc": {"h": 2, "r": 0, "hash": H32, "sigs": {}}}, "another height"),
])
def test_malformed_messages_are_refused_with_a_reason(raw, why):
    with pytest.raises(MessageError, match=why):
        parse_message(raw)


def test_message_types_are_append_only():
    assert [(m.name, m.value) for m in MessageType] == [
        ("PROPOSAL", 1), ("COMMITMENT", 2), ("REVEAL", 3), ("PRECOMMIT", 4), ("DECISION", 5), ("STATUS", 6)]


def test_sign_refuses_a_message_naming_another_validator():
    with pytest.raises(ValueError):
        sign(Commitment(1, 0, H32, OTHER.node_id), KEY, NET)


def test_equivocation_evidence_is_verifiable_by_anyone():
    a = sign(Precommit(3, 1, H32, KEY.node_id), KEY, NET)
    b = sign(Precommit(3, 1, b"\x08" * 32, KEY.node_id), KEY, NET)
    evidence = equivocation(a, b)
    assert evidence.kind is EvidenceKind.EQUIVOCATION
    assert verify_evidence(evidence, NET)
    assert decode(canonical(evidence.to_wire()))["kind"] == "equivocation"
    assert not verify_evidence(evidence, "net-b")
    assert not verify_evidence(equivocation(a, a), NET), "the same message twice proves nothing"
    other_round = sign(Precommit(3, 2, b"\x08" * 32, KEY.node_id), KEY, NET)
    assert not verify_evidence(equivocation(a, other_round), NET), "different rounds are not equivocation"
    framed = sign(Precommit(3, 1, b"\x08" * 32, OTHER.node_id), OTHER, NET)
    assert not verify_evidence(equivocation(a, framed), NET), "nobody can be framed with another's message"


def test_reveal_mismatch_evidence():
    nonce = commit_nonce(KEY, NET, 3, 1, H32)
    c = sign(Commitment(3, 1, commitment_hash(H32, nonce, KEY.node_id, 3, 1), KEY.node_id), KEY, NET)
    good = sign(Reveal(3, 1, H32, nonce, KEY.node_id), KEY, NET)
    bad = sign(Reveal(3, 1, b"\x09" * 32, nonce, KEY.node_id), KEY, NET)
    assert good.opens(c) and not bad.opens(c)
    assert verify_evidence(reveal_mismatch(c, bad), NET)
    assert not verify_evidence(reveal_mismatch(c, good), NET), "an honest reveal is no evidence"
