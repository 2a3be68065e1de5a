"""Merge laws of the bounded Latent CRDT, limits under any input, and N-replica convergence."""

import dataclasses
from collections import Counter

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from mycelium.spores.entry import TEMPORAL_TYPES, EntryType
from mycelium.spores.gossip import Delta, GossipConfig, LatentGossip, MessageError, decode_message, encode_message
from mycelium.spores.latent import LatentLimits, LatentStore, prune
from mycelium.testing.spores import NETWORK_ID, deliver_all, loopback, node_id, signed_entry, tick_all
from mycelium.spores.validation import DropReason, EntryValidator

# tight limits so that pruning happens in almost every example
LIMITS = LatentLimits(
    max_entries_per_type={EntryType.NODE: 1, EntryType.ENDPOINT: 2, EntryType.HEALTH: 2, EntryType.USAGE: 1},
    window_ms=100,
    max_authors=3,
)
AUTHORS = 4
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def entries(draw):
    author = draw(st.integers(0, AUTHORS - 1))
    type_ = draw(st.sampled_from([EntryType.NODE, EntryType.ENDPOINT, EntryType.HEALTH, EntryType.USAGE]))
    if type_ in TEMPORAL_TYPES:
        version = draw(st.integers(0, 12)) * 25  # window 100 ms = 4 steps
    else:
        version = draw(st.integers(0, 4))
    name = draw(st.sampled_from(["", "a", "b", "c"])) if type_ != EntryType.NODE else ""
    subject = draw(st.integers(0, AUTHORS - 1)) if type_ == EntryType.HEALTH else None
    body = {"x": draw(st.integers(0, 1))}  # equal versions with different bodies: tie-breaks
    return signed_entry(author, type_, version, name=name, subject=subject, body=body)


entry_lists = st.lists(entries(), max_size=24)


def store(items, limits=LIMITS):
    s = LatentStore(limits=limits)
    s.merge_entries(items)
    return s


def merged(a, b):
    out = a.copy()
    out.merge(b)
    return out


def state(s):
    return {e.key: e for e in s.entries()}


@SETTINGS
@given(entry_lists, entry_lists)
def test_merge_is_commutative(xs, ys):
    a, b = store(xs), store(ys)
    ab, ba = merged(a, b), merged(b, a)
    assert state(ab) == state(ba)
    assert ab.digest() == ba.digest()


@SETTINGS
@given(entry_lists, entry_lists, entry_lists)
def test_merge_is_associative(xs, ys, zs):
    a, b, c = store(xs), store(ys), store(zs)
    left, right = merged(merged(a, b), c), merged(a, merged(b, c))
    assert state(left) == state(right)
    assert left.digest() == right.digest()
    assert state(left) == prune(xs + ys + zs, LIMITS)


@SETTINGS
@given(entry_lists)
def test_merge_is_idempotent(xs):
    a = store(xs)
    assert state(merged(a, a)) == state(a)
    assert merged(a, a).digest() == a.digest()


@SETTINGS
@given(entry_lists)
def test_store_is_prune_of_everything_merged_in_any_order(xs):
    assert state(store(xs)) == prune(xs, LIMITS)
    assert state(store(list(reversed(xs)))) == prune(xs, LIMITS)


@SETTINGS
@given(entry_lists, entry_lists)
def test_prune_absorbs_a_pruned_part(xs, ys):
    """The lemma behind associativity: prune(prune(x) ∪ y) = prune(x ∪ y)."""
    assert prune(list(prune(xs, LIMITS).values()) + ys, LIMITS) == prune(xs + ys, LIMITS)


def assert_within_limits(s, limits):
    per_group = Counter((e.author, e.type) for e in s.entries())
    for (author, type_), n in per_group.items():
        assert n <= limits.cap(type_)
    assert len({e.author for e in s.entries()}) <= limits.max_authors
    for (author, type_) in per_group:
        if type_ in TEMPORAL_TYPES:
            stamps = [e.timestamp_ms for e in s.entries() if e.author == author and e.type == type_]
            assert max(stamps) - min(stamps) <= limits.window_ms
    assert len(s) <= limits.max_authors * limits.max_entries_per_author


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(entries(), max_size=40),
    st.integers(0, 3),
    st.integers(0, 3),
    st.integers(0, 200),
    st.integers(0, 4),
)
def test_limits_are_never_exceeded(xs, cap_endpoint, cap_health, window_ms, max_authors):
    limits = LatentLimits(
        max_entries_per_type={EntryType.NODE: 1, EntryType.ENDPOINT: cap_endpoint, EntryType.HEALTH: cap_health, EntryType.USAGE: 1},
        window_ms=window_ms,
        max_authors=max_authors,
    )
    s = LatentStore(limits=limits)
    for e in xs:  # after every single merge, not just at the end
        s.merge_entry(e)
        assert_within_limits(s, limits)


