"""The repair planner: grace period, most-degraded first, bandwidth cap, bounded history."""

from __future__ import annotations

from mycelium.storage import chunks
from mycelium.storage.erasure import Scheme
from mycelium.storage.repair import RepairConfig, RepairPlanner
from mycelium.storage.sealing import VolumeKey

KEY = VolumeKey.derive(b"s" * 32, "net", "vol")
DEVICES = [f"dev{i}" for i in range(8)]


def _chunk(seed: bytes, scheme=Scheme(3, 5)):
    ref, shares = chunks.prepare(KEY, seed * 1000, scheme)
    return ref


def _planner(refs, **cfg):
    p = RepairPlanner(RepairConfig(**cfg))
    p.set_devices(set(DEVICES))
    p.expect({r.id: r for r in refs})
    return p


def _hold(p, layout, now):
    """layout: device → list of (ref, index)."""
    for d in DEVICES:
        p.observe_inventory(d, {ref.shares[i] for ref, i in layout.get(d, [])}, now)


def test_a_silent_holder_is_waited_for_then_rebuilt():
    ref = _chunk(b"a")
    p = _planner([ref], grace_s=30)
    _hold(p, {DEVICES[i]: [(ref, i)] for i in range(5)}, now=0)
    assert p.plan(1) == []
    # dev0 goes silent: the others keep reporting
    for t in (10, 20, 31):
        for i in range(1, 8):
            p.observe_inventory(DEVICES[i], {ref.shares[i]} if i < 5 else set(), t)
    assert p.plan(20) == [] and p.health(ref, 20).waiting == {0: ["dev0"]}
    tasks = p.plan(31)
    assert len(tasks) == 1
    (task,) = tasks
    assert list(task.targets) == [0] and task.targets[0] in DEVICES[5:]
    assert len(task.sources) == 3 and "dev0" not in task.sources.values()
    p.task_done(task, True, 32)
    p.observe_inventory(task.targets[0], {ref.shares[0]}, 32)
    assert p.summary(32)["shares_missing"] == 0 and p.summary(32)["repairs_done"] == 1


def test_a_device_removed_from_the_primary_is_rebuilt_at_once():
    ref = _chunk(b"b")
    p = _planner([ref], grace_s=1000)
    _hold(p, {DEVICES[i]: [(ref, i)] for i in range(5)}, now=0)
    p.set_devices(set(DEVICES) - {"dev2"})
    (task,) = p.plan(1)
    assert list(task.targets) == [2]


def test_most_degraded_first_and_lost_chunks_named():
    one_lost, two_lost, gone = _chunk(b"1"), _chunk(b"2"), _chunk(b"3")
    p = _planner([one_lost, two_lost, gone], max_inflight=1)
    layout: dict = {}
    for i in range(1, 5):
        layout.setdefault(DEVICES[i], []).append((one_lost, i))
    for i in range(2, 5):
        layout.setdefault(DEVICES[i], []).append((two_lost, i))
    for i in range(3, 5):
        layout.setdefault(DEVICES[i], []).append((gone, i))
    _hold(p, layout, 0)
    (first,) = p.plan(1)
    assert first.chunk.id == two_lost.id and first.margin == 0
    assert any(d.what == "lost" and d.chunk == gone.id.hex()[:12] for d in p.decisions)
    assert p.summary(1)["chunks_lost"] == 1


def test_bandwidth_cap_throttles_and_refills():
    refs = [_chunk(bytes([i])) for i in range(4)]
    cost = refs[0].share_bytes * 4  # 3 reads + 1 write
    p = _planner(refs, bandwidth_bytes_per_s=cost, burst_bytes=cost * 2, max_inflight=10)
    _hold(p, {DEVICES[i]: [(r, i) for r in refs] for i in range(1, 5)}, 0)
    first = p.plan(0)
    assert len(first) == 2 and p.decisions[-1].what == "throttled"
    assert len(p.plan(0.5)) == 0
    assert len(p.plan(1.6)) == 1


def test_history_is_bounded():
    refs = [_chunk(bytes([i])) for i in range(30)]
    p = _planner(refs, history=5, max_inflight=100)
    _hold(p, {DEVICES[i]: [(r, i) for r in refs] for i in range(3, 5)}, 0)  # all lost
    p.plan(0)
    assert len(p.decisions) == 5


def test_chunk_table_is_bounded():
    refs = [_chunk(bytes([i])) for i in range(5)]
    p = _planner(refs, max_chunks=3)
    assert len(p.chunks) == 3 and p.refused_chunks == 2


def test_replicated_chunk_repairs_from_one_copy():
    ref = _chunk(b"r", Scheme(1, 3))
    p = _planner([ref])
    _hold(p, {"dev0": [(ref, 0)]}, 0)
    (task,) = p.plan(0)
    assert len(task.sources) == 1 and sorted(task.targets) == [1, 2]
    assert len(set(task.targets.values()) | {"dev0"}) == 3


def test_a_duplicate_copy_does_not_block_the_last_free_device():
    """Replication over 3 devices: index 0 on dev0 and dev1 (a put's fallback, or two racing
    repairers), index 1 on dev2, index 2 nowhere. Before, every device counted as occupied and the
    chunk waited for ever ("no device without a share of this chunk is up")."""
    ref = _chunk(b"dup", Scheme(1, 3))
    p = RepairPlanner(RepairConfig(grace_s=30))
    p.set_devices({"dev0", "dev1", "dev2"})
    p.expect({ref.id: ref})
    layout = {"dev0": {ref.shares[0]}, "dev1": {ref.shares[0]}, "dev2": {ref.shares[1]}}
    for d, held in layout.items():
        p.observe_inventory(d, held, 0)
    (task,) = p.plan(1)
    assert task.targets == {2: "dev1"}  # dev0 keeps index 0; dev1's copy of it was redundant
    p.task_done(task, True, 2)
    assert p.summary(2)["shares_missing"] == 0
    # a device that keeps an index is never a target, even when nothing else is free
    p2 = RepairPlanner(RepairConfig(grace_s=30))
    p2.set_devices({"dev0", "dev1"})
    p2.expect({ref.id: ref})
    p2.observe_inventory("dev0", {ref.shares[0]}, 0)
    p2.observe_inventory("dev1", {ref.shares[1]}, 0)
    assert p2.plan(1) == []
