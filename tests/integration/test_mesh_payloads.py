"""Regression for py-libp2p 0.8.1's yamux corruption of concurrent > 64 KiB writes on one stream:
large payloads travel by request/response, one stream each, and arrive byte for byte.

Bulk goes one direction at a time here. With large writes in both directions at once on one
connection, py-libp2p's yamux stalled both ends (two full runs on 2026-12-01: nothing moved for
24 s, then the mesh's failed pings dropped the peer). As far as its code reads, each side's single
frame reader also writes (pings, acks) under the connection's write lock, which a data writer holds
while the kernel's send buffer is full because the other side's reader is blocked the same way.
Bulk traffic therefore belongs on the data channel (mycelium/mesh/datachannel.py), not the mesh."""

from __future__ import annotations

import hashlib
import os

import trio

from mycelium.testing.deadlines import hang_after, stretched
from mycelium.testing.mesh import open_meshes

NET = "ab" * 32
SECRET = b"\x07" * 32
SIZES = [300_000, 400_000, 700_000, 1_500_000]


def body(seed: bytes, size: int) -> bytes:
    """A large answer both sides can compute: `size` bytes derived from `seed`."""
    return hashlib.shake_256(seed).digest(size)


async def test_concurrent_large_payloads_arrive_intact_both_ways() -> None:
    async with open_meshes(2, NET, SECRET) as (a, b):

        async def digest(peer: str, data: bytes) -> bytes:  # large request in, small answer out
            return hashlib.sha256(data).digest()

        async def grow(peer: str, data: bytes) -> bytes:  # small request in, large answer out
            return body(data[:16], int.from_bytes(data[16:20], "big"))

        for m in (a, b):
            m.register_handler("digest", digest)
            m.register_handler("grow", grow)
        with hang_after(30):
            await b.connect(a.listen_addresses()[0])
            await a.wait_admitted(b.node_id)
        failures: list[str] = []

        async def upload(src, dst, size: int) -> None:  # type: ignore[no-untyped-def]
            payload = os.urandom(size)
            answer = await src.request(dst.node_id, "digest", payload, timeout_s=stretched(25))
            if answer != hashlib.sha256(payload).digest():
                failures.append(f"{size}-byte request {src.node_id[-6:]}→{dst.node_id[-6:]} corrupted")

        async def download(src, dst, size: int) -> None:  # type: ignore[no-untyped-def]
            seed = os.urandom(16)
            answer = await src.request(dst.node_id, "grow", seed + size.to_bytes(4, "big"), timeout_s=stretched(25))
            if answer != body(seed, size):
                failures.append(f"{size}-byte answer {dst.node_id[-6:]}→{src.node_id[-6:]} corrupted")

        # each phase: four concurrent large writes, each on its own stream, all one way
        for run, src, dst in ((upload, a, b), (upload, b, a), (download, a, b), (download, b, a)):
            with hang_after(30):
                async with trio.open_nursery() as nursery:
                    for i, size in enumerate(SIZES):
                        nursery.start_soon(run, src, dst, size + 7 * i)
        assert failures == []
        assert a.counters.requests_in >= 8 and b.counters.requests_in >= 8  # + peer exchanges
