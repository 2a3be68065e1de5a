"""Primary chain: genesis, successors, tampering rejected with a clear reason; wire round trip."""

import dataclasses

import pytest

from mycelium.identity import Genesis
from mycelium.spores.certificate import QuorumCertificate, precommit_signing_bytes
from mycelium.spores.primary import (
    ZERO_HASH,
    CertifiedPrimary,
    ChainError,
    Member,
    PrimaryError,
    PrimarySpore,
    certify_genesis,
    genesis_primary,
    verify_chain,
    verify_extension,
    verify_genesis,
    verify_successor,
)
from mycelium.testing.spores import node_id, node_key

GENESIS = Genesis(name="home", founder=node_id(0), created_s=1_700_000_000, params={"max_validators": 7})


def certify(primary, signers, round_=0):
    value = primary.hash()
    msg = precommit_signing_bytes(primary.network_id, primary.height, round_, value)
    return QuorumCertificate(primary.height, round_, value, {node_id(i): node_key(i).sign(msg) for i in signers})


def successor(prev, **changes):
    fields = dict(
        network_id=prev.network_id,
        height=prev.height + 1,
        epoch=prev.epoch,
        prev_hash=prev.hash(),
        members=dict(prev.members),
        services=dict(prev.services),
        placements=dict(prev.placements),
        params=dict(prev.params),
        evidence=prev.evidence,
    )
    fields.update(changes)
    return PrimarySpore(**fields)


def four_validators(prev):
    members = {node_id(i): Member("sclerotium", 500_000, {}, 1, {"cores": 4}) for i in range(4)}
    return successor(prev, members=members, epoch=prev.epoch + 1)


@pytest.fixture
def chain():
    g = genesis_primary(GENESIS)
    links = [CertifiedPrimary(g, certify_genesis(g, node_key(0)))]
    p1 = four_validators(g)
    links.append(CertifiedPrimary(p1, certify(p1, [0])))  # certified by genesis' only validator
    p2 = successor(p1, services={"web": {"image": "nginx", "replicas": 2}}, placements={"web": [node_id(2), node_id(1)]})
    links.append(CertifiedPrimary(p2, certify(p2, [0, 1, 2])))  # 3 of 4
    return links


def test_genesis_has_the_founder_as_sole_sclerotium():
    g = genesis_primary(GENESIS)
    assert g.height == 0 and g.prev_hash == ZERO_HASH and g.network_id == GENESIS.network_id
    assert g.validators() == [node_id(0)] and g.params == {"max_validators": 7}
    qc = certify_genesis(g, node_key(0))
    assert len(qc.signatures) == 1
    verify_genesis(g, qc, GENESIS)


def test_genesis_of_another_network_or_altered_is_rejected():
    g = genesis_primary(GENESIS)
    qc = certify_genesis(g, node_key(0))
    other = Genesis(name="other", founder=node_id(0), created_s=1, params={})
    with pytest.raises(ChainError) as err:
        verify_genesis(g, qc, other)
    assert err.value.reason == "network"
    forged = dataclasses.replace(g, members={**g.members, node_id(5): Member("sclerotium", 500_000)})
    with pytest.raises(ChainError, match="differs from the one the network's Genesis"):
        verify_genesis(forged, certify_genesis(forged, node_key(0)), GENESIS)
    with pytest.raises(ChainError, match="invalid"):
        verify_genesis(g, certify_genesis(g, node_key(1)), GENESIS)


def test_valid_chain_verifies(chain):
    assert verify_chain(GENESIS, chain) == chain[-1].primary
    assert verify_extension(chain[0].primary, chain[1:]) == chain[-1].primary


def test_tampered_primary_is_rejected_with_reason(chain):
    p2 = chain[2].primary
    tampered = dataclasses.replace(p2, members={**p2.members, node_id(3): Member("hypha", 1_000_000)})
    with pytest.raises(ChainError) as err:
        verify_successor(chain[1].primary, tampered, chain[2].certificate)
    assert err.value.reason == "certificate" and "another Primary hash" in str(err.value)


