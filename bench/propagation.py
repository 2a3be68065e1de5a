"""Latent propagation over in-process meshes, with the gossipsub one-hop floor of the same run.

N real `mycelium.mesh.Mesh` hosts (py-libp2p over loopback TCP, MeshConfig.local()) run in ONE
process and one trio loop — the only way to get 25 or 50 nodes onto 2 cores; every message really
goes through libp2p, noise, yamux and gossipsub, but all nodes share one CPU core, so the figures
include queueing behind the other N-1 nodes' work. Each node runs the daemon's Latent stack:
LatentGossip (the sans-IO anti-entropy core) in a CoreShell over its mesh (deltas on the "latent"
topic, digests and repairs over the "latent" rpc), with all N nodes as members.

Topology: node i dials node 0 and two random earlier nodes; peer exchange and redial fill each node
to MeshConfig.target_connections. We wait until every node has ≥ min(N-1, 4) admitted peers and
two gossipsub heartbeats have passed.

One update = a fresh signed USAGE entry published by a rotating author at t0; each node's store
records the monotonic time it first merges it (a LatentStore subclass, same process, same clock: the
resolution is the trio scheduling granularity, well under 1 ms). Propagation = last arrival - t0.

Floor: node 0 publishes `rounds` timestamped messages on a separate topic; a directly connected
peer records receive - send (gossipsub one hop: libp2p + signing/verification, no Latent work).
"""

from __future__ import annotations

from collections.abc import Iterator

import random
import time
from typing import Any

import trio

from mycelium.shell.exchange import CoreShell
from mycelium.identity import NodeKey
from mycelium.mesh.config import MeshConfig
from mycelium.mesh.host import Mesh
from mycelium.spores.entry import MASTER_SCOPE, Entry, EntryType, make_entry, next_temporal_version
from mycelium.spores.gossip import GossipConfig, LatentGossip
from mycelium.spores.latent import LatentLimits, LatentStore
from mycelium.spores.validation import EntryValidator

from bench.report import Figure, baseline, note, percentile, rounded

TOPIC, RPC, FLOOR_TOPIC = "latent", "latent", "bench-floor"
UPDATE_TIMEOUT_S = 10.0
GIVE_UP_AFTER = 3  # consecutive updates that did not reach every node: stop this size


def mesh_config() -> MeshConfig:
    """Loopback and ephemeral ports from MeshConfig.local(), but the daemon's own (default) timers
    for pings, peer exchange and maintenance: local()'s 1 s pings and 0.5 s exchanges to every
    peer cost more CPU than 25+ hosts sharing one core have, and no real node runs them."""
    d = MeshConfig()
    return MeshConfig.local(ping_interval_s=d.ping_interval_s, exchange_interval_s=d.exchange_interval_s,
                                maintenance_interval_s=d.maintenance_interval_s)


class TimedStore(LatentStore):
    """Remembers when each (author, version) was first merged here."""

    def __init__(self) -> None:
        super().__init__(MASTER_SCOPE, LatentLimits())
        self.arrivals: dict[tuple[str, int], float] = {}

    def merge_entry(self, entry: Entry) -> bool:
        merged = super().merge_entry(entry)
        if merged:
            self.arrivals.setdefault((entry.author, entry.version), time.monotonic())
        return merged


async def _wait(predicate, timeout_s: float, poll_s: float = 0.005) -> bool:
    with trio.move_on_after(timeout_s):
        while not predicate():
            await trio.sleep(poll_s)
        return True
    return False


