"""A real process Endophyte: a writer replicated to two backups over data channels, killed with -9,
resumed on a backup from exactly the last acknowledged epoch, and replicated again under the new lease."""

from __future__ import annotations

import ctypes
import mmap
import os
import struct
import sys
from pathlib import Path

import pytest
import trio

from mycelium.ram.handover import Lease, decide_failover
from mycelium.ram.pagetrack import TrackingUnavailable, protect_region
from mycelium.ram.process import ArenaProcess
from mycelium.ram.replicate import BackupStore, PrimaryReplicator
from mycelium.testing.channels import MemoryChannelNetwork
from mycelium.testing.deadlines import hang_after

REPO = Path(__file__).resolve().parents[2]
WRITER = [sys.executable, str(REPO / "examples" / "endophyte_counter.py")]
ARENA = 256 * 1024


def _tracking_works() -> str | None:
    m = mmap.mmap(-1, 4096)
    try:
        fd = protect_region(ctypes.addressof(ctypes.c_char.from_buffer(m)), 4096)
        os.close(fd)
        return None
    except TrackingUnavailable as exc:
        return str(exc)


_why = _tracking_works()
pytestmark = pytest.mark.skipif(_why is not None, reason=f"userfaultfd WP async / PAGEMAP_SCAN missing: {_why}")


async def wait_until(cond, timeout_s: float = 60.0, what: str = "") -> None:
    with hang_after(timeout_s):
        while not cond():
            await trio.sleep(0.02)


def start_line(ep: ArenaProcess) -> str:
    out = (ep.workdir / "stdout.log").read_text() if (ep.workdir / "stdout.log").exists() else ""
    return next((line for line in out.splitlines() if line.startswith("start ")), "")


async def test_process_endophyte_survives_kill9_of_its_primary(tmp_path: Path) -> None:
    env = {"PYTHONPATH": str(REPO)}
    async with trio.open_nursery() as nursery:
        net = MemoryChannelNetwork(nursery)
        stores = {b: BackupStore() for b in ("b1", "b2")}
        for b, store in stores.items():
            store.serve(net.provider(b))
        primary = ArenaProcess("counter", WRITER, ARENA, tmp_path / "a", env=env)
        await trio.to_thread.run_sync(primary.start)
        try:
            rep = PrimaryReplicator("counter", 1, net.provider("a"), ["b1", "b2"], primary.cut, interval_s=0.05,
                                    pause=primary.freezer.freeze, resume=primary.freezer.thaw)
            async with trio.open_nursery() as primary_node:
                primary_node.start_soon(rep.run)

                def committed(b: str) -> int:
                    img = stores[b].images.get("counter")
                    return img.committed_epoch if img else -1

                await wait_until(lambda: min(committed("b1"), committed("b2")) >= 5)
                assert start_line(primary) == "start counter=0 fresh integrity=ok"
                status = rep.status(trio.current_time())
                assert status["backups"]["b1"]["acked_epoch"] >= 0 and status["max_freeze_ms"] > 0
                # the primary's node dies: its replicator stops and the workload is killed -9
                primary_node.cancel_scope.cancel()
            primary.kill()
            net.kill("a")
            await trio.sleep(0.1)  # parts still queued in the in-memory channels land (or not): either is fine
            reports = {b: committed(b) for b in stores}
            lease = decide_failover(Lease("counter", 1, "a", ("b1", "b2")), reports, live={"b1", "b2"})
            assert lease is not None and lease.generation == 2 and lease.resumed_epoch == max(reports.values())
            image = dict(stores[lease.primary].images["counter"].image)
            expected = struct.unpack_from("<Q", image[0], 8)[0]
            assert expected > 0
        finally:
            primary.kill()
        resumed = ArenaProcess("counter", WRITER, ARENA, tmp_path / "b", env=env)
        await trio.to_thread.run_sync(lambda: resumed.start(image=image))
        try:
            await wait_until(lambda: start_line(resumed) != "", 30)
            assert start_line(resumed) == f"start counter={expected} resumed integrity=ok"
            # the new primary replicates to the remaining backup under generation 2
            other = lease.backups[0]
            rep2 = PrimaryReplicator("counter", 2, net.provider(lease.primary), [other], resumed.cut, interval_s=0.05,
                                     first_epoch=lease.resumed_epoch + 1)
            async with trio.open_nursery() as new_primary_node:
                new_primary_node.start_soon(rep2.run)
                await wait_until(lambda: stores[other].images["counter"].committed_generation == 2
                                 and stores[other].images["counter"].committed_epoch > lease.resumed_epoch + 2)
                later = struct.unpack_from("<Q", stores[other].images["counter"].image[0], 8)[0]
                assert later > expected  # it runs on, from where it was
                new_primary_node.cancel_scope.cancel()
        finally:
            resumed.kill()
        nursery.cancel_scope.cancel()


