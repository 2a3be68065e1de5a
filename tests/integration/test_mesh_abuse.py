"""Bad input: garbage on a mycelium protocol, request floods — counted, penalised, blocked, while
other peers are still served."""

from __future__ import annotations

import multiaddr
import pytest
import trio
from libp2p.exceptions import BaseLibp2pError
from libp2p.peer.id import ID

from mycelium.mesh.config import MeshConfig
from mycelium.mesh.membership import GateConfig, RateLimitConfig
from mycelium.mesh.rpc import RequestError, RequestTimeout
from mycelium.testing.mesh import open_meshes, wait_until
from mycelium.testing.deadlines import hang_after, stretched

NET = "ab" * 32
SECRET = b"\x07" * 32


async def echo(peer: str, data: bytes) -> bytes:
    return data


async def test_garbage_frames_are_counted_and_the_sender_blocked() -> None:
    async with open_meshes(2, NET, SECRET) as (a, b):
        a.register_handler("echo", echo)
        with hang_after(15):
            await b.connect(a.listen_addresses()[0])
            await a.wait_admitted(b.node_id)
            protocol = a.protocols.rpc("echo")
            for _ in range(3):  # 3 × 4 strikes ≥ the limit of 10
                stream = await b.libp2p_host.new_stream(ID.from_base58(a.node_id), [protocol])
                await stream.write((50_000_000).to_bytes(4, "big"))  # announces a 50 MB frame
                await stream.close()
                await trio.sleep(0.05)
            await wait_until(lambda: a.counters.blocked >= 1, timeout_s=5)
        assert a.counters.garbage >= 3
        await wait_until(lambda: b.node_id not in a.admitted_peers(), timeout_s=5)
        [seen] = [p for p in a.peers() if p.node_id == b.node_id]
        assert seen.blocked_until is not None


async def test_flooding_peer_is_rate_limited_then_blocked_while_another_is_served() -> None:
    cfg = MeshConfig.local(
        # far below what four flooding tasks manage even on a loaded box (at 20/s a starved flooder
        # once stayed under the limit), far above the polite peer's pace
        inbound_rate=RateLimitConfig(rate_per_s=4, burst=8),
        gate=GateConfig(strike_limit=10, rate_limited_strikes=1, first_block_s=30),
    )
    async with open_meshes(3, NET, SECRET, config=cfg) as (server, flooder, honest):
        server.register_handler("echo", echo)
        with hang_after(30):
            await flooder.connect(server.listen_addresses()[0])
            await honest.connect(server.listen_addresses()[0])
            refused = 0

            async def flood() -> None:
                nonlocal refused
                for _ in range(80):
                    try:
                        await flooder.request(server.node_id, "echo", b"spam", timeout_s=5)
                    except RequestError:
                        refused += 1

            async def polite() -> None:
                for i in range(10):
                    assert await honest.request(server.node_id, "echo", b"%d" % i, timeout_s=stretched(5)) == b"%d" % i
                    await trio.sleep(0.5)

            async with trio.open_nursery() as nursery:
                for _ in range(4):
                    nursery.start_soon(flood)
                nursery.start_soon(polite)
        assert refused > 0
        assert server.counters.rate_limited >= 10 and server.counters.blocked >= 1
        assert server.gate.is_blocked(flooder.node_id, trio.current_time())
        assert honest.node_id in server.admitted_peers()
        assert flooder.node_id not in server.admitted_peers()
        # the honest peer is still served after the flood
        assert await honest.request(server.node_id, "echo", b"still here", timeout_s=5) == b"still here"


async def test_request_timeout_is_reported() -> None:
    async with open_meshes(2, NET, SECRET) as (a, b):

        async def slow(peer: str, data: bytes) -> bytes:
            await trio.sleep(10)
            return b""

        a.register_handler("slow", slow)
        with hang_after(15):
            await b.connect(a.listen_addresses()[0])
            with pytest.raises(RequestTimeout):
                await b.request(a.node_id, "slow", b"", timeout_s=0.5)


async def test_stalled_and_piled_up_handshakes_get_the_peer_blocked() -> None:
    async with open_meshes(2, NET, SECRET, handshake_timeout_s=0.5) as (a, b):
        with hang_after(15):
            await b.connect(a.listen_addresses()[0])
            # b (a member!) now opens membership streams and never says hello on them
            streams = []
            a_id = ID.from_base58(a.node_id)
            for _ in range(5):
                # an attacker redials as soon as a drops it: hand libp2p a's address each time
                # (the mesh clears it from libp2p's peerstore on disconnect, so a plain mesh would not)
                b.libp2p_host.get_peerstore().add_addrs(a_id, [multiaddr.Multiaddr(a.own_addresses()[0])], 60)
                try:
                    streams.append(
                        await b.libp2p_host.new_stream(ID.from_base58(a.node_id), [a.protocols.membership])
                    )
                except BaseLibp2pError:
                    pass  # a resets the ones beyond two at once, or has already disconnected b
            await wait_until(lambda: a.counters.blocked >= 1, timeout_s=5)
        assert a.counters.garbage >= 3
        assert a.gate.is_blocked(b.node_id, trio.current_time())
        assert b.node_id not in a.admitted_peers()
        for stream in streams:
            try:
                await stream.reset()
            except Exception:  # noqa: BLE001 - already reset by a
                pass
