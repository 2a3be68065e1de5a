"""Latent store: per-key winners, limits, windows, authors bound, digests, intermittency."""

import pytest

from mycelium.spores.entry import EntryType, service_scope
from mycelium.spores.latent import ConnectionCondenser, LatentLimits, LatentStore, author_rank, prune
from mycelium.testing.spores import node_id, signed_entry


def test_highest_version_wins_per_key_in_any_order():
    old, new = signed_entry(1, version=1), signed_entry(1, version=2)
    a, b = LatentStore(), LatentStore()
    assert a.merge_entry(old) and a.merge_entry(new)
    assert b.merge_entry(new) and not b.merge_entry(old)
    assert a.get(new.key) == new == b.get(new.key)
    assert a.digest() == b.digest()


def test_merging_the_same_entry_twice_changes_nothing():
    s = LatentStore()
    e = signed_entry(1)
    assert s.merge_entry(e)
    d = s.digest()
    assert not s.merge_entry(e)
    assert s.digest() == d and len(s) == 1


def test_equal_versions_are_ordered_by_digest():
    x = signed_entry(1, version=3, body={"a": 1})
    y = signed_entry(1, version=3, body={"a": 2})
    winner = max((x, y), key=lambda e: e.rank())
    a, b = LatentStore(), LatentStore()
    a.merge_entries([x, y])
    b.merge_entries([y, x])
    assert a.get(x.key) == winner == b.get(x.key)
    assert a.equivocations[x.author] == 1 and b.equivocations[x.author] == 1


def test_refuses_other_scope_and_foreign_observer():
    s = LatentStore()
    assert not s.merge_entry(signed_entry(1, scope=service_scope("web")))
    e = signed_entry(1)
    forged = type(e)(**{**{f: getattr(e, f) for f in e.__dataclass_fields__}, "observer": node_id(2)})
    assert not s.merge_entry(forged)
    assert s.refused == 2 and len(s) == 0


def test_per_type_cap_keeps_highest_versions():
    limits = LatentLimits(max_entries_per_type={EntryType.ENDPOINT: 2})
    s = LatentStore(limits=limits)
    for v, name in enumerate(["a", "b", "c", "d"], start=1):
        s.merge_entry(signed_entry(1, EntryType.ENDPOINT, v, name=name))
    assert sorted(e.name for e in s.entries()) == ["c", "d"]
    assert s.evicted["endpoint"] == 2


def test_cap_is_per_author():
    limits = LatentLimits(max_entries_per_type={EntryType.ENDPOINT: 1})
    s = LatentStore(limits=limits)
    s.merge_entries([signed_entry(a, EntryType.ENDPOINT, 1, name="x") for a in range(3)])
    assert len(s) == 3


def test_temporal_window_is_anchored_to_the_authors_newest_entry():
    limits = LatentLimits(window_ms=1000)
    s = LatentStore(limits=limits)
    s.merge_entry(signed_entry(1, EntryType.HEALTH, 10_000, subject=2))
    s.merge_entry(signed_entry(1, EntryType.HEALTH, 10_500, subject=3))
    assert len(s) == 2
    s.merge_entry(signed_entry(1, EntryType.HEALTH, 11_200, subject=4))  # 10_000 is now outside
    assert {e.subject for e in s.entries()} == {node_id(3), node_id(4)}
    # another author's old entries are not affected by author 1's clock
    s.merge_entry(signed_entry(5, EntryType.HEALTH, 1, subject=2))
    assert len(s) == 3


def test_stale_entry_arriving_late_is_not_kept():
    limits = LatentLimits(window_ms=1000)
    s = LatentStore(limits=limits)
    s.merge_entry(signed_entry(1, EntryType.USAGE, 50_000, name="cpu"))
    assert not s.merge_entry(signed_entry(1, EntryType.USAGE, 1_000, name="ram"))
    assert len(s) == 1


def test_max_authors_keeps_smallest_author_hashes():
    s = LatentStore(limits=LatentLimits(max_authors=3))
    s.merge_entries(signed_entry(a) for a in range(6))
    expected = sorted((node_id(a) for a in range(6)), key=author_rank)[:3]
    assert sorted(s.authors()) == sorted(expected)


