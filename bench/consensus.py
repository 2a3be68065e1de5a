"""Consensus: height latency and operations/s at n validators, against the mesh rpc round trip.

Method (in-process; why: a real daemon becomes a validator only after UPTIME_WARMUP_HEIGHTS and the
role rule picks 4 or 7 validators only from enough capable members, so 4/7 real validators on one
2-core machine would take minutes of warm-up and give 7 daemons + joiners fighting for 2 cores):
n real `mycelium.mesh.Mesh` hosts (loopback TCP, MeshConfig.local(), fully connected) in one
process; each runs the daemon's own consensus stack — ConsensusCore in a ConsensusDriver whose
transport is PeerQueues over the mesh's long-lived "consensus" message stream per peer (everything
queued for a peer in one write, no answer per message; exactly as mycelium.session wires it), with
ConsensusConfig() LAN defaults except heartbeat_interval_s = 1. The application is the
toy LedgerApp of mycelium.sim.toy_ledger (short string operations, hash-chained candidates) with batches of up to
MAX_BATCH - 1 operations: it leaves out operation signature checks and the SQLite commit of each
Primary, so it measures the protocol, not the ledger. Every PersistLock is written and fsynced to
a file, as the daemon fsyncs its lock.

Load: every validator's pool is refilled to a full batch after each decision and the driver poked
(saturation), so a proposer never waits for a heartbeat.
Height latency = time between consecutive decisions at validator 0 (after `warmup` heights);
operations/s = operations in those heights / elapsed time.

Baseline: p50 of `rtt_calls` request/response round trips (16-byte payload, echo handler) between
two of the same meshes, measured in the same run just before consensus starts.
"""

from __future__ import annotations

from collections.abc import Iterator

import os
import tempfile
import time
from contextlib import AsyncExitStack
from collections import Counter
from functools import partial
from itertools import count
from typing import Any

import trio

from mycelium.consensus.config import ConsensusConfig
from mycelium.consensus.core import ConsensusCore
from mycelium.consensus.driver import ConsensusDriver
from mycelium.sim.toy_ledger import GENESIS_HASH, LedgerApp
from mycelium.shell.exchange import PeerQueues

STREAMED = os.environ.get("MYCELIUM_BENCH_CONSENSUS_RPC") != "1"  # =1: one rpc per message (the A/B)
from mycelium.identity import NodeKey
from mycelium.mesh.config import MeshConfig
from mycelium.mesh.host import open_mesh
from mycelium.encoding import canonical
from mycelium.ledger.operations import MAX_BATCH

from bench.report import Figure, baseline, note, percentile, rounded

RPC_CONSENSUS, RPC_ECHO = "consensus", "bench-echo"
BATCH = MAX_BATCH - 1


class SaturatedApp(LedgerApp):
    """LedgerApp with batches as large as the ledger's; `top_up` refills the pool (after every
    decision, from the driver's loop: a pool refilled inside make_batch would let one validator
    decide heights forever without returning to trio)."""

    _ids = count()
    batch_size = BATCH

    def top_up(self) -> None:
        while len(self.pending) < self.batch_size:
            self.pending.append(f"op-{next(self._ids)}")

    def make_batch(self, height: int) -> list[Any]:
        return list(self.pending[:self.batch_size])


class FsyncedLock:
    def __init__(self, path: str) -> None:
        self.path = path
        self.writes = 0

    def __call__(self, state: dict) -> None:
        from mycelium.encoding import canonical

        with open(self.path, "wb") as f:
            f.write(canonical(state))
            f.flush()
            os.fsync(f.fileno())
        self.writes += 1


async def _rtt(meshes, calls: int) -> list[float]:
    if len(meshes) < 2:
        return []
    target = meshes[1].admitted_peers() and meshes[0].listen_addresses()[0].split("/p2p/")[1]
    samples = []
    for _ in range(calls):
        t0 = time.monotonic()
        await meshes[1].request(target, RPC_ECHO, b"x" * 16, timeout_s=10)
        samples.append(time.monotonic() - t0)
    return samples


async def _echo(peer: str, data: bytes) -> bytes:
    return data


