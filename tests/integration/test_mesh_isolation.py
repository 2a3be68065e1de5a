"""Isolation: another secret or another network is refused; a plain libp2p peer gets nothing."""

from __future__ import annotations

import os

import multiaddr
import pytest
import trio
from libp2p import new_host
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.x25519 import create_new_key_pair as x25519_key_pair
from libp2p.host.ping import ID as PING_PROTOCOL
from libp2p.host.ping import perform_ping_roundtrip
from libp2p.exceptions import BaseLibp2pError
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_ID
from libp2p.stream_muxer.yamux.yamux import Yamux

from mycelium.identity import NodeKey
from mycelium.mesh.config import MeshConfig
from mycelium.mesh.framing import write_frame
from mycelium.mesh.host import AdmissionFailed, MeshError, open_mesh
from mycelium.mesh.protocols import RPC_PEERS
from mycelium.testing.mesh import wait_until
from mycelium.testing.deadlines import hang_after

NET = "ab" * 32
OTHER_NET = "cd" * 32
SECRET = b"\x07" * 32


async def test_wrong_secret_is_refused_and_blocked() -> None:
    cfg = MeshConfig.local()
    intruder_key = NodeKey.generate()
    async with open_mesh(cfg, NodeKey.generate(), NET, SECRET) as a, open_mesh(
        cfg, intruder_key, NET, b"\x08" * 32
    ) as intruder:
        a_address = a.listen_addresses()[0]
        with hang_after(10), pytest.raises(AdmissionFailed, match="bad_proof"):
            await intruder.connect(a.listen_addresses()[0])
        await wait_until(lambda: a.counters.handshake_failed >= 1, timeout_s=5)
        assert a.counters.snapshot()["handshake_failed_refused_by_peer"] == 1  # the dialler found us out first
        assert intruder.counters.snapshot()["handshake_failed_bad_proof"] == 1
        [seen] = [p for p in a.peers() if p.node_id == intruder.node_id]
        assert not seen.admitted and seen.failure == "refused_by_peer:bad_proof"
        assert seen.blocked_until is not None
        await wait_until(lambda: not seen_connected(a, intruder.node_id), timeout_s=5)
        # the intruder blocked us too, and says so instead of dialling again
        with pytest.raises(MeshError, match="blocked"):
            await intruder.connect(a.listen_addresses()[0])
        assert a.counters.blocked >= 1 and a.admitted_peers() == []

        # the same node id comes back (new process, still the wrong secret): dropped at once
        async with open_mesh(cfg, intruder_key, NET, b"\x08" * 32) as again:
            with hang_after(10), pytest.raises(AdmissionFailed, match="refused_by_peer:blocked"):
                await again.connect(a_address)
        assert a.counters.blocked_dropped >= 1


def seen_connected(mesh, node_id: str) -> bool:  # type: ignore[no-untyped-def]
    return any(p.node_id == node_id and p.connected for p in mesh.peers())


async def test_other_network_is_refused() -> None:
    cfg = MeshConfig.local()
    async with open_mesh(cfg, NodeKey.generate(), NET, SECRET) as a, open_mesh(
        cfg, NodeKey.generate(), OTHER_NET, SECRET
    ) as other:
        with hang_after(10), pytest.raises(AdmissionFailed, match="no_protocol"):
            await other.connect(a.listen_addresses()[0])
        assert other.counters.snapshot()["handshake_failed_no_protocol"] == 1
        assert a.admitted_peers() == [] and other.admitted_peers() == []


def plain_libp2p_host():  # type: ignore[no-untyped-def]
    kp = create_new_key_pair(os.urandom(32))
    noise = NoiseTransport(libp2p_keypair=kp, noise_privkey=x25519_key_pair().private_key, early_data=None)
    return new_host(key_pair=kp, sec_opt={NOISE_ID: noise}, muxer_opt={YAMUX_ID: Yamux})


