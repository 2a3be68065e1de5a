"""Share garbage collection: the pure collector (grace, complete views only, both bounds reached) and
three in-process storage nodes where old versions, removed files and old indexes are deleted from
disk while every live file still reads back byte-identical."""

from __future__ import annotations

import os

import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from mycelium.storage.gc import GcConfig, ShareCollector
from mycelium.testing.storage import storage_cluster

sids = st.sets(st.binary(min_size=2, max_size=2), max_size=40)


@settings(max_examples=100, deadline=None)
@given(sids, sids, st.lists(st.sampled_from(["complete", "incomplete"]), min_size=1, max_size=8))
def test_only_shares_unreferenced_through_the_grace_in_complete_views_are_collected(local, referenced, views):
    c = ShareCollector(GcConfig(grace_s=10, max_tracked=1000, max_deletes=1000))
    now, streak_start = 0.0, 0.0
    for view in views:
        out = c.round(local, set(referenced) if view == "complete" else None, now)
        if view == "incomplete":
            assert out == [] and not c.since
            streak_start = now + 6
        else:
            assert not set(out) & set(referenced)
            assert set(out) == (set(local) - set(referenced) if now - streak_start >= 10 else set())
        now += 6


def test_both_bounds_are_reached_and_everything_is_collected_in_the_end():
    c = ShareCollector(GcConfig(grace_s=1, max_tracked=5, max_deletes=2))
    local = {bytes([i]) for i in range(12)}
    assert c.round(local, set(), 0.0) == [] and len(c.since) == 5 and c.untracked == 7
    deleted: list[bytes] = []
    t = 1.0
    while local:
        out = c.round(local, set(), t)
        assert len(out) <= 2 and len(c.since) <= 5
        for sid in out:
            local.discard(sid)
            c.deleted(sid)
            deleted.append(sid)
        t += 1.0
        assert t < 50
    assert len(deleted) == len(set(deleted)) == 12 and c.collected == 12


def test_a_share_referenced_again_is_no_longer_a_candidate():
    c = ShareCollector(GcConfig(grace_s=5, max_tracked=10, max_deletes=10))
    c.round({b"a", b"b"}, set(), 0.0)
    assert c.round({b"a", b"b"}, {b"a"}, 4.0) == []  # "a" referenced again (e.g. a re-put of the same bytes)
    assert c.round({b"a", b"b"}, set(), 6.0) == [b"b"]  # "a"'s clock restarted at 6.0


async def test_old_versions_removed_files_and_old_indexes_leave_the_disks(tmp_path):
    gc = GcConfig(grace_s=0.3, max_tracked=8, max_deletes=3)
    async with storage_cluster(tmp_path, 3, gc=gc) as c:
        writer = c.nodes[0]
        c.roots.leases["vol"] = writer.node_id
        keep = os.urandom(600_000)
        await writer.put_file("vol", "keep.bin", keep)
        for version in range(3):
            await writer.put_file("vol", "rewritten.bin", os.urandom(300_000 + version))
        await writer.put_file("vol", "gone.bin", os.urandom(200_000))
        await writer.remove_file("vol", "gone.bin")
        last = os.urandom(100_000)
        await writer.put_file("vol", "rewritten.bin", last)

        def live_share_ids() -> set[bytes]:
            idx = writer._indexes["vol"]
            root = c.roots.roots["vol"]
            refs = [*idx.chunk_refs().values(), *root.index]
            return {s for r in refs for s in r.shares}

        def on_disk() -> set[bytes]:
            return set().union(*(n.store.ids() for n in c.nodes))

        assert on_disk() - live_share_ids()  # garbage exists before the collector runs
        with trio.fail_after(60):
            while on_disk() != live_share_ids():
                await trio.sleep(0.05)
        assert all(r.collector.collected > 0 for r in c.repairers)
        # the bound on deletions per round was reached on some node (more garbage than 3 per round)
        assert any(r.collector.collected > gc.max_deletes for r in c.repairers)
        assert await c.nodes[1].get_file("vol", "keep.bin") == keep
        assert await c.nodes[2].get_file("vol", "rewritten.bin") == last
        assert c.any_repairer().status()["gc"]["candidates"] == 0


async def test_a_node_the_primary_does_not_list_collects_nothing(tmp_path):
    async with storage_cluster(tmp_path, 2, gc=GcConfig(grace_s=0.1)) as c:
        writer = c.nodes[0]
        c.roots.leases["vol"] = writer.node_id
        await writer.put_file("vol", "a", b"x" * 1000)
        await writer.put_file("vol", "a", b"y" * 1000)  # the first version is garbage now
        before = c.nodes[1].store.ids()
        c.members.remove(c.nodes[1].node_id)  # e.g. removed from the network, or no head yet
        await trio.sleep(1.0)
        assert before <= c.nodes[1].store.ids()
        assert c.repairer(c.nodes[1].node_id).collector.collected == 0
