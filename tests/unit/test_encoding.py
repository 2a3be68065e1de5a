import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mycelium.encoding import EncodingError, canonical, decode, hash_value, is_canonical

scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.text(max_size=20) | st.binary(max_size=20)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8) | st.integers(0, 1000), inner, max_size=5),
    max_leaves=30,
)


@settings(max_examples=200, deadline=None)
@given(values)
def test_decode_of_encode_is_identity_and_bytes_are_stable(value):
    data = canonical(value)
    assert decode(data) == value
    assert canonical(decode(data)) == data
    assert is_canonical(data)


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.text(max_size=6), st.integers(-(2**63), 2**64 - 1), min_size=2, max_size=8))
def test_key_order_does_not_change_the_bytes(d):
    reversed_d = dict(reversed(list(d.items())))
    assert canonical(d) == canonical(reversed_d)
    assert hash_value(d) == hash_value(reversed_d)


@pytest.mark.parametrize("bad", [1.5, {"a": 0.1}, [float("nan")], object(), {(1, 2): 1}, 2**64])
def test_values_without_canonical_form_are_refused(bad):
    with pytest.raises(EncodingError):
        canonical(bad)


@pytest.mark.parametrize("raw", [b"\xc1", b"\x92\x01", b"\x81", b"\xd4\x01\x00", b"\xa3ab"])
def test_malformed_bytes_raise_encoding_error(raw):
    with pytest.raises(EncodingError):
        decode(raw)


def test_oversized_input_is_refused_before_parsing():
    with pytest.raises(EncodingError, match="exceed"):
        decode(b"\x00" * 100, max_size=10)


def test_non_canonical_bytes_are_detected():
    # the map {"b": 1, "a": 2} packed in insertion order is valid msgpack but not canonical
    import msgpack

    raw = msgpack.packb({"b": 1, "a": 2})
    assert decode(raw) == {"a": 2, "b": 1}
    assert not is_canonical(raw)
