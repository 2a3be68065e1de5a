"""What the mesh's parts use of the Mesh that owns them (a Protocol; `host.Mesh` implements it).

Admission, rpc, message streams, gossip, discovery, peer routing, the inbound guard and the data
channel are each handed the Mesh they belong to. They import this interface, never host.py, so
imports inside mycelium.mesh go one way: host.py builds the parts, the parts know only this.
"""

from __future__ import annotations

from typing import Any, Protocol

import trio

from mycelium.identity import NodeId
from mycelium.mesh.config import MeshConfig
from mycelium.mesh.counters import MeshCounters
from mycelium.mesh.membership import Offense, PeerGate, RateLimiter
from mycelium.mesh.peers import PeerBook
from mycelium.mesh.protocols import NetworkProtocols
from mycelium.mesh.redial import RedialSchedule


class MeshContext(Protocol):
    config: MeshConfig
    node_id: NodeId
    network_id: str
    protocols: NetworkProtocols  # protocol ids and topic names of this network
    counters: MeshCounters
    gate: PeerGate  # who is blocked, and until when
    limiter: RateLimiter  # inbound requests per peer
    book: PeerBook  # every peer we know of: addresses, admission, last seen
    redial: RedialSchedule
    log: Any  # the mesh's bound structlog logger
    libp2p_host: Any  # the py-libp2p host (None until `Mesh.run` built it)
    # the sibling parts one part calls (typed loosely: they sit beside this module, not below it)
    admission: Any  # mycelium.mesh.admission.Admission
    rpc: Any  # mycelium.mesh.rpc.RequestResponse
    streams: Any  # mycelium.mesh.streams.MessageStreams

    @property
    def nursery(self) -> trio.Nursery: ...

    def spawn(self, fn: Any, *args: Any) -> None: ...

    def wall_now(self) -> float: ...

    def offend(self, node_id: NodeId, offense: Offense) -> None: ...

    async def admit_stream(self, node_id: NodeId) -> bool: ...

    async def on_admitted(self, peer_id: Any) -> None: ...

    async def request(self, node_id: NodeId, name: str, payload: bytes, timeout_s: float | None = None) -> bytes: ...

    def add_addresses(self, node_id: NodeId, addresses: list[str]) -> None: ...

    def own_addresses(self) -> list[str]: ...