REPLICAS = 4
HELD = 1e9  # the wire's latency: a message arrives only when a rule delivers it


def garbage_decodes(data):
    """Random bytes that happen to form a valid message (e.g. an empty Delta) are not dropped."""
    try:
        decode_message(data, max_bytes=1 << 16)
    except MessageError:
        return False
    return True


class ReplicasConverge(RuleBasedStateMachine):
    """N gossip replicas; entries land anywhere, messages are delivered in any order or lost;
    once the network is healed, anti-entropy brings every replica to prune(all entries)."""

    def __init__(self):
        super().__init__()
        self.cores = {}
        for i in range(REPLICAS):
            core = LatentGossip(node_id(i), LatentStore(limits=LIMITS), EntryValidator(NETWORK_ID), GossipConfig(fanout=2))
            self.cores[node_id(i)] = core
        for core in self.cores.values():
            core.set_peers(self.cores)
        self.now = 10.0
        self.world = loopback(self.cores, latency_s=HELD)  # nothing arrives unless a rule delivers it
        self.world.run_until(self.now)
        self.all_entries = []
        self.injected = 0

    @rule(replica=st.integers(0, REPLICAS - 1), entry=entries())
    def publish(self, replica, entry):
        self.all_entries.append(entry)
        self.world.apply(self.world.index[node_id(replica)], self.cores[node_id(replica)].publish(entry, self.now))

    @rule(replica=st.integers(0, REPLICAS - 1))
    def tick(self, replica):
        self.now += 1.0
        self.world.run_until(self.now)  # the replicas' own timers fire too
        self.world.apply(self.world.index[node_id(replica)], self.cores[node_id(replica)].on_tick(self.now))

    @precondition(lambda self: self.world.in_flight())
    @rule(index=st.integers(0, 1000), drop=st.booleans())
    def deliver_one(self, index, drop):
        self.world.deliver_one(index % self.world.in_flight(), drop=drop)

    @rule(replica=st.integers(0, REPLICAS - 1), entry=entries(), garbage=st.binary(max_size=40))
    def inject_forgery_and_garbage(self, replica, entry, garbage):
        """A Byzantine peer sends a re-versioned (so badly signed) copy of a real entry, and junk."""
        forged = dataclasses.replace(entry, version=entry.version + 1, timestamp_ms=entry.timestamp_ms + (1 if entry.temporal else 0))
        core = self.cores[node_id(replica)]
        before = core.drops.total
        core.on_message(node_id(9), encode_message(Delta("network", (forged.to_wire(),))), self.now)
        core.on_message(node_id(9), garbage, self.now)
        assert core.drops[DropReason.BAD_SIGNATURE] >= 1
        self.injected += core.drops.total - before
        assert core.drops.total - before == 2 or garbage_decodes(garbage)

    @invariant()
    def replicas_stay_within_limits(self):
        for core in self.cores.values():
            assert_within_limits(core.store, LIMITS)

    @rule()
    def heal_and_converge(self):
        deliver_all(self.world)
        for _ in range(8):
            if len({c.store.digest() for c in self.cores.values()}) == 1:
                break
            self.now += 2.0
            tick_all(self.world, self.now)
            deliver_all(self.world)
        digests = {c.store.digest() for c in self.cores.values()}
        assert len(digests) == 1, "replicas did not converge after 8 healed anti-entropy rounds"
        expected = prune(self.all_entries, LIMITS)
        assert state(next(iter(self.cores.values())).store) == expected
        assert sum(c.drops.total for c in self.cores.values()) == self.injected
        for core in self.cores.values():
            assert all(e.verify_signature(NETWORK_ID) for e in core.store.entries())


ReplicasConverge.TestCase.settings = settings(
    max_examples=40, stateful_step_count=30, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
TestReplicasConverge = ReplicasConverge.TestCase
