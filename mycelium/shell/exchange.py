"""Running sans-IO cores over the mesh.

`PeerQueues` carries a protocol's messages to peers as rpc requests, through one bounded queue and
sender task per peer, so a slow or dead peer never stalls the protocol loop (a full queue drops and
counts; the protocols resend what matters). `CoreShell` runs one core (mycelium.shell.effects.Core): its
Send effects go through PeerQueues, Broadcast through a gossip topic, SetTimer through a timer
table; inbound rpc requests and gossip messages are queued to its loop. Nothing here knows what the
messages mean.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any, Callable

import trio

from mycelium.shell.effects import Broadcast, Send, SetTimer
from mycelium.identity import NodeId
from mycelium.observability.logs import get_logger
from mycelium.mesh.host import Mesh

log = get_logger("mycelium.shell.exchange")

QUEUE_PER_PEER = 256  # messages waiting for one peer; beyond this new ones are dropped
INBOX = 1024  # inbound messages waiting for the core
SEND_TIMEOUT_S = 5.0


class PeerQueues:
    def __init__(self, mesh: Mesh, nursery: trio.Nursery, rpc_name: str) -> None:
        self.mesh = mesh
        self.rpc_name = rpc_name
        self._nursery = nursery
        self._queues: dict[NodeId, trio.MemorySendChannel] = {}
        self.dropped: Counter[str] = Counter()
        self.on_answer: Callable[[NodeId, bytes], None] | None = None  # non-empty rpc answers go here

    async def send(self, to: NodeId, data: bytes) -> None:
        self.send_nowait(to, data)

    async def broadcast(self, data: bytes) -> None:
        for peer in self.mesh.admitted_peers():
            self.send_nowait(peer, data)

    def send_nowait(self, peer: NodeId, data: bytes) -> None:
        queue = self._queues.get(peer)
        if queue is None:
            queue, receive = trio.open_memory_channel[bytes](QUEUE_PER_PEER)
            self._queues[peer] = queue
            self._nursery.start_soon(self._sender, peer, receive)
        try:
            queue.send_nowait(data)
        except trio.WouldBlock:
            self.dropped["queue_full"] += 1

    async def _sender(self, peer: NodeId, receive: trio.MemoryReceiveChannel) -> None:
        async for data in receive:
            try:
                answer = await self.mesh.request(peer, self.rpc_name, data, timeout_s=SEND_TIMEOUT_S)
            except Exception as exc:  # any mesh failure (refused, timed out, reset): count it, keep the sender
                self.dropped["send_failed"] += 1
                log.debug("send failed", rpc=self.rpc_name, peer=peer, error=repr(exc))
                continue
            if answer and self.on_answer is not None:
                self.on_answer(peer, answer)


class CoreShell:
    """One sans-IO core driven by trio over the mesh."""

    def __init__(self, core: Any, mesh: Mesh, nursery: trio.Nursery, *, rpc_name: str, topic: str | None,
                 clock: Callable[[], float] | None = None) -> None:
        self.core = core
        # The core's clock: trio's by default; wall-clock seconds (time.time) for cores that compare
        # `now` with timestamps signed by other nodes. Timers are set in this clock.
        self._clock = clock or trio.current_time
        self.mesh = mesh
        self.topic = topic
        self.queues = PeerQueues(mesh, nursery, rpc_name)
        self.queues.on_answer = self.deliver
        self._timers: dict[str, float] = {}
        self._send, self._inbox = trio.open_memory_channel[tuple[NodeId, Any]](INBOX)
        self.dropped: Counter[str] = Counter()
        self.outputs: list[Any] = []  # effects the shell does not know, for the owner (bounded by the owner)
        self.on_output: Callable[[Any], None] | None = None

    def deliver(self, sender: NodeId, message: Any) -> None:
        try:
            self._send.send_nowait((sender, message))
        except trio.WouldBlock:
            self.dropped["inbox_full"] += 1

    async def handle_rpc(self, peer: NodeId, data: bytes) -> bytes:
        self.deliver(peer, data)
        return b""

    def call(self, fn: Callable[[float], list[Any]]) -> None:
        """Run a local action on the core (e.g. `lambda now: core.publish(entry, now)`) from the loop."""
        self.deliver("", _Call(fn))

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            if self.topic is not None:
                await nursery.start(self._listen_gossip)
            await self._carry_out(self.core.on_tick(self._clock()))
            task_status.started()
            while True:
                due = min(self._timers.values(), default=math.inf)
                deadline = trio.current_time() + (due - self._clock()) if due != math.inf else math.inf
                item = None
                with trio.move_on_at(deadline):
                    item = await self._inbox.receive()
                now = self._clock()
                if item is None:
                    for name in [n for n, at in self._timers.items() if at <= now]:
                        del self._timers[name]
                    effects = self.core.on_tick(now)
                elif isinstance(item[1], _Call):
                    effects = item[1].fn(now)
                else:
                    effects = self.core.on_message(item[0], item[1], now)
                await self._carry_out(effects)

    async def _listen_gossip(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        async with self.mesh.subscribe(self.topic) as messages:
            task_status.started()
            async for msg in messages:
                self.deliver(msg.sender, msg.data)

    async def _carry_out(self, effects: list[Any]) -> None:
        for effect in effects:
            if isinstance(effect, Send):
                self.queues.send_nowait(effect.to, _bytes(effect.message))
            elif isinstance(effect, Broadcast):
                data = _bytes(effect.message)
                if self.topic is not None:
                    try:
                        await self.mesh.publish(self.topic, data)
                    except Exception as exc:  # gossip is best effort; anti-entropy repairs what is lost
                        self.dropped["publish_failed"] += 1
                        log.debug("publish failed", topic=self.topic, error=repr(exc))
                else:
                    await self.queues.broadcast(data)
            elif isinstance(effect, SetTimer):
                self._timers[effect.name] = effect.at
            elif self.on_output is not None:
                self.on_output(effect)


class _Call:
    __slots__ = ("fn",)

    def __init__(self, fn: Callable[[float], list[Any]]) -> None:
        self.fn = fn


def _bytes(message: Any) -> bytes:
    if isinstance(message, (bytes, bytearray)):
        return bytes(message)
    from mycelium.encoding import canonical

    return canonical(message.to_wire() if hasattr(message, "to_wire") else message)
