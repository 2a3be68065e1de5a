"""An in-memory `ChannelProvider`: several named nodes exchanging whole messages in one trio process.

Behaves like the mesh's TLS data channel where a test can tell: whole messages in order, bounded
buffers (back-pressure), ChannelRefused for a node outside this network or serving no such purpose,
ChannelClosed once either end closes or `kill(node)` makes a node die, and an inbound channel closed
when its handler returns. Two `MemoryChannelNetwork`s are two separate networks.
"""

from __future__ import annotations

from collections.abc import Callable

import trio

from mycelium.mesh.channel import (
    MAX_MESSAGE_BYTES,
    ChannelClosed,
    ChannelError,
    ChannelHandler,
    ChannelRefused,
)


class MemoryChannel:
    def __init__(self, peer: str, send: trio.MemorySendChannel[bytes], recv: trio.MemoryReceiveChannel[bytes],
                 forget: "Callable[[MemoryChannel], None] | None" = None) -> None:
        self.peer = peer
        self._send = send
        self._recv = recv
        self._forget = forget

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
        if self._forget is not None:
            self._forget(self)


class MemoryChannelNetwork:
    """`network.provider(node_id)` is that node's ChannelProvider; `kill(node_id)` makes it unreachable
    and breaks every channel it has open."""

    def __init__(self, nursery: trio.Nursery, buffer: int = 16) -> None:
        self._nursery = nursery
        self._buffer = buffer
        self._handlers: dict[str, dict[str, ChannelHandler]] = {}
        self._dead: set[str] = set()
        self._ends: dict[str, set[MemoryChannel]] = {}  # node → its ends of open channels

    def provider(self, node_id: str) -> "MemoryProvider":
        self._handlers.setdefault(node_id, {})
        self._dead.discard(node_id)
        return MemoryProvider(self, node_id)

    def kill(self, node_id: str) -> None:
        self._dead.add(node_id)
        for end in self._ends.pop(node_id, set()):
            end._send.close()
            end._recv.close()

    async def _open(self, src: str, dst: str, purpose: str) -> MemoryChannel:
        if src not in self._handlers:
            raise ChannelRefused(f"{src} is not a member of this network")
        if src in self._dead or dst in self._dead or dst not in self._handlers:
            raise ChannelRefused(f"{dst} is not reachable")
        handler = self._handlers[dst].get(purpose)
        if handler is None:
            raise ChannelRefused(f"{dst} serves no {purpose!r} channel")
        a_send, b_recv = trio.open_memory_channel[bytes](self._buffer)
        b_send, a_recv = trio.open_memory_channel[bytes](self._buffer)
        theirs = MemoryChannel(src, b_send, b_recv, lambda end: self._ends.get(dst, set()).discard(end))
        ours = MemoryChannel(dst, a_send, a_recv, lambda end: self._ends.get(src, set()).discard(end))
        self._ends.setdefault(dst, set()).add(theirs)
        self._ends.setdefault(src, set()).add(ours)
        self._nursery.start_soon(self._serve, dst, handler, theirs)
        return ours

    async def _serve(self, node: str, handler: ChannelHandler, channel: MemoryChannel) -> None:
        try:
            await handler(channel.peer, channel)
        except ChannelError:
            pass  # the channel ended under the handler: its normal way out
        finally:
            await channel.aclose()


class MemoryProvider:
    def __init__(self, network: MemoryChannelNetwork, node_id: str) -> None:
        self._network = network
        self.node_id = node_id

    async def open_channel(self, node_id: str, purpose: str, *, stripes: int | None = None) -> MemoryChannel:
        """`stripes` is accepted for the mesh's signature and has no meaning in memory."""
        return await self._network._open(self.node_id, node_id, purpose)

    def serve_channels(self, purpose: str, handler: ChannelHandler) -> None:
        self._network._handlers[self.node_id][purpose] = handler
