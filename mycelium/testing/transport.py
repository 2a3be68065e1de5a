"""An in-memory network implementing `mycelium.shell.transport.Transport` (memberlist's MockTransport).

    net = MemoryNetwork()
    transport = net.transport(node_id)        one per node; up while its `run` task runs
    net.partition({a}, {b, c}); net.heal()   cut and restore links (both directions)

A request runs the peer's handler in the caller's task (with the caller's timeout), so a join, a
catch-up or a workload report runs in one trio run, in unit tests, without libp2p. Every running
transport of a network is admitted by every other one unless a partition separates them. Gossip is
delivered to each subscribed peer through a bounded buffer (full: dropped and counted), as the
mesh's pubsub does. Nothing here is durable: a transport that stops forgets its subscriptions.

`MemoryNetwork(introduced_only=True)` links two nodes only once one was given the other's address
(`add_addresses(node, ["/memory/<node>"])`, or `introduce(a, b)`): what a joiner that knows only its
token's bootstrap peer sees, so address discovery (a Seed spore, Latent NODE entries) is observable.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import trio

from mycelium.identity import NodeId
from mycelium.mesh.counters import MeshCounters
from mycelium.mesh.peers import PeerInfo
from mycelium.shell.transport import Handler

SUBSCRIPTION_BUFFER = 256  # gossip messages waiting for one subscriber; beyond this dropped and counted
MAX_ADDRESS_HINTS = 16  # addresses remembered per peer (as the mesh does)


class MemoryRequestError(Exception):
    """An in-memory request failed (peer down or cut off, no such handler, the handler failed, timeout)."""


@dataclass(frozen=True, slots=True)
class MemoryMessage:
    topic: str
    sender: NodeId
    data: bytes


class MemoryNetwork:
    def __init__(self, *, introduced_only: bool = False) -> None:
        self.transports: dict[NodeId, MemoryTransport] = {}
        self._cut: set[frozenset[NodeId]] = set()
        self.introduced_only = introduced_only
        self._introduced: set[frozenset[NodeId]] = set()

    def introduce(self, a: NodeId, b: NodeId) -> None:
        """a and b know each other's address (only matters with `introduced_only`)."""
        self._introduced.add(frozenset((a, b)))

    def introduced(self, a: NodeId, b: NodeId) -> bool:
        return frozenset((a, b)) in self._introduced

    def transport(self, node_id: NodeId) -> "MemoryTransport":
        if node_id in self.transports:
            raise ValueError(f"node {node_id} already has a transport on this network")
        transport = MemoryTransport(self, node_id)
        self.transports[node_id] = transport
        return transport

    def linked(self, a: NodeId, b: NodeId) -> bool:
        ta, tb = self.transports.get(a), self.transports.get(b)
        return (a != b and ta is not None and tb is not None and ta.up and tb.up
                and frozenset((a, b)) not in self._cut
                and (not self.introduced_only or frozenset((a, b)) in self._introduced))

    def partition(self, *sides: Iterable[NodeId]) -> None:
        """Cut every link between nodes of different sides (nodes named nowhere keep their links)."""
        groups = [set(side) for side in sides]
        for i, left in enumerate(groups):
            for right in groups[i + 1:]:
                self._cut.update(frozenset((a, b)) for a in left for b in right)

    def heal(self) -> None:
        self._cut.clear()


