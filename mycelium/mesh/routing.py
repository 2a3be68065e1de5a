"""Peer routing over py-libp2p's Kademlia DHT, for networks too large for peer exchange alone.

py-libp2p 0.8.1 speaks the DHT on the fixed id /ipfs/kad/1.0.0 (its `protocol_prefix` only changes
validation, not the protocol id), so the id cannot carry our network id. Isolation holds anyway:
the inbound handler is gated by admission (non-members are reset, counted and penalised) and only
admitted peers are put in the routing table, so DHT answers name members only. Values and provider
records are not used.
"""

from __future__ import annotations

import mycelium.mesh.libp2p_setup  # noqa: F401,I001 - before libp2p: fixes its logging
from typing import TYPE_CHECKING, Any

import trio
from libp2p.exceptions import BaseLibp2pError
from libp2p.kad_dht.common import PROTOCOL_ID as KAD_PROTOCOL_ID
from libp2p.kad_dht.kad_dht import DHTMode, KadDHT
from libp2p.peer.id import ID

from mycelium.identity import NodeId

if TYPE_CHECKING:
    from mycelium.mesh.context import MeshContext


class PeerRouting:
    def __init__(self, mesh: MeshContext) -> None:
        self._mesh = mesh
        host = mesh.libp2p_host
        self.dht = KadDHT(
            host,
            DHTMode.SERVER,
            enable_random_walk=False,  # random walks dial strangers; we only add admitted members
            enable_providers=False,
            enable_values=False,
            strict_validation=False,
            persist_dir=None,
        )
        host.set_stream_handler(KAD_PROTOCOL_ID, self._gated_stream_handler)

    async def _gated_stream_handler(self, stream: Any) -> None:
        node = stream.muxed_conn.peer_id.to_base58()
        if not await self._mesh.admit_stream(node):
            try:
                await stream.reset()
            except BaseLibp2pError:
                pass  # already gone; refused either way
            return
        await self.dht.handle_stream(stream)

    async def add_member(self, peer_id: ID) -> None:
        """Put an admitted peer in the routing table (it serves the DHT: it is a mycelium node)."""
        try:
            await self.dht.add_peer(peer_id, skip_server_mode_check=True)
        except BaseLibp2pError as exc:
            self._mesh.log.debug("mesh.dht.add_failed", peer=peer_id.to_base58(), error=str(exc))

    async def find_peer(self, node_id: NodeId, timeout_s: float) -> list[str]:
        """Addresses of `node_id` found through the DHT (empty if not found in time)."""
        with trio.move_on_after(timeout_s):
            try:
                info = await self.dht.find_peer(ID.from_base58(node_id))
            except (BaseLibp2pError, ValueError) as exc:
                self._mesh.log.debug("mesh.dht.find_failed", peer=node_id, error=str(exc))
                return []
            if info is None:
                return []
            suffix = f"/p2p/{node_id}"
            return [str(a)[: -len(suffix)] if str(a).endswith(suffix) else str(a) for a in info.addrs]
        return []
