"""Distributed storage: put/get throughput and repair time per GiB, beside their floors, in one run.

Method (in-process, loopback): `nodes` real meshes (py-libp2p + the TLS data channel) in one Python
process, a `StorageNode` on each over `mesh.open_channel`, roots in memory (no consensus in the
path: the Primary commit is measured by the multi-process test, not here). Figures, in order:

    storage_floor_plain_tcp      trio TCP stream, 1 MiB sends: the floor of every network figure
    storage_floor_aead           XChaCha20-Poly1305 sealing of 1 MiB chunks (VolumeKey.seal), one core
    storage_floor_encode_<k>of<n>  zfec encode of sealed 1 MiB chunks (MB of plaintext per second)
    storage_floor_decode_<k>of<n>  zfec decode from the k highest-index shares (the slowest case)
    storage_floor_datachannel    one data channel, 1 MiB messages, between two of the same meshes
    storage_put                  put of `mib` MiB: chunk, seal, code, send, fsync on k+1.. devices
    storage_get                  get of the same file from another node (fetch k shares, verify, decode, open)
    storage_repair_s_per_gib     one holder removed: time until every chunk has n shares again, per GiB
                                 of file data (grace period 0 for the bench)
"""

from __future__ import annotations

import os
import secrets
import tempfile
import time
from pathlib import Path

import trio

from bench.report import Figure, baseline, note, rounded

MIB = 1024 * 1024


def measure(*, mib: int = 64, nodes: int = 5) -> list[Figure]:
    return trio.run(_measure, mib, nodes)


async def _measure(mib: int, nodes: int) -> list[Figure]:
    from bench.transfer import _plain_tcp
    from mycelium.storage import chunks, erasure, placement
    from mycelium.storage.sealing import VolumeKey

    figs: list[Figure] = []
    note(f"storage: floors, {mib} MiB")
    tcp = await _plain_tcp(mib)
    figs.append(Figure("storage_floor_plain_tcp", rounded(tcp, 1), "MB/s", {"mib": mib}))
    floor = baseline("plain_tcp", rounded(tcp, 1), "MB/s")
    key = VolumeKey.derive(secrets.token_bytes(32), "bench", "vol")
    block = os.urandom(MIB)

    def seal_rate() -> float:
        start = time.perf_counter()
        for i in range(mib):
            key.seal(block[:-8] + i.to_bytes(8, "big"))
        return mib * MIB / (time.perf_counter() - start) / 1e6

    figs.append(Figure("storage_floor_aead", rounded(await trio.to_thread.run_sync(seal_rate), 1), "MB/s",
                       {"mib": mib, "cipher": "xchacha20-poly1305"}))
    scheme = placement.choose_scheme(nodes)
    for k, n in sorted({(3, 5), (scheme.k, scheme.n)} - {(1, scheme.n)}):  # replication (k = 1) is a copy, no code
        sealed = key.seal(block)
        s = erasure.Scheme(k, n)

        def enc() -> float:
            start = time.perf_counter()
            for _ in range(mib):
                erasure.encode(sealed, s)
            return mib * MIB / (time.perf_counter() - start) / 1e6

        shares = erasure.encode(sealed, s)
        worst = {i: shares[i] for i in range(n - k, n)}

        def dec() -> float:
            start = time.perf_counter()
            for _ in range(mib):
                erasure.decode(worst, s, len(sealed))
            return mib * MIB / (time.perf_counter() - start) / 1e6

        figs.append(Figure(f"storage_floor_encode_{k}of{n}", rounded(await trio.to_thread.run_sync(enc), 1), "MB/s", {"mib": mib}))
        figs.append(Figure(f"storage_floor_decode_{k}of{n}", rounded(await trio.to_thread.run_sync(dec), 1), "MB/s",
                           {"mib": mib, "from_shares": sorted(worst)}))
    del chunks
    figs += await _cluster(mib, nodes, tcp, floor)
    return figs


