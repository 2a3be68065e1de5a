"""Inbound connection churn over a daemon's lifetime: slots come back, stalled peers are closed,
floods from one address are refused — and a fresh member still joins afterwards.

The churning peer is a plain py-libp2p host (its own key, no mycelium code): what a scanner, a
neighbour's node or a misbehaving app on the LAN looks like."""

from __future__ import annotations

import os

import multiaddr
import trio
from libp2p import new_host
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.x25519 import create_new_key_pair as x25519_key_pair
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_ID
from libp2p.stream_muxer.yamux.yamux import Yamux

from mycelium.identity import NodeKey
from mycelium.mesh.config import MeshConfig
from mycelium.mesh.host import open_mesh
from mycelium.mesh.membership import RateLimitConfig
from mycelium.testing.mesh import wait_until
from mycelium.testing.deadlines import hang_after

NET = "cd" * 32
SECRET = b"\x09" * 32


def plain_libp2p_host():  # type: ignore[no-untyped-def]
    kp = create_new_key_pair(os.urandom(32))
    noise = NoiseTransport(libp2p_keypair=kp, noise_privkey=x25519_key_pair().private_key, early_data=None)
    host = new_host(key_pair=kp, sec_opt={NOISE_ID: noise}, muxer_opt={YAMUX_ID: Yamux})
    cache = getattr(host.get_network(), "_negative_peer_cache", None)
    if cache is not None:
        cache._ttl = 0.0  # the churner retries at once after a refused dial
    host.get_network().auto_connector.start = _no_auto_connect  # dials only what the test dials
    return host


async def _no_auto_connect() -> None:
    await trio.lowlevel.checkpoint()


async def test_200_inbound_cycles_by_a_non_member_then_a_fresh_member_is_admitted() -> None:
    # 8 slots: the old limiter (never given back) refused everything after the 8th connection
    cfg = MeshConfig.local(
        max_connections=8, inbound_connection_rate=RateLimitConfig(rate_per_s=1000, burst=1000)
    )
    async with open_mesh(cfg, NodeKey.generate(), NET, SECRET) as member:
        target = info_from_p2p_addr(multiaddr.Multiaddr(member.listen_addresses()[0]))

        async def churn(cycles: int) -> None:
            plain = plain_libp2p_host()  # one non-member, its own key, connecting and hanging up
            async with plain.run([multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
                for _ in range(cycles):
                    await plain.connect(target)
                    await plain.disconnect(target.peer_id)
                await plain.close()

        with hang_after(240):
            async with trio.open_nursery() as nursery:
                for _ in range(4):  # 4 × 50 = 200 cycles, 4 at a time (of 8 slots)
                    nursery.start_soon(churn, 50)
            await wait_until(lambda: member.inbound.in_use == 0, timeout_s=60)
        counters = member.counters
        assert counters.inbound_accepted >= 200
        assert counters.inbound_released == counters.inbound_accepted
        assert counters.inbound_refused_full == 0
        async with open_mesh(cfg, NodeKey.generate(), NET, SECRET) as fresh:
            with hang_after(30):
                await fresh.connect(member.listen_addresses()[0])
                await member.wait_admitted(fresh.node_id)
        snapshot = counters.snapshot()
        for name in ("inbound_accepted", "inbound_released", "inbound_refused_full", "inbound_rate_limited"):
            assert name in snapshot  # exported to /metrics with the other mesh counters


async def test_a_peer_that_never_starts_the_handshake_is_disconnected() -> None:
    cfg = MeshConfig.local(handshake_timeout_s=1.0)
    async with open_mesh(cfg, NodeKey.generate(), NET, SECRET) as member:
        plain = plain_libp2p_host()
        member_id = ID.from_base58(member.node_id)
        async with plain.run([multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
            with hang_after(30):
                await plain.connect(info_from_p2p_addr(multiaddr.Multiaddr(member.listen_addresses()[0])))
                await wait_until(lambda: member.counters.handshake_deadline_closed >= 1, timeout_s=20)
                await wait_until(lambda: not plain.get_network().get_connections(member_id), timeout_s=20)
                await wait_until(lambda: member.inbound.in_use == 0, timeout_s=20)
            await plain.close()


async def test_a_connection_flood_from_one_address_is_refused_and_counted() -> None:
    cfg = MeshConfig.local(inbound_connection_rate=RateLimitConfig(rate_per_s=0.5, burst=3))
    async with open_mesh(cfg, NodeKey.generate(), NET, SECRET) as member:
        target = info_from_p2p_addr(multiaddr.Multiaddr(member.listen_addresses()[0]))
        plain = plain_libp2p_host()
        refused = 0
        async with plain.run([multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
            with hang_after(60):
                for _ in range(8):
                    try:
                        await plain.connect(target)
                        await plain.disconnect(target.peer_id)
                    except Exception:  # noqa: BLE001 - libp2p's dial errors vary; refusal is what we count
                        refused += 1
            await plain.close()
        assert member.counters.inbound_rate_limited >= 1
        assert refused >= 1
        assert member.counters.inbound_accepted < 8  # the burst of 3 plus what 0.5/s refilled meanwhile
