"""Storage requests to other devices over the data channel: one reused channel per peer (trio shell).

`ask(peer, request)` sends one request and returns the answer map, or raises `PeerUnavailable`
(refused, closed, timed out, or an answer that breaks the protocol). A channel is used by one
request at a time (the lock), and dropped after any failure so the next request opens a fresh one.
Nothing waits forever: every exchange runs under `timeout_s`.
"""

from __future__ import annotations

from typing import Any

import trio

from mycelium.mesh.channel import ChannelError, ChannelProvider, DataChannel
from mycelium.storage import wire


class PeerUnavailable(Exception):
    """A device did not answer a storage request (dead, partitioned, refusing, or broken)."""


class StorageLinks:
    def __init__(self, provider: ChannelProvider, *, timeout_s: float = 10.0, max_peers: int = 256) -> None:
        self._provider = provider
        self.timeout_s = timeout_s  # one request + answer; a 1 MiB share over a slow link must fit
        self.max_peers = max_peers  # channels kept open; beyond it the least recently opened closes
        self._channels: dict[str, DataChannel] = {}
        self._locks: dict[str, trio.Lock] = {}
        self.failures = 0

    async def ask(self, peer: str, request: dict[str, Any], *, timeout_s: float | None = None) -> dict[str, Any]:
        lock = self._locks.setdefault(peer, trio.Lock())
        async with lock:
            with trio.move_on_after(self.timeout_s if timeout_s is None else timeout_s) as scope:
                try:
                    channel = self._channels.get(peer)
                    if channel is None:
                        channel = await self._provider.open_channel(peer, wire.PURPOSE)
                        await self._remember(peer, channel)
                    await channel.send(wire.pack(request))
                    return wire.unpack_answer(await channel.receive())
                except (ChannelError, wire.WireError) as exc:
                    await self._drop(peer)
                    self.failures += 1
                    raise PeerUnavailable(f"{peer}: {exc}") from exc
            assert scope.cancelled_caught
            await self._drop(peer)
            self.failures += 1
            raise PeerUnavailable(f"{peer}: no answer within {self.timeout_s} s")

    async def _remember(self, peer: str, channel: DataChannel) -> None:
        self._channels[peer] = channel
        while len(self._channels) > self.max_peers:
            oldest = next(iter(self._channels))
            await self._drop(oldest)

    async def _drop(self, peer: str) -> None:
        channel = self._channels.pop(peer, None)
        if channel is not None:
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                try:
                    await channel.aclose()
                except ChannelError:
                    pass  # already broken: closing is best effort

    async def aclose(self) -> None:
        for peer in list(self._channels):
            await self._drop(peer)