async def test_plain_libp2p_peer_may_ping_but_gets_no_mycelium_service() -> None:
    cfg = MeshConfig.local()
    async with open_mesh(cfg, NodeKey.generate(), NET, SECRET) as a:
        plain = plain_libp2p_host()
        async with plain.run([multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
            a_id = ID.from_base58(a.node_id)
            with hang_after(15):
                await plain.connect(info_from_p2p_addr(multiaddr.Multiaddr(a.listen_addresses()[0])))
                stream = await plain.new_stream(a_id, [PING_PROTOCOL])
                assert await perform_ping_roundtrip(stream) >= 0
                await stream.close()
                # our rpc: the stream is reset, nothing is answered
                stream = await plain.new_stream(a_id, [a.protocols.rpc(RPC_PEERS)])
                await write_frame(stream, b"", max_size=16)
                with pytest.raises((BaseLibp2pError, EOFError)):
                    data = await stream.read(100)
                    if not data:
                        raise EOFError
            await wait_until(lambda: a.counters.unadmitted_access >= 1, timeout_s=8)
            assert a.counters.requests_in == 0
            [seen] = [p for p in a.peers() if p.node_id == plain.get_id().to_base58()]
            assert not seen.admitted
            await plain.close()


async def test_gossip_from_a_plain_libp2p_peer_never_reaches_subscribers() -> None:
    from libp2p.tools.anyio_service import background_trio_service

    from mycelium.mesh.gossip import build_pubsub
    from mycelium.mesh.protocols import TOPIC_LATENT

    cfg = MeshConfig.local()
    async with open_mesh(cfg, NodeKey.generate(), NET, SECRET) as a:
        plain = plain_libp2p_host()
        router, pubsub = build_pubsub(plain, cfg.gossip)  # speaks gossipsub, knows the topic name
        async with plain.run([multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
            async with background_trio_service(pubsub), background_trio_service(router):
                await pubsub.wait_until_ready()
                async with a.subscribe(TOPIC_LATENT) as inbox:
                    with hang_after(10):
                        await plain.connect(info_from_p2p_addr(multiaddr.Multiaddr(a.listen_addresses()[0])))
                        await pubsub.subscribe(a.protocols.topic(TOPIC_LATENT))
                        for _ in range(10):
                            await pubsub.publish(a.protocols.topic(TOPIC_LATENT), b"forged spore")
                            await trio.sleep(0.2)
                    with trio.move_on_after(0.5):
                        message = await inbox.receive()
                        raise AssertionError(f"a plain peer's gossip was delivered: {message}")
                await wait_until(lambda: a.counters.unadmitted_access >= 1, timeout_s=5)
                assert a.counters.gossip_received == 0
            await plain.close()


async def test_a_node_of_another_network_is_not_blocked_and_may_join_later() -> None:
    """A member that meets a node of another network (mDNS on a shared LAN does this) refuses it
    without blocking it, so the same node can join a minute later without waiting out a block."""
    from mycelium.mesh.host import AdmissionFailed, open_mesh

    net_a, net_b = "aa" * 32, "bb" * 32
    secret_a, secret_b = os.urandom(32), os.urandom(32)
    member_key, neighbour_key = NodeKey.generate(), NodeKey.generate()
    cfg = MeshConfig.local()
    async with open_mesh(cfg, member_key, net_a, secret_a) as member:
        async with open_mesh(cfg, neighbour_key, net_b, secret_b) as neighbour:
            with pytest.raises(AdmissionFailed):
                await member.connect(neighbour.listen_addresses()[0])
            assert not member.gate.is_blocked(neighbour.node_id, trio.current_time())
            assert neighbour.node_id not in member.admitted_peers()
        # the neighbour switches to the member's network (same key, new mesh) and joins at once
        async with open_mesh(cfg, neighbour_key, net_a, secret_a) as joined:
            with hang_after(10):
                await joined.connect(member.listen_addresses()[0])
            assert member_key.node_id in joined.admitted_peers()
