"""The replication stream's encoding: round trips, and garbage is a WireError (counted, dropped)."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, strategies as st

from mycelium.ram.epochs import EpochAck, EpochPart
from mycelium.ram.wire import Bye, Hello, WireError, decode, encode

parts = st.builds(EpochPart, st.integers(0, 10), st.integers(-1, 1000), st.integers(-1, 1000), st.integers(0, 4),
                  st.integers(1, 5), st.binary(min_size=16, max_size=16),
                  st.lists(st.tuples(st.integers(0, 1 << 30), st.binary(max_size=64)), max_size=5).map(tuple))


@given(msg=st.one_of(parts, st.builds(EpochAck, st.integers(0, 9), st.integers(-1, 99)),
                     st.builds(Hello, st.text(max_size=20), st.integers(0, 9)), st.just(Bye())))
def test_round_trip(msg) -> None:
    assert decode(encode(msg)) == msg


@given(data=st.binary(max_size=64))
def test_garbage_is_a_wire_error_never_a_crash(data: bytes) -> None:
    try:
        decode(data)
    except WireError:
        pass


@pytest.mark.parametrize("body", [[], ["part", 1], ["ack", "x", 1], ["hello", "n" * 300, 1], ["part", 1, 1, 1, 0, 1, b"d", [[1]]],
                                  {"a": 1}, ["ack", True, 1]])
def test_malformed_messages_are_refused(body) -> None:
    with pytest.raises(WireError):
        decode(msgpack.packb(body))