async def run_consensus(n: int, seconds: float, warmup: int, rtt_calls: int, tmp: str,
                        *, pq: bool = False, batch: int = BATCH) -> dict[str, Any]:
    """`pq`: the network is a --pq one (hybrid Ed25519 + ML-DSA-65 votes and certificates);
    `batch`: operations per height (the default saturates the ledger's MAX_BATCH)."""
    keys = sorted((NodeKey.generate() for _ in range(max(n, 2))), key=lambda k: k.node_id)
    ids = [k.node_id for k in keys]
    validators = ids[:n]
    network_id = os.urandom(8).hex()
    if pq:
        from mycelium.identity import create_network
        from mycelium.signatures import PQ_KEYS

        network_id = create_network("bench-pq", keys[0], pq=True)[0].network_id  # binds the hybrid scheme
        for k in keys:
            PQ_KEYS.pin(network_id, k.node_id, k.pq_public)  # as the certified Primary naming them would
    secret = os.urandom(32)
    config = ConsensusConfig(heartbeat_interval_s=1.0)
    decided_at: list[tuple[float, int]] = []
    cert_sizes: list[int] = []
    out: dict[str, Any] = {}
    async with AsyncExitStack() as stack:
        # n = 1 still gets a second mesh: the round-trip baseline needs two hosts (it runs no consensus)
        meshes = [await stack.enter_async_context(open_mesh(MeshConfig.local(), k, network_id, secret)) for k in keys]
        for m in meshes:
            m.register_handler(RPC_ECHO, _echo)
        for m in meshes[n:]:  # the baseline's extra host (n = 1) is an observer: it takes votes and drops them
            m.register_handler(RPC_CONSENSUS, _discard)
            m.register_stream_handler(RPC_CONSENSUS, _discard)
        addrs = [m.listen_addresses()[0] for m in meshes]
        for i in range(len(meshes)):
            for j in range(i):
                if ids[j] in meshes[i].admitted_peers():
                    continue  # peer exchange got there first
                try:
                    await meshes[i].connect(addrs[j])
                except Exception as exc:  # e.g. a simultaneous dial from the other side; redial/peer exchange retry
                    note(f"consensus: dial {i}->{j} failed ({exc!r}); waiting for the mesh to connect them")
        with trio.fail_after(60):
            while not all(len(m.admitted_peers()) >= len(meshes) - 1 for m in meshes):
                await trio.sleep(0.05)
        out["rtt"] = await _rtt(meshes, rtt_calls)
        locks, transports, drivers_all = [], [], []
        async with trio.open_nursery() as nursery:
            for i in range(n):
                app = SaturatedApp({0: validators})
                app.batch_size = batch
                app.top_up()
                core = ConsensusCore(keys[i], network_id, app, config, height=1, prev_hash=GENESIS_HASH)
                transport = PeerQueues(meshes[i], nursery, RPC_CONSENSUS, streamed=STREAMED)
                transports.append(transport)
                lock = FsyncedLock(os.path.join(tmp, f"lock{i}"))
                locks.append(lock)

                drivers: list[ConsensusDriver] = []

                def on_decided(d, i=i, app=app, drivers=drivers) -> None:
                    if i == 0:
                        decided_at.append((time.monotonic(), len(d.batch), time.process_time()))
                        cert_sizes.append(len(canonical(d.certificate.to_wire())))
                    app.top_up()  # the next operations arrive at once: saturation
                    drivers[0].poke()

                driver = ConsensusDriver(core, transport, persist_lock=lock, on_decided=on_decided)
                drivers.append(driver)
                drivers_all.append(driver)
                meshes[i].register_handler(RPC_CONSENSUS, lambda peer, data, drv=driver: _deliver(drv, peer, data))
                meshes[i].register_stream_handler(RPC_CONSENSUS, lambda peer, data, drv=driver: _deliver(drv, peer, data))
                await nursery.start(driver.run)
            with trio.move_on_after(seconds):
                while True:
                    await trio.sleep(0.1)
            nursery.cancel_scope.cancel()
        out["lock_writes"] = sum(l.writes for l in locks)
        out["send_dropped"] = dict(sum((t.dropped for t in transports), Counter()))
        out["inbox_dropped"] = sum(d.dropped["inbox_full"] for d in drivers_all)
        counters = Counter()
        for m in meshes:
            counters.update({k: v for k, v in m.counters.snapshot().items() if v and ("refus" in k or "drop" in k or "limit" in k)})
        out["mesh_refusals"] = dict(counters)
    heights = decided_at[warmup:]
    out["intervals"] = [b[0] - a[0] for a, b in zip(heights, heights[1:])]
    out["ops"] = sum(k for _, k, _ in heights[1:])
    out["elapsed"] = heights[-1][0] - heights[0][0] if len(heights) > 1 else 0.0
    # all n validators share this process's one thread: a height cannot take less wall time than the
    # CPU all of them spend on it (what two cores give a real node per validator, this harness does not)
    out["cpu_per_height"] = (heights[-1][2] - heights[0][2]) / (len(heights) - 1) if len(heights) > 1 else None
    out["heights"] = len(decided_at)
    out["certificate_bytes"] = cert_sizes
    return out


