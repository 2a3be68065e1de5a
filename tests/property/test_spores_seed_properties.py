"""Seed spores: any change to the signed bytes is rejected; adoption never exceeds confirmation."""

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mycelium.identity import Genesis
from mycelium.spores.entry import EntryType
from mycelium.spores.primary import CertifiedPrimary, certify_genesis, genesis_primary
from mycelium.spores.seed import SeedError, SeedSpore, adoptable, make_seed
from mycelium.testing.spores import node_id, node_key, signed_entry

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
GENESIS = Genesis(name="home", founder=node_id(0), created_s=1_700_000_000)
NET = GENESIS.network_id
_G = genesis_primary(GENESIS)
SNAPSHOT = CertifiedPrimary(_G, certify_genesis(_G, node_key(0)))


def seed(connections):
    obs = [signed_entry(1, EntryType.CONNECTION, 100, subject=c, network_id=NET) for c in connections]
    obs.append(signed_entry(1, EntryType.NODE, 1, network_id=NET))
    return make_seed(node_key(1), NET, SNAPSHOT, [node_id(c) for c in connections], obs, created_ms=7)


SEED = seed([2, 3, 4])
SEED_BYTES = SEED.to_bytes()


@SETTINGS
@given(st.integers(0, len(SEED_BYTES) * 8 - 1))
def test_every_bit_flip_of_a_seed_is_rejected(bit):
    raw = bytearray(SEED_BYTES)
    raw[bit // 8] ^= 1 << (bit % 8)
    try:
        SeedSpore.from_bytes(bytes(raw)).verify(NET)
    except SeedError:
        return
    raise AssertionError(f"a Seed with bit {bit} flipped was accepted")


@SETTINGS
@given(st.sets(st.integers(0, 8)), st.sets(st.integers(2, 6), min_size=1))
def test_adoption_never_exceeds_what_was_confirmed(confirmed, listed):
    s = seed(sorted(listed))
    confirmed_ids = {node_id(c) for c in confirmed}
    adoption = adoptable(s, confirmed_ids)
    assert set(adoption.connections) <= confirmed_ids & set(s.connections)
    assert set(adoption.connections) | set(adoption.unconfirmed) == set(s.connections)
    for e in adoption.entries:
        assert e.subject in confirmed_ids


def _decodes_or_seed_error(data: bytes) -> None:
    try:
        SeedSpore.from_bytes(data).verify(NET)
    except SeedError:
        pass  # dropped and counted by the receiver (spores/seed_exchange.py); anything else is a bug


@SETTINGS
@given(st.binary(max_size=512))
def test_arbitrary_bytes_are_a_seed_error_never_a_crash(data):
    _decodes_or_seed_error(data)


@SETTINGS
@given(st.integers(0, len(SEED_BYTES) - 1))
def test_a_truncated_seed_is_rejected(cut):
    try:
        SeedSpore.from_bytes(SEED_BYTES[:cut])
    except SeedError:
        return
    raise AssertionError(f"a Seed cut to {cut} bytes decoded")


_WIRE = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8) | st.binary(max_size=8),
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
                     max_leaves=12)


@SETTINGS
@given(st.sampled_from(sorted(SEED.to_wire())), _WIRE)
def test_any_field_replaced_by_any_value_is_a_seed_error_or_a_valid_seed(field, value):
    from mycelium.encoding import EncodingError, canonical

    wire = {**SEED.to_wire(), field: value}
    try:
        data = canonical(wire)
    except EncodingError:
        return  # not encodable: cannot reach a receiver
    _decodes_or_seed_error(data)