async def run_mesh(n: int, updates: int, floor_rounds: int, settle_s: float = 2.5, *, seed: int = 7) -> dict[str, Any]:
    rng = random.Random(seed)
    network_id = NodeKey.generate().node_id[-16:]
    secret = bytes(rng.getrandbits(8) for _ in range(32))
    cfg = mesh_config()
    keys = [NodeKey.generate() for _ in range(n)]
    ids = [k.node_id for k in keys]
    members = frozenset(ids)
    out: dict[str, Any] = {}
    # All meshes in one nursery, cancelled together once the shells are: closed one after another (an
    # exit stack), each still-open mesh redialled the ones just closed, and 50 of them took minutes.
    async with trio.open_nursery() as hosts:
        meshes = []
        for key in keys:
            meshes.append(mesh := Mesh(cfg, key, network_id, secret))
            await hosts.start(mesh.run)
        async with trio.open_nursery() as nursery:
            stores, shells, cores = [], [], []
            for key, mesh in zip(keys, meshes):
                store = TimedStore()
                validator = EntryValidator(network_id, scope=MASTER_SCOPE, members=members)
                core = LatentGossip(key.node_id, store, validator, GossipConfig())
                shell = CoreShell(core, mesh, nursery, rpc_name=RPC, topic=TOPIC, clock=time.time)
                mesh.register_handler(RPC, shell.handle_rpc)
                stores.append(store), shells.append(shell), cores.append(core)
            addrs = [m.listen_addresses()[0] for m in meshes]
            t_connect = time.monotonic()
            for i in range(1, n):
                for j in {0, *rng.sample(range(i), min(2, i))}:
                    try:
                        await meshes[i].connect(addrs[j])
                    except Exception as exc:  # a refused dial is retried by the mesh's redial loop
                        note(f"propagation: dial {i}->{j} failed: {exc!r}")
            want = min(n - 1, 4)
            ok = await _wait(lambda: all(len(m.admitted_peers()) >= want for m in meshes), 120, 0.1)
            if not ok:
                raise RuntimeError(f"{n} meshes did not reach {want} admitted peers each within 120 s")
            out["connect_s"] = time.monotonic() - t_connect
            note(f"propagation: {n} meshes connected in {out['connect_s']:.1f} s")
            for shell in shells:
                await nursery.start(shell.run)

            async def refresh_peers() -> None:
                while True:
                    for mesh, core in zip(meshes, cores):
                        core.set_peers(mesh.admitted_peers())
                    await trio.sleep(2.0)

            nursery.start_soon(refresh_peers)
            await trio.sleep(settle_s)  # gossipsub heartbeats (1 s): topic meshes grafted
            out["floor_s"] = await _floor(meshes, ids, floor_rounds, nursery, settle_s)
            spreads: list[float | None] = []
            out["abandoned_after"] = None
            versions: dict[str, int] = {}
            for u in range(updates):
                a = u % n
                now_ms = int(time.time() * 1000)
                version = next_temporal_version(versions.get(ids[a], 0), now_ms)
                versions[ids[a]] = version
                entry = make_entry(keys[a], network_id, EntryType.USAGE, {"cpu_permille": u % 1000},
                                   version=version, timestamp_ms=now_ms)
                t0 = time.monotonic()
                shells[a].call(lambda now, e=entry, c=cores[a]: c.publish(e, now))
                k = (ids[a], version)
                done = await _wait(lambda: all(k in s.arrivals for s in stores), UPDATE_TIMEOUT_S)
                spreads.append(max(s.arrivals[k] for s in stores) - t0 if done else None)
                if not done:
                    note(f"propagation: update {u} reached {sum(k in s.arrivals for s in stores)}/{n} in {UPDATE_TIMEOUT_S} s")
                    if len(spreads) >= GIVE_UP_AFTER and all(x is None for x in spreads[-GIVE_UP_AFTER:]):
                        out["abandoned_after"] = len(spreads)  # the harness is overloaded; stop wasting minutes
                        break
                await trio.sleep(0.2)
            out["spreads"] = spreads
            out["drops"] = sum(c.drops.total for c in cores)
            nursery.cancel_scope.cancel()
        t_close = time.monotonic()
        hosts.cancel_scope.cancel()
    note(f"propagation: {n} meshes closed in {time.monotonic() - t_close:.1f} s")
    return out


async def _floor(meshes, ids: list[str], rounds: int, nursery, settle_s: float) -> list[float]:
    sender = meshes[0]
    receiver = meshes[ids.index(sender.admitted_peers()[0])]  # a direct neighbour of node 0
    samples: list[float] = []
    got = trio.Event()

    async def listen(task_status=trio.TASK_STATUS_IGNORED) -> None:
        nonlocal got
        async with receiver.subscribe(FLOOR_TOPIC) as messages:
            async with sender.subscribe(FLOOR_TOPIC):  # both ends in the topic mesh: a direct hop
                task_status.started()
                async for msg in messages:
                    samples.append(time.monotonic() - float(msg.data.decode()))
                    got.set()

    scope = trio.CancelScope()

    async def guarded(task_status=trio.TASK_STATUS_IGNORED) -> None:
        with scope:
            await listen(task_status=task_status)

    await nursery.start(guarded)
    await trio.sleep(settle_s)  # gossipsub heartbeats graft the new topic
    for _ in range(rounds):
        got = trio.Event()
        await sender.publish(FLOOR_TOPIC, repr(time.monotonic()).encode())
        with trio.move_on_after(2.0):
            await got.wait()
        await trio.sleep(0.05)
    scope.cancel()
    return samples


def measure(*, sizes: tuple[int, ...] = (10, 25, 50), updates: int = 20, floor_rounds: int = 30,
            settle_s: float = 2.5) -> Iterator[Figure]:
    """Figures as each size is measured (a generator: a later failure keeps the earlier lines)."""
    for n in sizes:
        note(f"propagation: {n} in-process meshes")
        t_start = time.monotonic()
        res = trio.run(run_mesh, n, updates, floor_rounds, settle_s)
        ok = [s for s in res["spreads"] if s is not None]
        floor = res["floor_s"]
        base = baseline("gossipsub_one_hop_p50", rounded(percentile(floor, 50), 5), "s")
        params = {"nodes": n, "updates": len(res["spreads"]), "arrived_everywhere": len(ok), "real_daemons": False,
                  "update_timeout_s": UPDATE_TIMEOUT_S, "abandoned_after_misses": res["abandoned_after"],
                  "method": "in-process: N mycelium.mesh.Mesh (MeshConfig.local() with default ping/exchange/maintenance "
                            "timers, loopback TCP) in one trio "
                            "loop, LatentGossip via CoreShell; arrival = first merge in each node's store",
                  "latent_gossip": "GossipConfig() defaults (anti-entropy 1 s, fanout 2)",
                  "floor_samples": len(floor), "settle_s": settle_s, "floor_p99_s": rounded(percentile(floor, 99), 5),
                  "connect_s": round(res["connect_s"], 2), "dropped_entries": res["drops"],
                  "wall_s": round(time.monotonic() - t_start, 1), "target_p99_s_at_50": 0.5}
        yield Figure(f"latent_propagation_n{n}_p50", rounded(percentile(ok, 50)), "s", params, base)
        yield Figure(f"latent_propagation_n{n}_p99", rounded(percentile(ok, 99)), "s", params, base)
