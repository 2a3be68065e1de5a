"""Entries: wire round trip, strict parsing, signatures bound to the network."""

import pytest

from mycelium.encoding import canonical, decode
from mycelium.spores.entry import (
    MAX_BODY_BYTES,
    Entry,
    EntryType,
    MalformedEntry,
    OversizeEntry,
    UnknownEntryType,
    make_entry,
    next_temporal_version,
)
from mycelium.testing.spores import NETWORK_ID, node_id, node_key, signed_entry


def test_round_trip_is_identity_and_byte_identical():
    e = signed_entry(1, EntryType.ENDPOINT, 3, name="quic", body={"addr": "/ip4/10.0.0.1/udp/4001"})
    data = e.to_bytes()
    back = Entry.from_bytes(data)
    assert back == e
    assert back.to_bytes() == data
    assert back.digest() == e.digest()


def test_signature_verifies_only_for_its_network():
    e = signed_entry(1)
    assert e.verify_signature(NETWORK_ID)
    assert not e.verify_signature("00" * 32)


def test_make_entry_signs_as_author_and_observer():
    key = node_key(4)
    e = make_entry(key, NETWORK_ID, EntryType.USAGE, {"cpu_ppm": 1200}, version=5000, timestamp_ms=5000)
    assert e.author == e.observer == e.subject == key.node_id
    assert e.verify_signature(NETWORK_ID)


def test_signing_with_another_key_is_refused():
    e = signed_entry(1)
    with pytest.raises(ValueError, match="not the signing key"):
        e.signed_by(node_key(2), NETWORK_ID)


def test_unknown_type_is_its_own_error():
    wire = signed_entry(1).to_wire()
    wire["t"] = 99
    with pytest.raises(UnknownEntryType, match="99"):
        Entry.from_wire(wire)


@pytest.mark.parametrize(
    "field,value",
    [
        ("t", "node"),
        ("t", True),
        ("sc", ""),
        ("obs", "not-a-node-id"),
        ("sub", 7),
        ("n", "x" * 200),
        ("a", b"bytes"),
        ("v", -1),
        ("v", 2**63),
        ("ts", "yesterday"),
        ("b", ["not", "a", "map"]),
        ("b", {1: "int key"}),
        ("sig", b"short"),
        ("sig", "a" * 64),
    ],
)
def test_bad_field_is_malformed(field, value):
    wire = signed_entry(1).to_wire()
    wire[field] = value
    with pytest.raises(MalformedEntry):
        Entry.from_wire(wire)


def test_missing_and_extra_fields_are_malformed():
    wire = signed_entry(1).to_wire()
    del wire["ts"]
    with pytest.raises(MalformedEntry, match="missing"):
        Entry.from_wire(wire)
    wire = {**signed_entry(1).to_wire(), "extra": 1}
    with pytest.raises(MalformedEntry, match="unexpected"):
        Entry.from_wire(wire)


def test_oversized_body_and_entry():
    wire = signed_entry(1).to_wire()
    wire["b"] = {"blob": b"x" * (MAX_BODY_BYTES + 1)}
    with pytest.raises(OversizeEntry):
        Entry.from_wire(wire)
    with pytest.raises(OversizeEntry):
        Entry.from_bytes(canonical(wire) + b"\0" * 2048)


@pytest.mark.parametrize("data", [b"", b"\xc1", b"\x92\x01", canonical([1, 2]), canonical({"t": 1})[:-1]])
def test_garbage_bytes_are_malformed(data):
    with pytest.raises(MalformedEntry):
        Entry.from_bytes(data)


def test_truncated_entry_is_malformed():
    data = signed_entry(1).to_bytes()
    for cut in (1, 10, len(data) // 2, len(data) - 1):
        with pytest.raises(MalformedEntry):
            Entry.from_bytes(data[:cut])


def test_float_in_body_is_malformed():
    wire = signed_entry(1).to_wire()
    import msgpack

    raw = msgpack.packb({**wire, "b": {"load": 0.5}}, use_bin_type=True)
    with pytest.raises(MalformedEntry, match="float"):
        Entry.from_bytes(raw)


def test_temporal_version_must_equal_timestamp():
    wire = signed_entry(1, EntryType.HEALTH, 5000).to_wire()
    assert wire["ts"] == wire["v"] == 5000
    wire["ts"] = 4000
    with pytest.raises(MalformedEntry, match="version must equal"):
        Entry.from_wire(wire)


def test_next_temporal_version_is_monotone():
    assert next_temporal_version(10, 5) == 11
    assert next_temporal_version(10, 50) == 50


def test_key_is_type_observer_subject_name():
    e = signed_entry(1, EntryType.HEALTH, 100, subject=2, name="ping")
    assert e.key == (int(EntryType.HEALTH), node_id(1), node_id(2), "ping")


def test_decode_of_encoded_is_canonical():
    e = signed_entry(2, EntryType.CAPABILITY, 1, body={"z": 1, "a": {"y": 2, "b": 3}})
    assert canonical(decode(e.to_bytes())) == e.to_bytes()