def test_tampered_predecessor_breaks_the_link(chain):
    p1 = chain[1].primary
    tampered = dataclasses.replace(p1, params={"max_validators": 100})
    with pytest.raises(ChainError) as err:
        verify_successor(tampered, chain[2].primary, chain[2].certificate)
    assert err.value.reason == "prev_hash" and "tampered" in str(err.value)


def test_certificate_without_quorum_is_rejected(chain):
    p2 = chain[2].primary
    with pytest.raises(ChainError, match="only 2 of 4 validators signed"):
        verify_successor(chain[1].primary, p2, certify(p2, [0, 1]))


def test_certificate_by_outsiders_or_forged_signature(chain):
    p2 = chain[2].primary
    with pytest.raises(ChainError, match="non-validators"):
        verify_successor(chain[1].primary, p2, certify(p2, [0, 1, 2, 9]))
    qc = certify(p2, [0, 1, 2])
    sigs = dict(qc.signatures)
    sigs[node_id(1)] = bytes(64)
    with pytest.raises(ChainError, match="invalid signatures"):
        verify_successor(chain[1].primary, p2, dataclasses.replace(qc, signatures=sigs))


def test_certificate_for_another_height(chain):
    p2 = chain[2].primary
    qc = dataclasses.replace(certify(p2, [0, 1, 2]), height=5)
    with pytest.raises(ChainError, match="height 5"):
        verify_successor(chain[1].primary, p2, qc)


def test_height_epoch_and_network_rules(chain):
    p1 = chain[1].primary
    for changes, reason in [
        ({"height": 3}, "height"),
        ({"epoch": p1.epoch + 2}, "epoch"),
        ({"network_id": "ab" * 32}, "network"),
    ]:
        bad = successor(p1, **changes)
        with pytest.raises(ChainError) as err:
            verify_successor(p1, bad, certify(bad, [0, 1, 2]))
        assert err.value.reason == reason


def test_chain_with_a_gap_or_wrong_start_is_rejected(chain):
    with pytest.raises(ChainError) as err:
        verify_chain(GENESIS, [chain[0], chain[2]])
    assert err.value.reason == "height"
    with pytest.raises(ChainError):
        verify_chain(GENESIS, chain[1:])
    with pytest.raises(ChainError, match="empty chain"):
        verify_chain(GENESIS, [])


def test_wire_round_trip_is_byte_identical(chain):
    for link in chain:
        data = link.to_bytes()
        back = CertifiedPrimary.from_bytes(data)
        assert back == link and back.to_bytes() == data
        assert back.primary.hash() == link.primary.hash()


def test_validators_are_the_sclerotia(chain):
    p = chain[1].primary
    members = {**p.members, node_id(7): Member("rhizomorph", 500_000)}
    assert dataclasses.replace(p, members=members).validators() == sorted(node_id(i) for i in range(4))


@pytest.mark.parametrize(
    "mutate,match",
    [
        (lambda w: w.update(v=2), "version 2"),
        (lambda w: w.update(h=-1), "height"),
        (lambda w: w.update(prev=b"short"), "prev hash"),
        (lambda w: w.update(extra=1), "exactly"),
        (lambda w: w["members"].update({"nope": {}}), "not a node id"),
        (lambda w: w["members"][node_id(0)].update(role="king"), "unknown role"),
        (lambda w: w["members"][node_id(0)].update(trust=2_000_000), "trust"),
        (lambda w: w.update(placements={"web": ["x"]}), "placements"),
        (lambda w: w.update(evidence="none"), "evidence"),
    ],
)
def test_malformed_primary_is_rejected(mutate, match):
    wire = genesis_primary(GENESIS).to_wire()
    mutate(wire)
    with pytest.raises(PrimaryError, match=match):
        PrimarySpore.from_wire(wire)


def test_garbage_bytes_are_rejected():
    for data in [b"", b"\xc1", b"\x80", genesis_primary(GENESIS).to_bytes()[:-3]]:
        with pytest.raises(PrimaryError):
            PrimarySpore.from_bytes(data)
    with pytest.raises(PrimaryError, match="certificate is malformed"):
        CertifiedPrimary.from_wire({"primary": genesis_primary(GENESIS).to_wire(), "qc": {}})