async def test_planned_migration_moves_the_process_with_no_epoch_lost(tmp_path: Path) -> None:
    from mycelium.ram.migration import migrate_process

    env = {"PYTHONPATH": str(REPO)}
    async with trio.open_nursery() as nursery:
        net = MemoryChannelNetwork(nursery)
        store = BackupStore()
        store.serve(net.provider("t"))
        source = ArenaProcess("counter", WRITER, ARENA, tmp_path / "s", env=env)
        target = ArenaProcess("counter", WRITER, ARENA, tmp_path / "t", env=env)
        await trio.to_thread.run_sync(source.start)
        try:
            rep = PrimaryReplicator("counter", 1, net.provider("s"), ["t"], source.cut, interval_s=0.05)
            async with trio.open_nursery() as source_node:
                source_node.start_soon(rep.run)
                await wait_until(lambda: "counter" in store.images and store.images["counter"].committed_epoch >= 3)
                final_counter = []

                async def start_target(generation: int) -> None:
                    image = store.images["counter"].image
                    final_counter.append(struct.unpack_from("<Q", image[0], 8)[0])
                    await trio.to_thread.run_sync(lambda: target.start(image=dict(image)))

                report = await migrate_process(rep, source, "t", start_target, downtime_limit_s=0.3)
                source_node.cancel_scope.cancel()
            assert not source.alive() and target.alive()
            assert report.final_epoch == store.images["counter"].committed_epoch
            await wait_until(lambda: start_line(target) != "", 30)
            # the final epoch was cut with the source frozen: the target starts exactly where the source stopped
            assert start_line(target) == f"start counter={final_counter[0]} resumed integrity=ok"
            assert 0 < report.downtime_s < 10
            print(f"process planned migration: downtime {report.downtime_s * 1000:.1f} ms, "
                  f"final epoch {report.final_epoch}")
        finally:
            source.kill()
            target.kill()
        nursery.cancel_scope.cancel()


async def test_a_deposed_primary_is_fenced_by_a_backup_of_the_newer_generation(tmp_path: Path) -> None:
    env = {"PYTHONPATH": str(REPO)}
    async with trio.open_nursery() as nursery:
        net = MemoryChannelNetwork(nursery)
        store = BackupStore()
        store.serve(net.provider("b"))
        old = ArenaProcess("counter", WRITER, ARENA, tmp_path / "old", env=env)
        await trio.to_thread.run_sync(old.start)
        try:
            rep = PrimaryReplicator("counter", 1, net.provider("a"), ["b"], old.cut, interval_s=0.05)
            with hang_after(30):
                async with trio.open_nursery() as node_a:
                    node_a.start_soon(rep.run)
                    await wait_until(lambda: "counter" in store.images and store.images["counter"].committed_epoch >= 1)
                    store.images["counter"].fence(2)  # the ledger gave the lease to someone else meanwhile
                    await rep.fenced.wait()  # run() ends by itself: the old primary learns it is deposed
            assert store.images["counter"].counters.get("stale_generation", 0) + store.counters.get("stale_primary", 0) >= 1
        finally:
            old.kill()
        nursery.cancel_scope.cancel()


def test_cgroups_left_by_a_dead_supervisor_are_swept() -> None:
    from mycelium.ram.freeze import Freezer, sweep_dead, v2_root

    root = v2_root()
    if root is None:
        pytest.skip("no writable cgroup v2 hierarchy: the freezer falls back to SIGSTOP and makes no cgroups")
    parent = root / "mycelium-ram"
    parent.mkdir(exist_ok=True)
    stale = parent / "w-4194999-1"  # above pid_max's usual 4194304: no such process
    stale.mkdir(exist_ok=True)
    mine = Freezer("w")  # constructing one sweeps
    try:
        assert not stale.exists() and mine.path is not None and mine.path.exists()
        assert sweep_dead(parent) == 0  # ours is alive: kept
    finally:
        mine.remove()
    assert not mine.path.exists()
