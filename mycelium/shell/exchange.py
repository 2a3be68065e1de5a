"""Running sans-IO cores over the mesh (any `mycelium.shell.transport.Transport`).

`PeerQueues` carries a protocol's messages to peers as rpc requests, through one bounded queue and
sender task per peer, so a slow or dead peer never stalls the protocol loop (a full queue drops and
counts; the protocols resend what matters). `CoreShell` runs one core (mycelium.shell.effects.Core): its
Send effects go through PeerQueues, Broadcast through a gossip topic, SetTimer through a timer
table (the one interpreter, mycelium.shell.loop / shell.interpreter); inbound rpc requests and gossip
messages are queued to its loop. Nothing here knows what the messages mean.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Callable, Iterable, Mapping

import trio

from mycelium.identity import NodeId
from mycelium.observability.logs import get_logger
from mycelium.shell.effects import Send
from mycelium.shell.loop import CoreLoop
from mycelium.shell.transport import Transport

log = get_logger("mycelium.exchange")

QUEUE_PER_PEER = 256  # messages waiting for one peer; beyond this new ones are dropped
STREAM_BATCH = 64  # messages written to a peer's stream in one write
PUBLISH_QUEUE = 256  # gossip messages waiting to be published; beyond this new ones are dropped
SEND_TIMEOUT_S = 5.0
IDLE_RETIRE_S = 60.0  # a peer's queue and sender task end after this long with nothing to send
MAX_PEER_QUEUES = 1024  # peers with a live queue at once; messages to further peers are dropped


class PeerQueues:
    """`streamed=True`: messages go on the transport's long-lived message stream `rpc_name`
    (`send_messages`, everything queued for a peer in one write, no answers) when it has one; a peer
    that takes no such stream, or a transport without them, gets one rpc request per message."""

    def __init__(self, mesh: Transport, nursery: trio.Nursery, rpc_name: str, *,
                 timeout_s: float = SEND_TIMEOUT_S, streamed: bool = False,
                 recipients: Callable[[], Iterable[NodeId]] | None = None, coalesce: bool = False) -> None:
        """`recipients`: who a broadcast goes to (default: every admitted peer). `coalesce`: a message
        still waiting in a peer's queue is not queued again (consensus rebroadcasts its votes every
        few seconds: when a loaded peer takes fewer than that, each rebroadcast stacked another copy
        of every vote, the queue filled with copies and fresh votes waited behind them for minutes)."""
        self.mesh = mesh
        self._coalesce = coalesce
        self._waiting: dict[NodeId, set[bytes]] = {}  # coalesce: what each peer's queue holds now
        self.coalesced = 0  # messages not queued because the same one was still waiting
        self._recipients = recipients or mesh.admitted_peers
        self.rpc_name = rpc_name
        self.timeout_s = timeout_s
        self._streamed = streamed and hasattr(mesh, "send_messages")
        self._rpc_only: set[NodeId] = set()  # peers that refused the stream (an older version)
        self._nursery = nursery
        self._queues: dict[NodeId, trio.MemorySendChannel] = {}
        self.dropped: Counter[str] = Counter()
        self.retired = 0  # queues ended after IDLE_RETIRE_S without traffic
        self.on_answer: Callable[[NodeId, bytes], None] | None = None  # non-empty rpc answers go here

    async def send(self, to: NodeId, data: bytes) -> None:
        self.send_nowait(to, data)

    async def broadcast(self, data: bytes) -> None:
        self.broadcast_nowait(data)

    def broadcast_nowait(self, data: bytes) -> None:
        for peer in self._recipients():
            self.send_nowait(peer, data)

    def send_nowait(self, peer: NodeId, data: bytes) -> None:
        queue = self._queues.get(peer)
        if queue is None:
            if len(self._queues) >= MAX_PEER_QUEUES:
                self.dropped["too_many_peers"] += 1
                return
            queue, receive = trio.open_memory_channel[bytes](QUEUE_PER_PEER)
            self._queues[peer] = queue
            self._waiting[peer] = set()
            self._nursery.start_soon(self._sender, peer, queue, receive)
        waiting = self._waiting[peer]
        if self._coalesce and data in waiting:
            self.coalesced += 1
            return
        try:
            queue.send_nowait(data)
        except trio.WouldBlock:
            self.dropped["queue_full"] += 1
            return
        if self._coalesce:
            waiting.add(data)

    @property
    def live_queues(self) -> int:
        return len(self._queues)

    async def _sender(self, peer: NodeId, queue: trio.MemorySendChannel, receive: trio.MemoryReceiveChannel) -> None:
        while True:
            with trio.move_on_after(IDLE_RETIRE_S) as idle:
                data = await receive.receive()
            if idle.cancelled_caught:
                # nothing for a while (the peer left, or is quiet): retire; no checkpoint since the
                # queue was seen empty, so nothing can have been queued in between
                if self._queues.get(peer) is queue:
                    del self._queues[peer]
                    del self._waiting[peer]
                    # forgotten with the queue (bounded by the live queues, not by every peer ever
                    # seen); a peer back after a while is offered the stream again: it may have upgraded
                    self._rpc_only.discard(peer)
                self.retired += 1
                return
            waiting = self._waiting.get(peer, set())
            waiting.discard(data)
            if self._streamed and peer not in self._rpc_only:
                batch = [data]
                while len(batch) < STREAM_BATCH:
                    try:
                        batch.append(receive.receive_nowait())
                    except trio.WouldBlock:
                        break
                    waiting.discard(batch[-1])
                try:
                    await self.mesh.send_messages(peer, self.rpc_name, batch, self.timeout_s)  # type: ignore[attr-defined]
                    continue
                except self.mesh.request_errors as exc:  # the network failed: count it, keep the sender
                    if "takes no" in str(exc):  # RequestRefused: no such stream there; rpc from now on
                        self._rpc_only.add(peer)
                    self.dropped["send_failed"] += len(batch)
                    log.debug("stream send failed", stream=self.rpc_name, peer=peer, error=repr(exc))
                    continue
                except Exception:  # our bug: loud, counted, and the sender goes on (consensus must not stop)
                    self.dropped["send_bug"] += len(batch)
                    log.exception("stream send failed: a bug", stream=self.rpc_name, peer=peer)
                    continue
            try:
                answer = await self.mesh.request(peer, self.rpc_name, data, timeout_s=self.timeout_s)
            except self.mesh.request_errors as exc:  # refused, timed out, reset: count it, keep the sender
                self.dropped["send_failed"] += 1
                log.debug("send failed", rpc=self.rpc_name, peer=peer, error=repr(exc))
                continue
            except Exception:  # our bug: loud, counted, and the sender goes on
                self.dropped["send_bug"] += 1
                log.exception("send failed: a bug", rpc=self.rpc_name, peer=peer)
                continue
            if answer and self.on_answer is not None:
                self.on_answer(peer, answer)


class CoreShell(CoreLoop):
    """One sans-IO core driven by trio over the mesh: Send effects through PeerQueues (rpc answers
    come back to the core), Broadcast on the gossip topic (or to every peer without one)."""

    def __init__(self, core: Any, mesh: Transport, nursery: trio.Nursery, *, rpc_name: str, topic: str | None,
                 clock: Callable[[], float] | None = None, send_timeout_s: float = SEND_TIMEOUT_S,
                 empty_answer: bytes = b"", outputs: Mapping[type, Callable[[Any], None]] | None = None) -> None:
        # The core's clock: trio's by default; wall-clock seconds (time.time) for cores that compare
        # `now` with timestamps signed by other nodes. Timers are set in this clock. `outputs`: the
        # interpreter's handlers by effect type (e.g. {NewPrimary: persist}); others go to on_output.
        super().__init__(core, send=self._send_effect, broadcast=self._broadcast_effect, outputs=outputs,
                         other=self._output, clock=clock)
        self.mesh = mesh
        self.topic = topic
        self.queues = PeerQueues(mesh, nursery, rpc_name, timeout_s=send_timeout_s)
        self.queues.on_answer = self.deliver
        self.empty_answer = empty_answer
        self._publish, self._published = trio.open_memory_channel[bytes](PUBLISH_QUEUE)
        self.on_output: Callable[[Any], None] | None = None  # effects the shell does not know go here

    async def handle_rpc(self, peer: NodeId, data: bytes) -> bytes:
        """A one-way message: queued to the core's loop, answered with nothing."""
        self.deliver(peer, data)
        return b""

    async def handle_request(self, peer: NodeId, data: bytes) -> bytes:
        """A request/response protocol served in-band: the core handles `data` at once; its first Send
        back to `peer` is the rpc's answer (`empty_answer` when there is none), every other effect is
        carried out as usual. (Core steps are synchronous, so this interleaves safely with the loop.)"""
        answer: bytes | None = None
        rest = []
        for effect in self.core.on_message(peer, data, self._clock()):
            if answer is None and type(effect) is Send and effect.to == peer:
                answer = _bytes(effect.message)
            else:
                rest.append(effect)
        self.interpret(rest)
        return answer if answer is not None else self.empty_answer

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            if self.topic is not None:
                await nursery.start(self._listen_gossip)
                nursery.start_soon(self._publisher)
            await super().run(task_status=task_status)

    def _send_effect(self, to: NodeId, message: Any) -> None:
        self.queues.send_nowait(to, _bytes(message))

    def _broadcast_effect(self, message: Any) -> None:
        data = _bytes(message)
        if self.topic is None:
            self.queues.broadcast_nowait(data)
            return
        try:
            self._publish.send_nowait(data)
        except trio.WouldBlock:
            self.dropped["publish_queue_full"] += 1

    def _output(self, effect: Any) -> None:
        if self.on_output is not None:
            self.on_output(effect)

    async def _publisher(self) -> None:
        async for data in self._published:
            try:
                await self.mesh.publish(self.topic, data)
            except self.mesh.request_errors as exc:  # gossip is best effort; anti-entropy repairs what is lost
                self.dropped["publish_failed"] += 1
                log.debug("publish failed", topic=self.topic, error=repr(exc))
            except Exception:  # our bug: loud and counted; gossip goes on
                self.dropped["publish_bug"] += 1
                log.exception("publish failed: a bug", topic=self.topic)

    async def _listen_gossip(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        async with self.mesh.subscribe(self.topic) as messages:
            task_status.started()
            async for msg in messages:
                self.deliver(msg.sender, msg.data)


def _bytes(message: Any) -> bytes:
    if isinstance(message, (bytes, bytearray)):
        return bytes(message)
    from mycelium.encoding import canonical

    return canonical(message.to_wire() if hasattr(message, "to_wire") else message)