class MemoryTransport:
    request_errors = (MemoryRequestError,)  # what the network's failures raise (Transport protocol)

    def __init__(self, network: MemoryNetwork, node_id: NodeId) -> None:
        self.network = network
        self.node_id = node_id
        self.up = False
        self.counters = MeshCounters()
        self._handlers: dict[str, Handler] = {}
        self._subscribers: dict[str, list[trio.MemorySendChannel[MemoryMessage]]] = {}
        self._hints: dict[NodeId, deque[str]] = {}

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        self.up = True
        try:
            task_status.started()
            await trio.sleep_forever()
        finally:
            self.up = False
            for channels in self._subscribers.values():
                for channel in channels:
                    channel.close()
            self._subscribers.clear()

    # ------------------------------------------------------------------------------ requests
    def register_handler(self, name: str, handler: Handler) -> str:
        self._handlers[name] = handler
        return name

    async def request(self, node_id: NodeId, name: str, payload: bytes, timeout_s: float | None = None) -> bytes:
        if not self.network.linked(self.node_id, node_id):
            self.counters.request_errors += 1
            raise MemoryRequestError(f"peer {node_id} is not reachable")
        peer = self.network.transports[node_id]
        handler = peer._handlers.get(name)
        if handler is None:
            self.counters.request_errors += 1
            raise MemoryRequestError(f"peer {node_id} serves no {name!r}")
        peer.counters.requests_in += 1
        try:
            with trio.fail_after(timeout_s if timeout_s is not None else float("inf")):
                answer = await handler(self.node_id, bytes(payload))
        except trio.TooSlowError:
            self.counters.request_errors += 1
            raise MemoryRequestError(f"request {name!r} to {node_id} timed out") from None
        except Exception as exc:  # the remote handler failed: the caller sees an error, as over the mesh
            self.counters.request_errors += 1
            peer.counters.handler_errors += 1
            raise MemoryRequestError(f"{name!r} on {node_id} failed: {exc!r}") from exc
        if not self.network.linked(self.node_id, node_id):  # cut (or stopped) while it ran: no answer
            self.counters.request_errors += 1
            raise MemoryRequestError(f"peer {node_id} went away during the request")
        self.counters.requests_out += 1
        return bytes(answer)

    def admitted_peers(self) -> list[NodeId]:
        return sorted(n for n in self.network.transports if self.network.linked(self.node_id, n))

    # ------------------------------------------------------------------------------ gossip
    async def publish(self, topic_name: str, data: bytes) -> None:
        self.counters.gossip_published += 1
        message = MemoryMessage(topic_name, self.node_id, bytes(data))
        for node_id in self.admitted_peers():
            peer = self.network.transports[node_id]
            for channel in list(peer._subscribers.get(topic_name, ())):
                try:
                    channel.send_nowait(message)
                    peer.counters.gossip_received += 1
                except trio.WouldBlock:
                    peer.counters.gossip_dropped += 1
                except trio.ClosedResourceError:
                    pass

    @asynccontextmanager
    async def subscribe(self, topic_name: str) -> AsyncIterator[trio.MemoryReceiveChannel[MemoryMessage]]:
        send, receive = trio.open_memory_channel[MemoryMessage](SUBSCRIPTION_BUFFER)
        self._subscribers.setdefault(topic_name, []).append(send)
        try:
            async with receive:
                yield receive
        finally:
            channels = self._subscribers.get(topic_name, [])
            if send in channels:
                channels.remove(send)
            send.close()

    # ------------------------------------------------------------------------------ addresses, peers
    def own_addresses(self) -> list[str]:
        return [f"/memory/{self.node_id}"]

    def listen_addresses(self) -> list[str]:
        return [f"/memory/{self.node_id}/p2p/{self.node_id}"]

    def add_addresses(self, node_id: NodeId, addresses: list[str]) -> None:
        hints = self._hints.setdefault(node_id, deque(maxlen=MAX_ADDRESS_HINTS))
        hints.extend(a for a in addresses if a not in hints)
        if any(a == f"/memory/{node_id}" or a.startswith(f"/memory/{node_id}/") for a in addresses):
            self.network.introduce(self.node_id, node_id)  # a dialable address: the mesh would connect

    def peers(self) -> list[PeerInfo]:
        rows = []
        for node_id in sorted(set(self.network.transports) - {self.node_id}):
            linked = self.network.linked(self.node_id, node_id)
            rows.append(PeerInfo(node_id=node_id, addresses=(f"/memory/{node_id}",), connected=linked,
                                 admitted=linked, latency_ms=0.0 if linked else None, last_seen=None,
                                 via_relay=False, failure=None, blocked_until=None))
        return rows
