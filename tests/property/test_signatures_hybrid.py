"""Hybrid (Ed25519 + ML-DSA-65) signatures: every message type others verify fails if either half is
wrong, and downgrades (stripping the ML-DSA half, a classic signature) are refused."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mycelium.consensus.messages import Commitment, Precommit, Proposal, Reveal, sign, verify_message
from mycelium.consensus.redundant import Participant, make_task
from mycelium.identity import Genesis, create_network, make_invite, scheme_of, verify
from mycelium.ledger.operations import OperationError, OpType, check_operation, sign_operation
from mycelium.signatures import (
    ED25519_SIGNATURE_SIZE,
    HYBRID_SIGNATURE_SIZE,
    PQ_KEYS,
    Scheme,
    SchemeError,
)
from mycelium.spores.entry import EntryType, make_entry
from mycelium.spores.primary import CertifiedPrimary, certify_genesis, genesis_primary
from mycelium.spores.seed import SeedError, make_seed
from mycelium.testing.spores import node_key

FOUNDER = node_key(0)
OTHER = node_key(1)
GENESIS, _SECRET = create_network("pq-home", FOUNDER, pq=True)
NET = GENESIS.network_id
PRIMARY = genesis_primary(GENESIS)
PQ_KEYS.pin(NET, OTHER.node_id, OTHER.pq_public)  # as a certified Primary naming OTHER would
HASH = bytes(range(32))


def _ok(fn) -> bool:
    try:
        return fn() is not False
    except (OperationError, SeedError, ValueError):
        return False


# kind → (signed object, how to swap its signature, how to check it)
def _operation():
    op = sign_operation(FOUNDER, NET, OpType.ALIVE, {}, now_s=1_700_000_000)
    return op, "signature", lambda o: _ok(lambda: check_operation(o, PRIMARY, now_s=None))


def _votes():
    out = []
    for msg in (Proposal(1, 0, (), HASH, -1, FOUNDER.node_id), Commitment(1, 0, HASH, FOUNDER.node_id),
                Reveal(1, 0, HASH, HASH, FOUNDER.node_id), Precommit(1, 0, HASH, FOUNDER.node_id)):
        out.append((sign(msg, FOUNDER, NET), "signature", lambda m: verify_message(m, NET)))
    return out


def _certificate():
    qc = certify_genesis(PRIMARY, FOUNDER)

    def with_sig(sig):
        return dataclasses.replace(qc, signatures={FOUNDER.node_id: sig})

    return qc, with_sig, lambda c: _ok(lambda: c.verify(NET, [FOUNDER.node_id], expect_value=PRIMARY.hash()))


def _entry():
    e = make_entry(OTHER, NET, EntryType.NODE, {"v": 1}, version=1, timestamp_ms=1_000)
    return e, "signature", lambda x: x.verify_signature(NET)


def _seed():
    snap = CertifiedPrimary(PRIMARY, certify_genesis(PRIMARY, FOUNDER))
    s = make_seed(OTHER, NET, snap, [FOUNDER.node_id], [], created_ms=1_000)
    return s, "signature", lambda x: _ok(lambda: x.verify(NET))


def _invite():
    inv = make_invite(FOUNDER, NET, ttl_s=3600, uses=1, now_s=1_700_000_000)
    return inv, "signature", lambda i: i.verify_signature()


def _task_messages():
    p = Participant(OTHER, NET)
    task = make_task({"q": 1}, 0, [OTHER.node_id], 1)
    c = p.commit(task, {"a": 1})
    r = p.reveal(task)
    check = lambda m: verify(m.node, m.signing_bytes(NET), m.signature, NET)  # noqa: E731
    return [(c, "signature", check), (r, "signature", check)]


CASES = [_operation(), *_votes(), _certificate(), _entry(), _seed(), _invite(), *_task_messages()]
IDS = ["operation", "proposal", "commitment", "reveal", "precommit", "certificate", "entry", "seed", "invite",
       "task-commit", "task-reveal"]


def _signature(obj):
    if hasattr(obj, "signatures"):
        return next(iter(obj.signatures.values()))
    return obj.signature


def _with(obj, how, sig):
    return how(sig) if callable(how) else dataclasses.replace(obj, **{how: sig})


def test_the_network_is_hybrid_and_signatures_have_both_halves():
    assert scheme_of(NET) is Scheme.HYBRID
    for obj, _how, check in CASES:
        assert len(_signature(obj)) == HYBRID_SIGNATURE_SIZE
        assert check(obj), type(obj).__name__


@pytest.mark.parametrize("case", range(len(CASES)), ids=IDS)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(half=st.sampled_from(["ed25519", "ml-dsa"]), data=st.data())
def test_a_wrong_half_fails_verification(case, half, data):
    obj, how, check = CASES[case]
    sig = bytearray(_signature(obj))
    lo, hi = (0, ED25519_SIGNATURE_SIZE) if half == "ed25519" else (ED25519_SIGNATURE_SIZE, HYBRID_SIGNATURE_SIZE)
    pos = data.draw(st.integers(lo, hi - 1), label="byte")
    sig[pos] ^= data.draw(st.integers(1, 255), label="xor")
    assert not check(_with(obj, how, bytes(sig)))


@pytest.mark.parametrize("case", range(len(CASES)), ids=IDS)
def test_downgrades_are_refused(case):
    obj, how, check = CASES[case]
    sig = _signature(obj)
    assert not check(_with(obj, how, sig[:ED25519_SIGNATURE_SIZE])), "stripped ML-DSA half accepted"
    assert not check(_with(obj, how, sig[ED25519_SIGNATURE_SIZE:])), "stripped Ed25519 half accepted"
    assert not check(_with(obj, how, sig[:ED25519_SIGNATURE_SIZE] + b"\0" * (len(sig) - ED25519_SIGNATURE_SIZE)))
    # a valid ML-DSA half from another signed message does not combine with this Ed25519 half
    for key in (FOUNDER, OTHER):
        spliced = sig[:ED25519_SIGNATURE_SIZE] + key.sign_for(NET, b"another message")[ED25519_SIGNATURE_SIZE:]
        assert not check(_with(obj, how, spliced))


def test_a_classic_signature_over_the_same_bytes_is_refused_in_a_hybrid_network():
    op = sign_operation(FOUNDER, NET, OpType.ALIVE, {}, now_s=1_700_000_000)
    classic = FOUNDER.sign(op.signing_bytes(NET))
    assert not verify(FOUNDER.node_id, op.signing_bytes(NET), classic, NET)
    with pytest.raises(OperationError, match="invalid signature"):
        check_operation(dataclasses.replace(op, signature=classic), PRIMARY, now_s=None)


def test_the_ed25519_half_alone_is_not_a_classic_signature_either():
    """Non-separability: the Ed25519 half signs a domain-separated message, so it does not verify
    as a classic signature over the data (in a classic network)."""
    classic_net = "cd" * 32
    data = b"some operation bytes"
    hybrid = FOUNDER.sign_for(NET, data)
    assert verify(FOUNDER.node_id, data, hybrid, NET)
    assert not verify(FOUNDER.node_id, data, hybrid[:ED25519_SIGNATURE_SIZE], classic_net)


def test_an_unpinned_node_cannot_sign_anything_in_a_hybrid_network():
    stranger = node_key(77)
    data = b"hello"
    assert not verify(stranger.node_id, data, stranger.sign_for(NET, data), NET)
    # … unless it presents its key (a join), and only the right one
    assert verify(stranger.node_id, data, stranger.sign_for(NET, data), NET, pq_key=stranger.pq_public)
    assert not verify(stranger.node_id, data, stranger.sign_for(NET, data), NET, pq_key=OTHER.pq_public)


def test_pins_cannot_be_replaced_and_schemes_not_rebound():
    with pytest.raises(SchemeError, match="already pinned"):
        PQ_KEYS.pin(NET, OTHER.node_id, FOUNDER.pq_public)
    assert verify(OTHER.node_id, b"x", OTHER.sign_for(NET, b"x"), NET)
    # the genesis hash covers the scheme: the same record with scheme=classic is another network
    classic_twin = Genesis(GENESIS.name, GENESIS.founder, GENESIS.created_s, GENESIS.params)
    assert classic_twin.network_id != NET and scheme_of(classic_twin.network_id) is Scheme.CLASSIC


def test_a_hybrid_genesis_round_trips_and_a_stripped_one_is_another_network():
    again = Genesis.from_wire(GENESIS.to_wire())
    assert again.network_id == NET and again.scheme is Scheme.HYBRID
    wire = GENESIS.to_wire()
    wire.pop("pq")
    from mycelium.identity import IdentityError

    with pytest.raises(IdentityError, match="ML-DSA-65 key"):
        Genesis.from_wire(wire)
    wire.pop("scheme")
    assert Genesis.from_wire(wire).network_id != NET  # "downgrading" the genesis founds another network


def test_the_registries_are_bounded_and_never_evict():
    from mycelium.signatures import NetworkSchemes, PqKeyDirectory

    schemes = NetworkSchemes(capacity=2)
    schemes.bind("a" * 64, Scheme.HYBRID)
    schemes.bind("b" * 64, Scheme.CLASSIC)
    schemes.bind("a" * 64, Scheme.HYBRID)  # rebinding the same is fine
    with pytest.raises(SchemeError, match="already holds 2 networks"):
        schemes.bind("c" * 64, Scheme.CLASSIC)
    assert schemes.of("a" * 64) is Scheme.HYBRID  # the hybrid binding survived
    with pytest.raises(SchemeError, match="cannot also be"):
        schemes.bind("a" * 64, Scheme.CLASSIC)
    keys = PqKeyDirectory(capacity=1)
    keys.pin(NET, FOUNDER.node_id, FOUNDER.pq_public)
    with pytest.raises(SchemeError, match="full"):
        keys.pin(NET, OTHER.node_id, OTHER.pq_public)
    assert len(keys) == 1 and keys.get(NET, FOUNDER.node_id) == FOUNDER.pq_public