async def _discard(peer: str, data: bytes) -> bytes:
    return b""


async def _deliver(driver: ConsensusDriver, peer: str, data: bytes) -> bytes:
    driver.deliver(peer, data)
    return b""


def measure(*, validators: tuple[int, ...] = (1, 4, 7), seconds: float = 20.0, warmup: int = 2,
            rtt_calls: int = 50) -> Iterator[Figure]:
    """Figures as each size is measured (a generator: a later failure keeps the earlier lines).

    Per n: the saturated run (full batches: throughput, and the height time it leaves), then a light
    run (`consensus_height_n<n>_light_*`: one operation per height, the next one ready at once) for
    the latency the issue's target speaks of, without a full batch's application work."""
    for n in validators:
        yield from _figures(n, seconds, warmup, rtt_calls, BATCH, "")
        yield from _figures(n, seconds / 2, warmup, rtt_calls, 1, "_light")


def _figures(n: int, seconds: float, warmup: int, rtt_calls: int, batch: int, suffix: str) -> Iterator[Figure]:
    note(f"consensus: {n} validator(s) for {seconds:.0f} s, {batch} operation(s) per height")
    with tempfile.TemporaryDirectory(prefix="mb-cons-") as tmp:
        res = trio.run(partial(run_consensus, n, seconds, warmup, rtt_calls, tmp, batch=batch))
    rtt_p50 = percentile(res["rtt"], 50)
    p50 = percentile(res["intervals"], 50)
    ops_s = res["ops"] / res["elapsed"] if res["elapsed"] > 0 else None
    params = {"validators": n, "run_s": seconds, "warmup_heights": warmup, "heights_decided": res["heights"],
              "heights_measured": len(res["intervals"]), "batch_max_ops": batch,
              "cpu_s_per_height": rounded(res["cpu_per_height"]),
              "cpu_note": "process CPU per height, all n validators in this one thread: the harness's floor",
              "p95_s": rounded(percentile(res["intervals"], 95)),
              "ratio_p50_to_rtt": rounded(p50 / rtt_p50, 1) if p50 and rtt_p50 else None,
              "rtt_calls": len(res["rtt"]), "lock_fsyncs": res["lock_writes"],
              "send_dropped": res["send_dropped"], "inbox_dropped": res["inbox_dropped"],
              "mesh_refusals": res["mesh_refusals"],
              "method": "in-process: n Mesh hosts in one trio loop, ConsensusCore + ConsensusDriver + PeerQueues "
                        + ("over the mesh's consensus message stream" if STREAMED else "over mesh rpc, one request per message")
                        + " (as in mycelium.session); toy LedgerApp kept saturated"
                        + (" with one operation per height; " if batch == 1 else "; ")
                        + "ConsensusConfig() with heartbeat_interval_s=1",
              "target": "p50 <= 4x rtt at n=4"}
    base = baseline("mesh_rpc_round_trip_p50", rounded(rtt_p50, 5), "s")
    yield Figure(f"consensus_height_n{n}{suffix}_p50", rounded(p50), "s", params, base)
    yield Figure(f"consensus_height_n{n}{suffix}_p95", rounded(percentile(res["intervals"], 95)), "s", params, base)
    if not suffix:
        yield Figure(f"consensus_ops_per_s_n{n}", rounded(ops_s, 1), "ops/s", params, None)
