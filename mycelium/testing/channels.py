"""An in-memory `ChannelProvider`: several named nodes exchanging whole messages in one trio process."""

from __future__ import annotations

import trio

from mycelium.mesh.channel import (
    MAX_MESSAGE_BYTES,
    ChannelClosed,
    ChannelError,
    ChannelHandler,
    ChannelRefused,
)


class MemoryChannel:
    def __init__(self, peer: str, send: trio.MemorySendChannel[bytes], recv: trio.MemoryReceiveChannel[bytes]) -> None:
        self.peer = peer
        self._send = send
        self._recv = recv

    async def send(self, message: bytes) -> None:
        if len(message) > MAX_MESSAGE_BYTES:
            raise ChannelError(f"message of {len(message)} bytes exceeds {MAX_MESSAGE_BYTES}")
        try:
            await self._send.send(bytes(message))
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise ChannelClosed(f"channel to {self.peer} closed") from exc

    async def receive(self) -> bytes:
        try:
            return await self._recv.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError, trio.BrokenResourceError) as exc:
            raise ChannelClosed(f"channel from {self.peer} closed") from exc

    async def aclose(self) -> None:
        await self._send.aclose()
        await self._recv.aclose()


class MemoryChannelNetwork:
    """`network.provider(node_id)` is that node's ChannelProvider; `kill(node_id)` makes it unreachable."""

    def __init__(self, nursery: trio.Nursery, buffer: int = 16) -> None:
        self._nursery = nursery
        self._buffer = buffer
        self._handlers: dict[str, dict[str, ChannelHandler]] = {}
        self._dead: set[str] = set()

    def provider(self, node_id: str) -> "MemoryProvider":
        self._handlers.setdefault(node_id, {})
        self._dead.discard(node_id)
        return MemoryProvider(self, node_id)

    def kill(self, node_id: str) -> None:
        self._dead.add(node_id)

    async def _open(self, src: str, dst: str, purpose: str) -> MemoryChannel:
        if src in self._dead or dst in self._dead or dst not in self._handlers:
            raise ChannelRefused(f"{dst} is not reachable")
        handler = self._handlers[dst].get(purpose)
        if handler is None:
            raise ChannelRefused(f"{dst} serves no {purpose!r} channel")
        a_send, b_recv = trio.open_memory_channel[bytes](self._buffer)
        b_send, a_recv = trio.open_memory_channel[bytes](self._buffer)
        self._nursery.start_soon(handler, src, MemoryChannel(src, b_send, b_recv))
        return MemoryChannel(dst, a_send, a_recv)


class MemoryProvider:
    def __init__(self, network: MemoryChannelNetwork, node_id: str) -> None:
        self._network = network
        self.node_id = node_id

    async def open_channel(self, node_id: str, purpose: str) -> MemoryChannel:
        return await self._network._open(self.node_id, node_id, purpose)

    def serve_channels(self, purpose: str, handler: ChannelHandler) -> None:
        self._network._handlers[self.node_id][purpose] = handler
