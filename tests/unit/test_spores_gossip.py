"""Latent anti-entropy core: convergence over the simulator's World as a loopback, garbage dropped and counted."""

import random

import msgpack
import pytest

from mycelium.shell.effects import Broadcast, Core, Send, SetTimer
from mycelium.encoding import canonical
from mycelium.spores.entry import EntryType
from mycelium.spores.gossip import (
    Delta,
    Digest,
    GossipConfig,
    LatentGossip,
    MessageError,
    RangeRequest,
    decode_message,
    encode_message,
)
from mycelium.spores.latent import LatentStore
from mycelium.spores.validation import DropReason, EntryValidator
from mycelium.testing.spores import NETWORK_ID, loopback, node_id, signed_entry


def make_cores(n, **config):
    cores = {}
    for i in range(n):
        core = LatentGossip(node_id(i), LatentStore(), EntryValidator(NETWORK_ID), GossipConfig(**config))
        cores[node_id(i)] = core
    for core in cores.values():
        core.set_peers(cores)
    return cores


def test_is_a_core():
    assert isinstance(make_cores(1)[node_id(0)], Core)


def test_first_tick_sends_digests_and_arms_the_timer():
    cores = make_cores(4, fanout=2, interval_s=2.0)
    effects = cores[node_id(0)].on_tick(10.0)
    sends = [e for e in effects if isinstance(e, Send)]
    assert len(sends) == 2 and node_id(0) not in {s.to for s in sends}
    assert isinstance(decode_message(sends[0].message, max_bytes=1 << 16), Digest)
    assert effects[-1] == SetTimer("spores.latent.anti_entropy", 12.0)
    # an early tick does not start another round
    assert cores[node_id(0)].on_tick(11.0) == [SetTimer("spores.latent.anti_entropy", 12.0)]


def test_publish_merges_and_broadcasts_a_delta():
    cores = make_cores(2)
    core = cores[node_id(0)]
    e = signed_entry(0, EntryType.USAGE, 5_000, name="cpu")
    effects = core.publish(e, 5.0)
    assert len(effects) == 1 and isinstance(effects[0], Broadcast)
    msg = decode_message(effects[0].message, max_bytes=1 << 16)
    assert isinstance(msg, Delta) and len(msg.entries) == 1
    assert core.publish(e, 5.0) == []  # nothing new


def test_replicas_converge_after_anti_entropy():
    cores = make_cores(5, fanout=2)
    for i, nid in enumerate(sorted(cores)):
        for v in range(3):
            cores[nid].store.merge_entry(signed_entry(i, EntryType.ENDPOINT, v + 1, name=f"ep{v}"))
    world = loopback(cores)
    world.run_until(24.0)  # every core's own anti-entropy timer, once a second
    digests = {c.store.digest() for c in cores.values()}
    assert len(digests) == 1
    assert len(next(iter(cores.values())).store) == 15
    assert all(c.drops.total == 0 for c in cores.values())


def test_broadcast_publish_reaches_everyone_without_anti_entropy():
    cores = make_cores(3, fanout=0)
    world = loopback(cores)
    world.run_until(1.0)
    world.apply(world.index[node_id(1)], cores[node_id(1)].publish(signed_entry(1, EntryType.NODE, 1), 1.0))
    world.run_until(1.0)
    assert len({c.store.digest() for c in cores.values()}) == 1


def test_range_request_answers_with_bucket_entries():
    cores = make_cores(1)
    core = cores[node_id(0)]
    entries = [signed_entry(i) for i in range(6)]
    core.store.merge_entries(entries)
    req = encode_message(RangeRequest("network", tuple(range(16))))
    effects = core.on_message(node_id(9), req, 1.0)
    got = [w for e in effects for w in decode_message(e.message, max_bytes=1 << 16).entries]
    assert len(got) == 6 and all(e.to == node_id(9) for e in effects)


def test_large_deltas_are_split_to_fit_the_message_limit():
    cores = make_cores(1, max_message_bytes=12 * 1024)
    core = cores[node_id(0)]
    core.store.merge_entries(signed_entry(i, body={"pad": "x" * 1500}) for i in range(30))
    effects = core.on_message(node_id(9), encode_message(RangeRequest("network", tuple(range(16)))), 1.0)
    assert len(effects) > 1
    assert all(len(e.message) <= 12 * 1024 for e in effects)
    assert sum(len(decode_message(e.message, max_bytes=1 << 16).entries) for e in effects) == 30