async def _cluster(mib: int, count: int, tcp: float, floor: dict) -> list[Figure]:
    from contextlib import AsyncExitStack

    from mycelium.identity import NodeKey
    from mycelium.mesh.config import MeshConfig
    from mycelium.storage.node import StorageConfig, StorageNode
    from mycelium.storage.repair import RepairConfig
    from mycelium.storage.repairer import LoopConfig, Repairer
    from mycelium.storage.roots import MemoryRoots
    from mycelium.storage.sealing import VolumeKey
    from mycelium.storage.shares import ShareStore
    from mycelium.testing.mesh import open_mesh, wait_until

    figs: list[Figure] = []
    secret, net = secrets.token_bytes(32), f"bench-{secrets.token_hex(4)}"
    keys = [NodeKey.generate() for _ in range(count)]
    roots = MemoryRoots()
    members = [k.node_id for k in keys]
    with tempfile.TemporaryDirectory(prefix="myc-bench-storage-") as tmp:
        async with AsyncExitStack() as stack:
            cfg = MeshConfig.local()
            meshes = [await stack.enter_async_context(open_mesh(cfg, k, net, secret)) for k in keys]
            from mycelium.mesh.host import MeshError

            for m in meshes[1:]:
                for other in meshes:
                    if other is not m:
                        for _attempt in range(5):  # a dial can time out on a loaded box; retry it
                            try:
                                await m.connect(other.listen_addresses()[0])
                                break
                            except MeshError:
                                await trio.sleep(1)
            await wait_until(lambda: all(len(m.admitted_peers()) >= count - 1 for m in meshes), timeout_s=120)
            note("storage: data channel floor")
            dc = await _channel_rate(meshes[0], meshes[1], mib)
            figs.append(Figure("storage_floor_datachannel", rounded(dc, 1), "MB/s",
                               {"mib": mib, "stripes": 1, "ratio_to_tcp": rounded(dc / tcp, 3)}, floor))
            nodes = []
            for k, m in zip(keys, meshes):
                node = StorageNode(k, m, ShareStore(Path(tmp) / k.node_id[-8:]), roots, devices=lambda: list(members),
                                   volume_key=lambda v: VolumeKey.derive(secret, net, v), network_id=net,
                                   cfg=StorageConfig(request_timeout_s=120.0))
                node.serve()
                nodes.append(node)
            data = os.urandom(mib * MIB)
            note(f"storage: put {mib} MiB over {count} nodes")
            start = time.perf_counter()
            entry = await nodes[0].put_file("vol", "bench.bin", data)
            put_s = time.perf_counter() - start
            k, n = entry.chunks[0].k, entry.chunks[0].n
            figs.append(Figure("storage_put", rounded(mib * MIB / put_s / 1e6, 1), "MB/s",
                               {"mib": mib, "nodes": count, "k": k, "n": n, "seconds": rounded(put_s, 2),
                                "wire_bytes_per_byte": rounded(n / k, 2), "ratio_to_tcp": rounded(mib * MIB / put_s / 1e6 / tcp, 3)}, floor))
            # a loaded box drops libp2p peers now and then; the data channel needs them admitted
            await wait_until(lambda: all(len(m.admitted_peers()) >= count - 1 for m in meshes), timeout_s=120)
            note("storage: get from another node")
            start = time.perf_counter()
            try:
                back = await nodes[-1].get_file("vol", "bench.bin")
            except Exception:
                note(f"storage: get failed; recent share errors: {list(nodes[-1].recent_errors)}")
                raise
            get_s = time.perf_counter() - start
            assert back == data
            figs.append(Figure("storage_get", rounded(mib * MIB / get_s / 1e6, 1), "MB/s",
                               {"mib": mib, "nodes": count, "k": k, "n": n, "seconds": rounded(get_s, 2),
                                "ratio_to_tcp": rounded(mib * MIB / get_s / 1e6 / tcp, 3)}, floor))
            # repair: drop the busiest holder from the device list (as the Primary does for a dead member)
            lost = max(nodes[1:], key=lambda nd: len(nd.store.ids()))
            lost.stopped = True
            members.remove(lost.node_id)
            live = [nd for nd in nodes if nd is not lost]
            reps = [Repairer(nd, RepairConfig(grace_s=0.0, fresh_s=30.0, bandwidth_bytes_per_s=1 << 40, burst_bytes=1 << 40,
                                              max_inflight=8), LoopConfig(inventory_interval_s=0.2, scrub_pause_s=3600)) for nd in live]
            wanted = {s for c in entry.chunks for s in c.shares}
            # full redundancy on the survivors: min(n, survivors) distinct shares per chunk (one per device)
            def repaired() -> bool:
                return all(sum(any(s in nd.store for nd in live) for s in c.shares) >= min(c.n, len(live))
                           for c in entry.chunks)

            note(f"storage: repair after losing {len(lost.store.ids())} shares")
            start = time.perf_counter()
            async with trio.open_nursery() as nursery:
                for r in reps:
                    nursery.start_soon(r.repair_forever)
                with trio.fail_after(600):
                    while not repaired():
                        await trio.sleep(0.05)
                repair_s = time.perf_counter() - start
                for nd in live:
                    nd.stopped = True
                nursery.cancel_scope.cancel()
            figs.append(Figure("storage_repair_s_per_gib", rounded(repair_s * 1024 / mib, 1), "s/GiB",
                               {"mib": mib, "nodes": count, "k": k, "n": n, "seconds": rounded(repair_s, 2),
                                "rebuilt_shares": sum(1 for s in wanted if s in lost.store),
                                "survivors": len(live)}))
            for nd in nodes:
                await nd.links.aclose()
    return figs


async def _channel_rate(a, b, mib: int) -> float:  # noqa: ANN001
    async def sink(peer: str, channel) -> None:  # noqa: ANN001
        got = 0
        while got < mib * MIB:
            got += len(await channel.receive())
        await channel.send(b"done")

    b.serve_channels("bench-storage-sink", sink)
    from bench.transfer import timed_send

    return await timed_send(await a.open_channel(b.node_id, "bench-storage-sink"), mib)