def test_store_equals_reference_prune():
    limits = LatentLimits(max_entries_per_type={EntryType.ENDPOINT: 2, EntryType.HEALTH: 2}, window_ms=50, max_authors=2)
    entries = [signed_entry(a, EntryType.ENDPOINT, v, name=str(v % 3)) for a in range(3) for v in range(1, 6)]
    entries += [signed_entry(a, EntryType.HEALTH, 1000 + 30 * v, subject=v % 4) for a in range(3) for v in range(5)]
    s = LatentStore(limits=limits)
    s.merge_entries(entries)
    assert {e.key: e for e in s.entries()} == prune(entries, limits)


def test_bucket_digests_find_the_difference():
    a, b = LatentStore(), LatentStore()
    common = [signed_entry(i) for i in range(8)]
    a.merge_entries(common)
    b.merge_entries(common)
    extra = signed_entry(9)
    a.merge_entry(extra)
    assert a.digest() != b.digest()
    differing = a.differing_buckets(b.bucket_digests())
    assert differing == [a.bucket_of(extra.key)]
    delta = a.entries_missing_from(b.bucket_digests())
    assert extra in delta
    b.merge_entries(delta)
    assert a.digest() == b.digest()
    assert a.entries_missing_from(b.bucket_digests()) == []


def test_incomparable_bucket_digests_mean_everything():
    a = LatentStore(bucket_bits=2)
    a.merge_entries(signed_entry(i) for i in range(4))
    assert len(a.entries_missing_from([b"x"])) == 4


def test_copy_is_independent_and_summary_counts():
    a = LatentStore()
    a.merge_entry(signed_entry(1))
    b = a.copy()
    b.merge_entry(signed_entry(2))
    assert len(a) == 1 and len(b) == 2
    summary = b.summary()
    assert summary["by_type"] == {"node": 2} and summary["entries"] == 2


def test_limits_refuse_nonsense():
    with pytest.raises(ValueError, match="window_ms"):
        LatentLimits(window_ms=-1)
    with pytest.raises(ValueError, match="caps"):
        LatentLimits(max_entries_per_type={EntryType.NODE: -1})
    assert LatentLimits().max_entries_per_author == sum(LatentLimits().cap(t) for t in EntryType)


def test_condenser_reports_changes_until_a_peer_flaps():
    limits = LatentLimits(intermittent_flaps=4, intermittent_window_ms=10_000, condense_interval_ms=5_000)
    c = ConnectionCondenser(limits)
    peer = node_id(2)
    bodies = [c.observe(peer, up, t) for t, up in zip(range(0, 400, 100), [True, False, True, False])]
    assert all(b is not None for b in bodies[:3])
    assert bodies[3] is not None and bodies[3]["intermittent"] is True and bodies[3]["flaps"] == 4
    # now intermittent: further events are condensed
    assert c.observe(peer, True, 500) is None
    assert c.observe(peer, False, 600) is None
    assert c.due(1_000) == {}
    due = c.due(5_400)
    assert due[peer]["flaps"] == 6 and due[peer]["up"] is False
    assert c.due(5_500) == {}


def test_condenser_ignores_repeated_state_and_forgets_old_flaps():
    limits = LatentLimits(intermittent_flaps=3, intermittent_window_ms=1_000)
    c = ConnectionCondenser(limits)
    peer = node_id(3)
    assert c.observe(peer, True, 0) is not None
    assert c.observe(peer, True, 10) is None
    c.observe(peer, False, 20)
    body = c.observe(peer, True, 5_000)  # the first two changes left the window
    assert body is not None and body["flaps"] == 1 and not body["intermittent"]


def test_store_lists_intermittent_nodes():
    s = LatentStore()
    s.merge_entry(signed_entry(1, EntryType.CONNECTION, 100, subject=2, body={"up": True, "flaps": 9, "intermittent": True, "since_ms": 1}))
    s.merge_entry(signed_entry(1, EntryType.CONNECTION, 100, subject=3, body={"up": True, "flaps": 1, "intermittent": False, "since_ms": 1}))
    assert s.intermittent_nodes() == {node_id(2)}
