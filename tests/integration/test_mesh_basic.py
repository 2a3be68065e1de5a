"""Two real libp2p hosts on loopback: admission, request/response, gossip."""

from __future__ import annotations

import trio

from mycelium.identity import NodeKey
from mycelium.mesh.config import MeshConfig
from mycelium.mesh.host import open_mesh

NET = "ab" * 32
SECRET = b"\x07" * 32


async def test_two_members_admit_each_other_and_talk() -> None:
    a_key, b_key = NodeKey.generate(), NodeKey.generate()
    async with open_mesh(MeshConfig.for_tests(), a_key, NET, SECRET) as a, open_mesh(
        MeshConfig.for_tests(), b_key, NET, SECRET
    ) as b:

        async def echo(peer: str, data: bytes) -> bytes:
            return peer.encode() + b":" + data

        a.register_handler("echo", echo)
        with trio.fail_after(10):
            node = await b.connect(a.listen_addresses()[0])
            assert node == a.node_id
            await a.wait_admitted(b.node_id)
            answer = await b.request(a.node_id, "echo", b"hello")
        assert answer == b_key.node_id.encode() + b":hello"
        print(a.counters.snapshot())