GARBAGE = [
    (b"", DropReason.MALFORMED),
    (b"\xc1\xc1", DropReason.MALFORMED),
    (canonical([1, 2, 3]), DropReason.MALFORMED),
    (canonical({"v": 1, "t": 1, "sc": "network"}), DropReason.MALFORMED),
    (canonical({"v": 2, "t": 1, "sc": "network"}), DropReason.UNSUPPORTED_VERSION),
    (canonical({"v": 1, "t": 42, "sc": "network"}), DropReason.UNKNOWN_TYPE),
    (canonical({"v": 1, "t": 2, "sc": "network", "bk": [999]}), DropReason.MALFORMED),
    (canonical({"v": 1, "t": 3, "sc": "network", "e": "nope"}), DropReason.MALFORMED),
    (canonical({"v": 1, "t": 3, "sc": "service/x", "e": []}), DropReason.WRONG_SCOPE),
    (b"\x00" * (70 * 1024), DropReason.OVERSIZE),
    (msgpack.packb({"v": 1, "t": 1, "sc": "network", "root": 1.5, "bk": []}), DropReason.MALFORMED),
    ("a string, not bytes", DropReason.MALFORMED),
    (None, DropReason.MALFORMED),
]


@pytest.mark.parametrize("message,reason", GARBAGE)
def test_garbage_messages_are_dropped_and_counted(message, reason):
    core = make_cores(1)[node_id(0)]
    assert core.on_message(node_id(5), message, 1.0) == []
    assert core.drops[reason] == 1 and core.drops.total == 1


def test_truncated_messages_are_dropped_and_counted():
    core = make_cores(1)[node_id(0)]
    data = encode_message(Delta("network", (signed_entry(3).to_wire(),)))
    for cut in range(0, len(data), 7):
        assert core.on_message(node_id(5), data[:cut], 1.0) == []
    assert core.drops.total == len(range(0, len(data), 7))
    assert len(core.store) == 0


def test_bad_entries_in_a_delta_are_dropped_one_by_one():
    core = make_cores(1)[node_id(0)]
    good = signed_entry(1, EntryType.NODE, 1)
    forged = {**signed_entry(2).to_wire(), "v": 7}  # signature no longer matches
    future = signed_entry(3, EntryType.HEALTH, 10_000_000)  # 10 000 s ahead of now = 1 s
    unknown = {**signed_entry(4).to_wire(), "t": 77}
    msg = encode_message(Delta("network", (good.to_wire(), forged, future.to_wire(), unknown, "junk")))
    core.on_message(node_id(5), msg, 1.0)
    assert core.store.entries() == [good]
    assert core.drops.as_dict() == {"bad_signature": 1, "clock_skew": 1, "unknown_type": 1, "malformed": 1}


def test_message_objects_are_accepted_like_bytes():
    core = make_cores(1)[node_id(0)]
    core.on_message(node_id(5), Delta("network", (signed_entry(1).to_wire(),)), 1.0)
    assert len(core.store) == 1
    core.on_message(node_id(5), Digest("network", b"x", ()), 1.0)
    assert core.drops[DropReason.MALFORMED] == 1


def test_message_round_trip():
    for msg in [
        Digest("network", b"\1" * 32, (b"\2" * 32,) * 16),
        RangeRequest("network", (0, 5, 15)),
        Delta("network", (signed_entry(1).to_wire(),)),
    ]:
        data = encode_message(msg)
        assert decode_message(data, max_bytes=1 << 16) == msg
        assert encode_message(decode_message(data, max_bytes=1 << 16)) == data
    with pytest.raises(MessageError):
        decode_message(b"\x90", max_bytes=10)


def test_peer_choice_is_deterministic_per_seed():
    a = make_cores(6)[node_id(0)]
    b = LatentGossip(node_id(0), LatentStore(), EntryValidator(NETWORK_ID), rng=random.Random(1))
    c = LatentGossip(node_id(0), LatentStore(), EntryValidator(NETWORK_ID), rng=random.Random(1))
    for core in (b, c):
        core.set_peers(node_id(i) for i in range(6))
    assert [e for e in b.on_tick(0.0)] == [e for e in c.on_tick(0.0)]
    assert a.peers == b.peers and node_id(0) not in a.peers


def test_a_flooding_peer_gets_one_answer_per_spacing():
    core = make_cores(1, interval_s=2.0, answer_spacing_intervals=0.5)[node_id(0)]
    core.store.merge_entries(signed_entry(i) for i in range(4))
    req = encode_message(RangeRequest("network", tuple(range(16))))
    assert core.on_message(node_id(7), req, 10.0) != []
    assert core.on_message(node_id(7), req, 10.5) == []  # within 0.5 × 2 s
    assert core.on_message(node_id(8), req, 10.5) != []  # other peers are not affected
    assert core.on_message(node_id(7), req, 11.0) != []
    assert core.unanswered == {"RangeRequest": 1}
    digest = encode_message(Digest("network", b"\1" * 32, (b"\2" * 32,) * 16))
    assert core.on_message(node_id(7), digest, 11.0) != []  # spacing is per message type
