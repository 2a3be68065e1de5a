"""Primary spores: canonical round trip, and any change to a certified Primary breaks the chain."""

import dataclasses

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mycelium.spores.certificate import QuorumCertificate, precommit_signing_bytes
from mycelium.spores.primary import (
    ROLES,
    ChainError,
    Member,
    PrimarySpore,
    CertifiedPrimary,
    verify_successor,
)
from mycelium.testing.spores import node_id, node_key

SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

small_maps = st.dictionaries(st.text(max_size=6), st.integers(-(2**31), 2**31) | st.text(max_size=6), max_size=3)
members = st.builds(
    Member,
    role=st.sampled_from(ROLES),
    trust_ppm=st.integers(0, 1_000_000),
    caps=small_maps,
    joined_at_height=st.integers(0, 1000),
    profile=small_maps,
)
node_ids = st.integers(0, 7).map(node_id)


@st.composite
def primaries(draw):
    ms = draw(st.dictionaries(node_ids, members, min_size=1, max_size=5))
    services = draw(st.dictionaries(st.sampled_from(["web", "db", "cache"]), small_maps, max_size=3))
    placements = {s: sorted(set(draw(st.lists(node_ids, max_size=3)))) for s in services}
    return PrimarySpore(
        network_id=draw(st.sampled_from(["ab" * 32, "cd" * 32])),
        height=draw(st.integers(0, 2**40)),
        epoch=draw(st.integers(0, 2**20)),
        prev_hash=draw(st.binary(min_size=32, max_size=32)),
        members=ms,
        services=services,
        placements=placements,
        params=draw(small_maps),
        evidence=tuple(draw(st.lists(small_maps, max_size=2))),
    )


@SETTINGS
@given(primaries())
def test_round_trip_is_identity_and_byte_identical(p):
    data = p.to_bytes()
    back = PrimarySpore.from_bytes(data)
    assert back == p and back.to_bytes() == data and back.hash() == p.hash()


def certified_successor(prev):
    nxt = PrimarySpore(prev.network_id, prev.height + 1, prev.epoch, prev.hash(), dict(prev.members), params={"n": 1})
    value = nxt.hash()
    msg = precommit_signing_bytes(nxt.network_id, nxt.height, 0, value)
    validators = prev.validators()
    sigs = {v: node_key(next(i for i in range(8) if node_id(i) == v)).sign(msg) for v in validators}
    return nxt, QuorumCertificate(nxt.height, 0, value, sigs)


MUTATIONS = {
    "height": st.integers(0, 10),
    "epoch": st.integers(0, 10),
    "prev_hash": st.binary(min_size=32, max_size=32),
    "members": st.dictionaries(node_ids, members, min_size=1, max_size=3),
    "services": st.dictionaries(st.just("svc"), small_maps, min_size=1, max_size=1),
    "params": small_maps,
    "evidence": st.lists(small_maps, min_size=1, max_size=2).map(tuple),
}


@SETTINGS
@given(primaries(), st.sampled_from(sorted(MUTATIONS)), st.data())
def test_any_change_to_a_certified_primary_is_rejected(prev, field, data):
    prev = dataclasses.replace(prev, members={**prev.members, node_id(0): Member("sclerotium", 500_000)})
    nxt, qc = certified_successor(prev)
    verify_successor(prev, nxt, qc)  # the honest successor is accepted
    changed = dataclasses.replace(nxt, **{field: data.draw(MUTATIONS[field])})
    if changed.to_bytes() == nxt.to_bytes():
        return
    try:
        verify_successor(prev, changed, qc)
    except ChainError as exc:
        assert exc.reason in {"height", "epoch", "prev_hash", "certificate"}
    else:
        raise AssertionError(f"a Primary with a changed {field} was accepted")
    # and the certified pair survives the wire unchanged
    assert CertifiedPrimary.from_bytes(CertifiedPrimary(nxt, qc).to_bytes()) == CertifiedPrimary(nxt, qc)


def _fixed_link():
    prev = PrimarySpore("ab" * 32, 5, 1, b"\7" * 32, {node_id(i): Member("sclerotium", 500_000) for i in range(4)})
    nxt, qc = certified_successor(prev)
    return prev, CertifiedPrimary(nxt, qc).to_bytes()


PREV, LINK_BYTES = _fixed_link()


@SETTINGS
@given(st.integers(0, len(LINK_BYTES) * 8 - 1))
def test_every_bit_flip_of_a_certified_primary_is_rejected(bit):
    from mycelium.spores.primary import PrimaryError

    raw = bytearray(LINK_BYTES)
    raw[bit // 8] ^= 1 << (bit % 8)
    try:
        link = CertifiedPrimary.from_bytes(bytes(raw))
        verify_successor(PREV, link.primary, link.certificate)
    except (PrimaryError, ChainError):
        return
    raise AssertionError(f"a certified Primary with bit {bit} flipped was accepted")
