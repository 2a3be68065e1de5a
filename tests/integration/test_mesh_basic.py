"""Two real libp2p hosts on loopback: admission, request/response, gossip, peers()."""

from __future__ import annotations

import pytest
import trio

from mycelium.mesh.protocols import TOPIC_LATENT
from mycelium.mesh.rpc import BadRequest, PeerNotAdmitted, RemoteError
from mycelium.testing.mesh import open_meshes, wait_until
from mycelium.testing.deadlines import hang_after

NET = "ab" * 32
SECRET = b"\x07" * 32


async def test_two_members_admit_each_other_and_talk() -> None:
    async with open_meshes(2, NET, SECRET) as (a, b):

        async def echo(peer: str, data: bytes) -> bytes:
            return peer.encode() + b":" + data

        a.register_handler("echo", echo)
        with hang_after(10):
            assert await b.connect(a.listen_addresses()[0]) == a.node_id
            await a.wait_admitted(b.node_id)
            answer = await b.request(a.node_id, "echo", b"hello")
        assert answer == b.node_id.encode() + b":hello"
        assert a.counters.handshake_ok >= 1 and b.counters.handshake_ok >= 1
        assert a.counters.requests_in >= 1 and b.counters.requests_out >= 1

        # peers(): both admitted and connected; latency measured by the ping loop
        await wait_until(lambda: any(p.latency_ms is not None for p in b.peers()), timeout_s=5)
        [pa] = [p for p in b.peers() if p.node_id == a.node_id]
        assert pa.connected and pa.admitted and not pa.via_relay and pa.failure is None
        assert pa.last_seen is not None and pa.addresses
        assert a.admitted_peers() == [b.node_id]


async def test_gossip_between_members() -> None:
    async with open_meshes(2, NET, SECRET) as (a, b):
        with hang_after(15):
            await b.connect(a.listen_addresses()[0])
            async with a.subscribe(TOPIC_LATENT) as a_in, b.subscribe(TOPIC_LATENT) as b_in:
                # the gossip mesh forms on the heartbeat; publish until the first message lands
                async def publish_until_received(src, dst_in, payload: bytes) -> None:  # type: ignore[no-untyped-def]
                    got = None
                    while got is None:
                        await src.publish(TOPIC_LATENT, payload)
                        with trio.move_on_after(0.5):
                            got = await dst_in.receive()
                    assert got.data == payload and got.sender == src.node_id and got.topic == TOPIC_LATENT

                await publish_until_received(a, b_in, b"from a")
                await publish_until_received(b, a_in, b"from b")
        assert a.counters.gossip_received >= 1 and b.counters.gossip_published >= 1


async def test_oversized_gossip_is_refused_locally() -> None:
    async with open_meshes(1, NET, SECRET) as (a,):
        with pytest.raises(ValueError, match="request"):
            await a.publish(TOPIC_LATENT, b"x" * (a.config.gossip.max_message_bytes))


async def test_handler_errors_reach_the_caller() -> None:
    async with open_meshes(2, NET, SECRET) as (a, b):

        async def picky(peer: str, data: bytes) -> bytes:
            if data != b"ok":
                raise BadRequest("only 'ok' is accepted")
            return b"fine"

        async def broken(peer: str, data: bytes) -> bytes:
            raise RuntimeError("bug")

        a.register_handler("picky", picky)
        a.register_handler("broken", broken)
        with hang_after(10):
            await b.connect(a.listen_addresses()[0])
            assert await b.request(a.node_id, "picky", b"ok") == b"fine"
            with pytest.raises(RemoteError, match="only 'ok'"):
                await b.request(a.node_id, "picky", b"no")
            with pytest.raises(RemoteError, match="internal_error"):
                await b.request(a.node_id, "broken", b"")
            with pytest.raises(PeerNotAdmitted):
                await b.request("12D3KooWSAkHWvm3rGxsfP1CE6KqWpxSzeqymPq1cRdkQMzyga2C", "picky", b"ok")
        assert a.counters.garbage == 1 and a.counters.handler_errors == 1
