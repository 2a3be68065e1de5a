"""The anti-entropy core never crashes on hostile input and only ever stores valid entries."""

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mycelium.spores.entry import EntryType
from mycelium.spores.gossip import Delta, Digest, LatentGossip, RangeRequest, encode_message
from mycelium.spores.latent import LatentStore
from mycelium.testing.spores import NETWORK_ID, node_id, signed_entry
from mycelium.spores.validation import EntryValidator

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

VALID = [
    encode_message(Delta("network", tuple(signed_entry(i, EntryType.HEALTH, 500 + i, subject=i + 1).to_wire() for i in range(3)))),
    encode_message(Digest("network", b"\1" * 32, (b"\2" * 32,) * 16)),
    encode_message(RangeRequest("network", (0, 3, 7))),
]


def core():
    c = LatentGossip(node_id(0), LatentStore(), EntryValidator(NETWORK_ID))
    c.set_peers([node_id(1), node_id(2)])
    return c


def check(c, effects):
    """Every message is either accepted (counted by type) or dropped (counted by reason)."""
    assert isinstance(effects, list)
    assert sum(c.received.values()) + c.drops.total >= 1
    for e in c.store.entries():
        assert e.verify_signature(NETWORK_ID)


@SETTINGS
@given(st.binary(max_size=2000))
def test_random_bytes_are_dropped_not_raised(data):
    c = core()
    check(c, c.on_message(node_id(1), data, 100.0))


@SETTINGS
@given(st.sampled_from(VALID), st.data())
def test_mutated_messages_are_handled(valid, data):
    raw = bytearray(valid)
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        pos = data.draw(st.integers(0, max(len(raw) - 1, 0)))
        if op == "flip" and raw:
            raw[pos] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "cut":
            del raw[pos:]
        else:
            raw[pos:pos] = data.draw(st.binary(min_size=1, max_size=4))
    c = core()
    check(c, c.on_message(node_id(1), bytes(raw), 100.0))


@SETTINGS
@given(st.recursive(st.none() | st.integers() | st.text(max_size=5) | st.binary(max_size=5), lambda x: st.lists(x, max_size=3) | st.dictionaries(st.text(max_size=3), x, max_size=3), max_leaves=10))
def test_arbitrary_objects_are_dropped(obj):
    c = core()
    check(c, c.on_message(node_id(1), obj, 100.0))
