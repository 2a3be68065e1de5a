"""Several storage nodes in one trio process over `MemoryChannelNetwork` (tests and benchmarks).

    async with storage_cluster(tmp_path, 5) as c:
        await c.nodes[0].put_file("vol", "f", data)
        c.kill(c.ids[1])                        # unreachable, stops serving and repairing
        await c.wait_repaired("vol")
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import trio

from mycelium.identity import NodeKey
from mycelium.storage.gc import GcConfig
from mycelium.storage.node import StorageConfig, StorageNode
from mycelium.storage.repair import RepairConfig
from mycelium.storage.repairer import LoopConfig, Repairer
from mycelium.storage.roots import MemoryRoots
from mycelium.storage.sealing import VolumeKey
from mycelium.storage.shares import ShareStore
from mycelium.testing.channels import MemoryChannelNetwork
from mycelium.testing.deadlines import hang_after

SECRET = b"\x07" * 32
NETWORK_ID = "test-network"

FAST_REPAIR = RepairConfig(fresh_s=1.0, grace_s=1.5, source_cooldown_s=0.5)
FAST_LOOP = LoopConfig(inventory_interval_s=0.1, scrub_pause_s=3600)


@dataclass
class StorageCluster:
    network: MemoryChannelNetwork
    roots: MemoryRoots
    members: list[str]  # what the Primary lists as storage devices (kill leaves it, `remove` drops it)
    nodes: list[StorageNode] = field(default_factory=list)
    repairers: list[Repairer] = field(default_factory=list)
    scopes: dict[str, trio.CancelScope] = field(default_factory=dict)

    @property
    def ids(self) -> list[str]:
        return [n.node_id for n in self.nodes]

    def node(self, node_id: str) -> StorageNode:
        return self.nodes[self.ids.index(node_id)]

    def repairer(self, node_id: str) -> Repairer:
        return self.repairers[self.ids.index(node_id)]

    def alive(self) -> list[StorageNode]:
        return [n for n in self.nodes if not n.stopped]

    def kill(self, node_id: str) -> None:
        """Like kill -9: unreachable at once, serves nothing more, its repair loop stops."""
        self.network.kill(node_id)
        self.node(node_id).stopped = True
        self.scopes[node_id].cancel()

    def holders(self, share_id: bytes) -> list[str]:
        return [n.node_id for n in self.alive() if share_id in n.store]

    async def wait_repaired(self, volume: str, *, timeout_s: float = 60.0) -> dict:
        """Until every chunk of `volume` has n healthy shares on live nodes, as the stores say and
        as a live node's status says (its view lags by one inventory round)."""
        with hang_after(timeout_s):
            while True:
                rep = self.any_repairer()
                refs = rep.stats.volumes.get(volume, {})
                stored = refs and all(len(self.holders(s)) == 1 for r in refs.values() for s in r.shares)
                status = rep.volume_status(volume)
                if stored and status["shares_missing"] == 0 and status["shares_waiting"] == 0:
                    return status
                await trio.sleep(0.05)

    def any_repairer(self) -> Repairer:
        return next(r for r in self.repairers if not r.node.stopped)


@asynccontextmanager
async def storage_cluster(
    tmp: Path,
    size: int,
    *,
    cfg: StorageConfig = StorageConfig(request_timeout_s=2.0),
    repair: RepairConfig = FAST_REPAIR,
    loop: LoopConfig = FAST_LOOP,
    run_repair: bool = True,
    gc: GcConfig = GcConfig(),
) -> AsyncIterator[StorageCluster]:
    async with trio.open_nursery() as nursery:
        network = MemoryChannelNetwork(nursery)
        keys = [NodeKey.from_seed(bytes([i + 1]) * 32) for i in range(size)]
        cluster = StorageCluster(network, MemoryRoots(), [k.node_id for k in keys])
        for i, key in enumerate(keys):
            node = StorageNode(
                key,
                network.provider(key.node_id),
                ShareStore(tmp / f"node{i}"),
                cluster.roots,
                devices=lambda: list(cluster.members),
                volume_key=lambda v: VolumeKey.derive(SECRET, NETWORK_ID, v),
                network_id=NETWORK_ID,
                cfg=cfg,
            )
            node.serve()
            cluster.nodes.append(node)
            rep = Repairer(node, repair, loop, gc)
            cluster.repairers.append(rep)
            scope = trio.CancelScope()
            cluster.scopes[key.node_id] = scope
            if run_repair:
                nursery.start_soon(_run_in, scope, rep)
        try:
            yield cluster
        finally:
            for n in cluster.nodes:
                n.stopped = True
            nursery.cancel_scope.cancel()


async def _run_in(scope: trio.CancelScope, rep: Repairer) -> None:
    with scope:
        await rep.run()
