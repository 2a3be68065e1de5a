"""Entries: canonical round trip, and every mutation of a signed entry is rejected."""

import dataclasses

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mycelium.encoding import canonical
from mycelium.spores.entry import TEMPORAL_TYPES, Entry, EntryType
from mycelium.testing.spores import NETWORK_ID, node_id, node_key
from mycelium.spores.validation import ValidationContext, parse_entry, validate

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.text(max_size=12) | st.binary(max_size=12)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)
bodies = st.dictionaries(st.text(max_size=8), values, max_size=5)


@st.composite
def signed_entries(draw):
    author = draw(st.integers(0, 5))
    type_ = draw(st.sampled_from(list(EntryType)))
    ts = draw(st.integers(0, 2**63 - 1))
    version = ts if type_ in TEMPORAL_TYPES else draw(st.integers(0, 2**63 - 1))
    subject = draw(st.integers(0, 5)) if type_ in (EntryType.HEALTH, EntryType.CONNECTION) else author
    entry = Entry(
        type=type_,
        observer=node_id(author),
        subject=node_id(subject),
        name=draw(st.text(max_size=20)),
        author=node_id(author),
        version=version,
        timestamp_ms=ts,
        body=draw(bodies),
        scope=draw(st.sampled_from(["network", "service/web", "service/db"])),
    )
    return entry.signed_by(node_key(author), NETWORK_ID)


def accepted(obj) -> bool:
    entry, verdict = parse_entry(obj)
    if entry is None:
        return False
    return validate(entry, ValidationContext(NETWORK_ID, now_ms=2**63 - 1)).ok


@SETTINGS
@given(signed_entries())
def test_decode_of_encode_is_identity_and_byte_identical(entry):
    data = entry.to_bytes()
    back = Entry.from_bytes(data)
    assert back == entry
    assert back.to_bytes() == data == canonical(entry.to_wire())
    assert accepted(data)


@SETTINGS
@given(signed_entries(), st.data())
def test_every_bit_flip_is_rejected(entry, data):
    raw = bytearray(entry.to_bytes())
    bit = data.draw(st.integers(0, len(raw) * 8 - 1))
    raw[bit // 8] ^= 1 << (bit % 8)
    assert not accepted(bytes(raw))


FIELD_VALUES = {
    "type": st.sampled_from(list(EntryType)),
    "observer": st.integers(0, 9).map(node_id),
    "subject": st.integers(0, 9).map(node_id),
    "name": st.text(max_size=20),
    "author": st.integers(0, 9).map(node_id),
    "version": st.integers(0, 2**63 - 1),
    "timestamp_ms": st.integers(0, 2**63 - 1),
    "body": bodies,
    "scope": st.sampled_from(["network", "service/web", "service/other", "x"]),
    "signature": st.binary(min_size=64, max_size=64),
}


@SETTINGS
@given(signed_entries(), st.sampled_from(sorted(FIELD_VALUES)), st.data())
def test_every_single_field_mutation_is_rejected(entry, field, data):
    value = data.draw(FIELD_VALUES[field])
    if field == "version" and entry.temporal:
        mutated = dataclasses.replace(entry, version=value, timestamp_ms=value)
    else:
        mutated = dataclasses.replace(entry, **{field: value})
    if mutated.to_bytes() == entry.to_bytes():
        return  # not a mutation
    assert not accepted(mutated.to_wire())


@SETTINGS
@given(signed_entries())
def test_signed_for_one_network_is_rejected_in_another(entry):
    assert not validate(entry, ValidationContext("00" * 32, now_ms=2**63 - 1)).ok


@SETTINGS
@given(st.binary(max_size=300))
def test_garbage_never_crashes(raw):
    entry, verdict = parse_entry(raw)
    assert (entry is None) != verdict.ok
