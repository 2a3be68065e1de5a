"""Discovery: five nodes bootstrapped from one address all find each other; redial after restarts."""

from __future__ import annotations

import dataclasses

import trio

from mycelium.identity import NodeKey
from mycelium.mesh.config import MeshConfig
from mycelium.mesh.host import open_mesh
from mycelium.testing.mesh import wait_until
from mycelium.testing.deadlines import hang_after

NET = "ab" * 32
SECRET = b"\x07" * 32


def full_mesh(meshes) -> bool:  # type: ignore[no-untyped-def]
    ids = {m.node_id for m in meshes}
    return all(set(m.admitted_peers()) == ids - {m.node_id} for m in meshes)


async def test_five_nodes_from_one_bootstrap_address_see_each_other() -> None:
    cfg = MeshConfig.local()
    async with open_mesh(cfg, NodeKey.generate(), NET, SECRET) as seed:
        joiner_cfg = dataclasses.replace(cfg, bootstrap=(seed.listen_addresses()[0],))
        async with open_mesh(joiner_cfg, NodeKey.generate(), NET, SECRET) as n1, open_mesh(
            joiner_cfg, NodeKey.generate(), NET, SECRET
        ) as n2, open_mesh(joiner_cfg, NodeKey.generate(), NET, SECRET) as n3, open_mesh(
            joiner_cfg, NodeKey.generate(), NET, SECRET
        ) as n4:
            meshes = [seed, n1, n2, n3, n4]
            await wait_until(lambda: full_mesh(meshes), timeout_s=20)

            # everyone learns everyone's dialable address (peer exchange), not only the seed's: a
            # peer that dialled in is known by its address only once an exchange has told it
            def all_addressed() -> bool:
                return all(p.admitted and p.connected and p.addresses for m in meshes for p in m.peers())

            await wait_until(all_addressed, timeout_s=20)
            assert full_mesh(meshes)


async def test_addresses_from_elsewhere_are_dialled_and_lost_peers_redialled() -> None:
    cfg = MeshConfig.local()
    b_key = NodeKey.generate()
    async with open_mesh(cfg, NodeKey.generate(), NET, SECRET) as a:
        async with open_mesh(cfg, b_key, NET, SECRET) as b:
            b_address = b.own_addresses()
            # e.g. learned from a Latent spore: no explicit connect()
            a.add_addresses(b.node_id, b_address)
            await wait_until(lambda: b.node_id in a.admitted_peers(), timeout_s=10)
        await wait_until(lambda: b_key.node_id not in a.admitted_peers(), timeout_s=5)
        # b restarts on the same port with the same key; a redials it with backoff
        port_cfg = dataclasses.replace(cfg, listen=tuple(b_address))
        async with open_mesh(port_cfg, b_key, NET, SECRET) as b2:
            await wait_until(lambda: b2.node_id in a.admitted_peers(), timeout_s=15)
        assert a.counters.dial_attempts >= 2


async def test_dht_finds_a_member_known_only_to_a_neighbour() -> None:
    cfg = MeshConfig.local(dht=True, peer_exchange=False)
    async with open_mesh(cfg, NodeKey.generate(), NET, SECRET) as a, open_mesh(
        cfg, NodeKey.generate(), NET, SECRET
    ) as b, open_mesh(cfg, NodeKey.generate(), NET, SECRET) as c:
        with hang_after(20):
            await a.connect(b.listen_addresses()[0])
            await c.connect(b.listen_addresses()[0])
            addrs: list[str] = []
            while not addrs:
                addrs = await a.find_peer(c.node_id, timeout_s=5)
                await trio.sleep(0.1)
            assert set(addrs) & set(c.own_addresses())
            await wait_until(lambda: c.node_id in a.admitted_peers(), timeout_s=10)  # dialled by maintenance


async def test_peers_found_by_mdns_are_dialled() -> None:
    """The mDNS bridge: py-libp2p reports a peer from zeroconf's thread; the mesh dials it.
    (mDNS itself sends multicast, which tests do not; we emit its event directly.)"""
    import threading

    import multiaddr
    from libp2p.discovery.events.peerDiscovery import peerDiscovery
    from libp2p.peer.id import ID
    from libp2p.peer.peerinfo import PeerInfo as Libp2pPeerInfo

    cfg = MeshConfig.local()
    async with open_mesh(cfg, NodeKey.generate(), NET, SECRET) as a, open_mesh(
        cfg, NodeKey.generate(), NET, SECRET
    ) as b:
        a.spawn(a.discovery.mdns_loop)
        await wait_until(lambda: len(peerDiscovery._peer_discovered_handlers) > 0, timeout_s=5)
        info = Libp2pPeerInfo(ID.from_base58(b.node_id), [multiaddr.Multiaddr(x) for x in b.own_addresses()])
        thread = threading.Thread(target=peerDiscovery.emit_peer_discovered, args=(info,))
        thread.start()
        thread.join()
        await wait_until(lambda: b.node_id in a.admitted_peers(), timeout_s=10)
    assert peerDiscovery._peer_discovered_handlers == []  # unregistered when the mesh stopped
