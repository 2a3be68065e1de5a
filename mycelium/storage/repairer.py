"""The repair loop and the scrub (trio shell around `repair.RepairPlanner`).

Every `inventory_interval_s` the loop asks each storage device for its share inventory, tells the
planner which chunks the volumes reference (live files + the indexes themselves), and runs the tasks
the planner returns: fetch k shares, rebuild the missing ones, put them on their targets. Each chunk
is repaired by one node only — the first *up* device in the chunk's rendezvous ranking — so a
network repairs each loss once, and the work spreads over the nodes.

Shares no volume references any more (old versions, removed files, previous indexes, failed puts)
are deleted from this device by `gc.ShareCollector` after its grace period, from complete views only.

The scrub re-reads and hashes this device's own shares at `scrub_bytes_per_s` (Garage's
"tranquility"): a share that rotted is removed, drops out of the inventory, and is rebuilt like a lost one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import trio

from mycelium.storage import chunks, placement
from mycelium.storage.catalog import CatalogError
from mycelium.storage.chunks import ChunkRef, ShareMismatch
from mycelium.storage.erasure import ErasureError
from mycelium.storage.gc import GcConfig, ShareCollector
from mycelium.storage.links import PeerUnavailable
from mycelium.storage.node import MissingRanges, StorageNode
from mycelium.storage.repair import RepairConfig, RepairPlanner, RepairTask


@dataclass(frozen=True, slots=True)
class LoopConfig:
    inventory_interval_s: float = 5.0  # how often devices are asked what they hold
    scrub_bytes_per_s: int = 8 << 20  # local re-hash rate; the scrub yields the disk to users above it
    scrub_pause_s: float = 60.0  # rest between two full passes over the store


@dataclass
class RepairStats:
    volumes: dict[str, dict[bytes, ChunkRef]] = field(default_factory=dict)  # volume → its chunks
    corrupt_reported: dict[str, int] = field(default_factory=dict)  # device → shares its scrub dropped
    scrubbed_shares: int = 0
    scrub_passes: int = 0
    index_errors: int = 0


class Repairer:
    def __init__(self, node: StorageNode, repair: RepairConfig = RepairConfig(), loop: LoopConfig = LoopConfig(),
                 gc: GcConfig = GcConfig()) -> None:
        self.node = node
        self.collector = ShareCollector(gc)
        self.planner = RepairPlanner(repair)
        self.loop = loop
        self.stats = RepairStats()
        self.rounds = 0
        self._referenced: set[bytes] = set()  # share ids the last complete view referenced

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.repair_forever)
            nursery.start_soon(self.scrub_forever)

    # -- repair -----------------------------------------------------------------------------------

    async def repair_forever(self) -> None:
        while not self.node.stopped:
            await self.repair_round()
            await trio.sleep(self.loop.inventory_interval_s)

    async def repair_round(self) -> list[RepairTask]:
        now = trio.current_time()
        devices = set(self.node.devices())
        self.planner.set_devices(devices)
        await self._gather_inventories(devices, now)
        complete = await self._gather_chunks()
        # only a storage device of the Primary collects (no head yet, or removed: keep everything)
        await self._collect(complete and self.node.node_id in devices, now)
        up = [d for d in devices if self.planner.is_up(d, now)]
        tasks = self.planner.plan(now, accept=lambda ref: self._mine(ref, up))
        async with trio.open_nursery() as nursery:
            for task in tasks:
                nursery.start_soon(self._run_task, task)
        self.rounds += 1
        return tasks

    def _mine(self, ref: ChunkRef, up: list[str]) -> bool:
        order = placement.ranked(ref.id, up)
        return bool(order) and order[0] == self.node.node_id

    async def _gather_inventories(self, devices: set[str], now: float) -> None:
        async def one(device: str) -> None:
            if device == self.node.node_id:
                ids, corrupt = self.node.store.ids(), self.node.store.corrupt_found
            else:
                try:
                    ans = await self.node.links.ask(device, {"op": "inventory"})
                except PeerUnavailable:
                    return  # silent: the planner's grace period decides
                if not ans.get("ok") or not isinstance(ans.get("ids"), list):
                    return
                ids = {s for s in ans["ids"] if isinstance(s, bytes)}
                corrupt = ans.get("corrupt") if isinstance(ans.get("corrupt"), int) else 0
            self.planner.observe_inventory(device, ids, now)
            self.stats.corrupt_reported[device] = corrupt

        async with trio.open_nursery() as nursery:
            for d in devices:
                nursery.start_soon(one, d)

    async def _gather_chunks(self) -> bool:
        """Tell the planner every referenced chunk; False if some volume's index was unreadable."""
        wanted: dict[bytes, ChunkRef] = {}
        complete = True
        for volume in await self.node.roots.volumes():
            root = await self.node.roots.root(volume)
            if root is None:
                continue
            refs = {c.id: c for c in root.index}
            try:
                idx = await self.node.index(volume)
                refs.update(idx.chunk_refs())
            except (MissingRanges, CatalogError):
                self.stats.index_errors += 1  # the index chunks themselves are still repaired
                complete = False
            self.stats.volumes[volume] = refs
            wanted.update(refs)
        self.planner.expect(wanted)
        self._referenced = {sid for ref in wanted.values() for sid in ref.shares}
        return complete

    async def _collect(self, complete: bool, now: float) -> None:
        store = self.node.store
        for sid in self.collector.round(store.ids(), self._referenced if complete else None, now):
            await trio.to_thread.run_sync(store.delete, sid)
            self.collector.deleted(sid)

    async def _run_task(self, task: RepairTask) -> None:
        now = trio.current_time
        got: dict[int, bytes] = {}
        ref = task.chunk
        ok = False
        try:
            for index, device in task.sources.items():
                try:
                    i, data = await self.node.fetch_share(device, ref)
                except (PeerUnavailable, ShareMismatch, OSError):
                    self.planner.source_failed(device, now())
                    continue
                got[i] = data
            if len(got) >= ref.k:
                rebuilt = await trio.to_thread.run_sync(chunks.rebuild, ref, got, tuple(task.targets))
                for index, device in task.targets.items():
                    await self.node.send_share(device, ref, index, rebuilt[index])
                ok = True
        except (PeerUnavailable, ErasureError, ShareMismatch, OSError):
            ok = False  # planner re-plans with fresh inventories next round
        self.planner.task_done(task, ok, now())

    # -- scrub ------------------------------------------------------------------------------------

    async def scrub_forever(self) -> None:
        while not self.node.stopped:
            await self.scrub_pass()
            await trio.sleep(self.loop.scrub_pause_s)

    async def scrub_pass(self) -> int:
        """Hash every local share once, at the configured rate; returns how many were dropped."""
        store = self.node.store
        before = store.corrupt_found
        for sid in sorted(store.ids()):
            if self.node.stopped:
                break
            ok = await trio.to_thread.run_sync(store.scrub, sid)
            self.stats.scrubbed_shares += 1
            if ok:
                size = store.path(sid).stat().st_size if sid in store else 0
                await trio.sleep(size / self.loop.scrub_bytes_per_s)
        self.stats.scrub_passes += 1
        return store.corrupt_found - before

    # -- status -----------------------------------------------------------------------------------

    def volume_status(self, volume: str) -> dict:
        refs = self.stats.volumes.get(volume, {})
        now = trio.current_time()
        out = self.planner.summary(now, refs)
        out["shares_corrupt_found"] = sum(self.stats.corrupt_reported.values())
        return out

    def status(self) -> dict:
        now = trio.current_time()
        return {
            "volumes": {v: self.volume_status(v) for v in sorted(self.stats.volumes)},
            "total": self.planner.summary(now),
            "devices_up": sorted(d for d in self.planner.devices if self.planner.is_up(d, now)),
            "devices_silent": sorted(d for d in self.planner.devices if not self.planner.is_up(d, now)),
            "decisions": [d.to_wire() for d in list(self.planner.decisions)[-20:]],
            "scrub": {"passes": self.stats.scrub_passes, "shares": self.stats.scrubbed_shares, "corrupt_local": self.node.store.corrupt_found},
            "rounds": self.rounds,
            "gc": self.collector.status(),
        }
