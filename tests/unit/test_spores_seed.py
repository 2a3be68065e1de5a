"""Seed spores (signed, adopted only after confirmation) and the authority order."""

import dataclasses

import pytest

from mycelium.identity import Genesis
from mycelium.spores.entry import EntryType
from mycelium.spores.primary import CertifiedPrimary, Member, certify_genesis, genesis_primary
from mycelium.spores.seed import (
    SeedError,
    SeedSpore,
    adoptable,
    effective_roles,
    latent_contradiction,
    make_seed,
    resolve_latent,
)
from mycelium.testing.spores import node_id, node_key, signed_entry

GENESIS = Genesis(name="home", founder=node_id(0), created_s=1_700_000_000)
NET = GENESIS.network_id


def snapshot():
    g = genesis_primary(GENESIS)
    return CertifiedPrimary(g, certify_genesis(g, node_key(0)))


def seed(holder=1, connections=(2, 3), observations=None):
    if observations is None:
        observations = [
            signed_entry(holder, EntryType.CONNECTION, 500, subject=2, network_id=NET),
            signed_entry(holder, EntryType.CONNECTION, 500, subject=3, network_id=NET),
            signed_entry(holder, EntryType.NODE, 1, network_id=NET),
        ]
    return make_seed(node_key(holder), NET, snapshot(), [node_id(c) for c in connections], observations, created_ms=1000)


def test_seed_round_trip_and_verify():
    s = seed()
    back = SeedSpore.from_bytes(s.to_bytes())
    assert back == s
    back.verify(NET)


def test_tampered_seed_is_rejected_and_says_why():
    s = seed()
    forged = dataclasses.replace(s, connections=s.connections + (node_id(9),))
    with pytest.raises(SeedError, match="signature .* does not verify"):
        forged.verify(NET)
    with pytest.raises(SeedError, match="another network|is for network"):
        s.verify("00" * 32)


def test_seed_with_someone_elses_observation_is_rejected():
    s = seed(observations=[signed_entry(4, EntryType.NODE, 1, network_id=NET)])
    with pytest.raises(SeedError, match="not the holder's signed entry"):
        s.verify(NET)


def test_malformed_seed_bytes():
    for data in [b"", b"\xc1", seed().to_bytes()[:-5]]:
        with pytest.raises(SeedError):
            SeedSpore.from_bytes(data)
    wire = seed().to_wire()
    wire["conns"] = ["x"]
    with pytest.raises(SeedError, match="connections"):
        SeedSpore.from_wire(wire)


def test_nothing_is_adopted_before_confirmation():
    adoption = adoptable(seed(), confirmed_peers=[])
    assert adoption.connections == () and adoption.entries == ()
    assert set(adoption.unconfirmed) == {node_id(2), node_id(3)}


def test_only_confirmed_connections_and_their_observations_are_adopted():
    adoption = adoptable(seed(), confirmed_peers=[node_id(2)])
    assert adoption.connections == (node_id(2),)
    assert adoption.unconfirmed == (node_id(3),)
    assert [e.subject for e in adoption.entries] == [node_id(2)]
    full = adoptable(seed(), confirmed_peers=[node_id(1), node_id(2), node_id(3), node_id(8)])
    assert len(full.entries) == 3 and node_id(8) not in full.connections


def primary_with(members, services=None, placements=None):
    g = genesis_primary(Genesis(name="t", founder=node_id(0), created_s=1))
    return dataclasses.replace(g, members=members, services=services or {}, placements=placements or {})


MEMBERS = {node_id(0): Member("sclerotium", 500_000), node_id(1): Member("rhizomorph", 500_000)}


def test_latent_role_claim_contradicting_the_primary_is_discarded():
    p = primary_with(MEMBERS)
    honest = signed_entry(1, EntryType.NODE, 1, body={"role": "rhizomorph"})
    liar = signed_entry(1, EntryType.NODE, 2, body={"role": "sclerotium"})
    assert latent_contradiction(honest, p) is None
    why = latent_contradiction(liar, p)
    assert "claims role 'sclerotium'" in why and "says 'rhizomorph'" in why
    kept, discarded = resolve_latent([honest, liar], p)
    assert kept == [honest] and discarded[0][0] == liar


def test_non_members_and_unplaced_services_contradict():
    p = primary_with(MEMBERS, services={"web": {}}, placements={"web": [node_id(0)]})
    assert "not a member" in latent_contradiction(signed_entry(5), p)
    assert "not a member" in latent_contradiction(signed_entry(1, EntryType.HEALTH, 9, subject=5), p)
    assert "does not define" in latent_contradiction(signed_entry(1, EntryType.SERVICE, 1, name="db"), p)
    assert "did not place" in latent_contradiction(signed_entry(1, EntryType.SERVICE, 1, name="web"), p)
    assert latent_contradiction(signed_entry(0, EntryType.SERVICE, 1, name="web"), p) is None


def test_without_a_primary_nothing_contradicts():
    assert latent_contradiction(signed_entry(5, body={"role": "sclerotium"}), None) is None


def test_authority_primary_over_seed_over_latent():
    p = primary_with(MEMBERS)
    s = seed()
    latent = [signed_entry(7, EntryType.NODE, 1, body={"role": "sclerotium"})]
    assert effective_roles(p, s, latent) == ({node_id(0): "sclerotium", node_id(1): "rhizomorph"}, "primary")
    assert effective_roles(None, s, latent) == ({node_id(0): "sclerotium"}, "seed")
    assert effective_roles(None, None, latent) == ({node_id(7): "sclerotium"}, "latent")



def test_validator_discards_contradicting_latent_entries():
    from mycelium.spores.seed import contradiction_for
    from mycelium.testing.spores import NETWORK_ID
    from mycelium.spores.validation import DropReason, EntryValidator

    v = EntryValidator(NETWORK_ID, contradiction=contradiction_for(primary_with(MEMBERS)))
    assert v.check(signed_entry(1, EntryType.NODE, 1, body={"role": "rhizomorph"}), node_id(1), 10_000) is not None
    assert v.check(signed_entry(1, EntryType.NODE, 2, body={"role": "sclerotium"}), node_id(1), 10_000) is None
    assert v.drops.as_dict() == {DropReason.CONTRADICTS_PRIMARY.value: 1}
    assert contradiction_for(None) is None
