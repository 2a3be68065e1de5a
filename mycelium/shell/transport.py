"""The transport interface: everything a network session asks of the network, and nothing more.

memberlist's `Transport` is the model (STYLE §14): the same session code runs over the libp2p mesh
(`mycelium.mesh.host.Mesh`, which satisfies this protocol structurally) and over an in-memory
network in tests and the simulator (`mycelium.testing.transport.MemoryTransport`).

    await nursery.start(transport.run)                 up once it returns; down when cancelled
    transport.register_handler(name, async fn(peer, bytes) -> bytes)
    await transport.request(peer, name, payload, timeout_s) -> bytes   raises on any failure
    transport.admitted_peers() -> [node_id]            peers that passed the membership proof
    await transport.publish(topic, small_bytes)        best effort, to every subscribed peer
    async with transport.subscribe(topic) as messages: async for m in messages: m.sender, m.data
    transport.own_addresses() / listen_addresses()     what this node announces / listens on
    transport.add_addresses(node_id, [address, …])     hints learned from spores
    transport.peers() -> [PeerInfo]; transport.counters.snapshot() -> {event: count}

No libp2p here: a session built on an in-memory transport never imports it.
"""

from __future__ import annotations

from typing import Any, AsyncContextManager, AsyncIterator, Awaitable, Callable, Protocol

from mycelium.identity import NodeId

Handler = Callable[[NodeId, bytes], Awaitable[bytes]]


class Counters(Protocol):
    def snapshot(self) -> dict[str, int]: ...


class Transport(Protocol):
    counters: Counters
    # what request/send_messages/publish raise when the network fails (refused, timed out, reset,
    # peer gone): expected, counted and logged at debug. Anything else they raise is our bug.
    request_errors: tuple[type[Exception], ...]

    async def run(self, *, task_status: Any = ...) -> None: ...

    def register_handler(self, name: str, handler: Handler) -> str: ...

    async def request(self, node_id: NodeId, name: str, payload: bytes, timeout_s: float | None = None) -> bytes: ...

    def admitted_peers(self) -> list[NodeId]: ...

    async def publish(self, topic_name: str, data: bytes) -> None: ...

    def subscribe(self, topic_name: str) -> AsyncContextManager[AsyncIterator[Any]]: ...

    def own_addresses(self) -> list[str]: ...

    def listen_addresses(self) -> list[str]: ...

    def add_addresses(self, node_id: NodeId, addresses: list[str]) -> None: ...

    def peers(self) -> list[Any]: ...
