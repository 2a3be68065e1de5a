"""Regression for py-libp2p 0.8.1's yamux corruption of concurrent > 64 KiB writes on one stream:
large payloads travel by request/response, one stream each, and arrive byte for byte."""

from __future__ import annotations

import hashlib
import os

import trio

from mycelium.testing.mesh import open_meshes
from mycelium.testing.deadlines import hang_after, stretched

NET = "ab" * 32
SECRET = b"\x07" * 32


async def test_concurrent_large_payloads_arrive_intact_both_ways() -> None:
    async with open_meshes(2, NET, SECRET) as (a, b):

        async def mirror(peer: str, data: bytes) -> bytes:
            # answer with a different large body derived from the request, so both directions are checked
            return hashlib.sha256(data).digest() + data[::-1]

        a.register_handler("mirror", mirror)
        b.register_handler("mirror", mirror)
        with hang_after(30):
            await b.connect(a.listen_addresses()[0])
            await a.wait_admitted(b.node_id)
            failures: list[str] = []

            async def one(src, dst, size: int) -> None:  # type: ignore[no-untyped-def]
                payload = os.urandom(size)
                answer = await src.request(dst.node_id, "mirror", payload, timeout_s=stretched(25))
                if answer != hashlib.sha256(payload).digest() + payload[::-1]:
                    failures.append(f"{size} bytes {src.node_id[-6:]}→{dst.node_id[-6:]} corrupted")

            async with trio.open_nursery() as nursery:
                for i, size in enumerate([300_000, 400_000, 700_000, 1_500_000]):
                    nursery.start_soon(one, a, b, size + i)
                    nursery.start_soon(one, b, a, size + 7 * i)
        assert failures == []
        assert a.counters.requests_in >= 4 and b.counters.requests_in >= 4  # + peer exchanges
