"""The trio shell around ConsensusCore: feeds it messages and clock ticks, and carries out its
effects in order — a PersistLock is fsynced before any later message goes out.

The transport is whatever carries bytes between validators (the mesh's direct streams; nothing at
all for a single-validator network). Inbound messages are queued in a bounded channel; when it is
full, further messages are dropped and counted (the core's rebroadcasts recover them).
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any, Awaitable, Callable, Protocol

import trio

from mycelium.shell.effects import Broadcast, Send, SetTimer
from mycelium.encoding import canonical
from mycelium.identity import NodeId
from mycelium.observability.logs import get_logger

from mycelium.consensus.core import ConsensusCore
from mycelium.consensus.outcomes import Decided, Evidence, Participation, PersistLock

log = get_logger("mycelium.consensus")

INBOX_SIZE = 1024  # queued inbound messages; beyond this they are dropped and counted


class Transport(Protocol):
    async def send(self, to: NodeId, data: bytes) -> None: ...

    async def broadcast(self, data: bytes) -> None: ...


class NoTransport:
    """A single-validator network has nobody to talk to."""

    async def send(self, to: NodeId, data: bytes) -> None:
        return None

    async def broadcast(self, data: bytes) -> None:
        return None


class ConsensusDriver:
    def __init__(
        self,
        core: ConsensusCore,
        transport: Transport,
        *,
        persist_lock: Callable[[dict], None],
        on_decided: Callable[[Decided], Awaitable[None] | None],
        on_evidence: Callable[[Evidence], None] | None = None,
        on_participation: Callable[[Participation], None] | None = None,
    ) -> None:
        self.core = core
        self.transport = transport
        self._persist_lock = persist_lock
        self._on_decided = on_decided
        self._on_evidence = on_evidence
        self._on_participation = on_participation
        self._timers: dict[str, float] = {}
        self._send, self._inbox = trio.open_memory_channel[tuple[str, Any]](INBOX_SIZE)
        self.dropped: Counter[str] = Counter()

    def deliver(self, sender: NodeId, message: Any) -> None:
        """Queue a message from a peer (bytes or wire map). Never blocks; drops when full."""
        try:
            self._send.send_nowait((sender, message))
        except trio.WouldBlock:
            self.dropped["inbox_full"] += 1

    def poke(self) -> None:
        """New operations are waiting: let a waiting proposer propose now."""
        self.deliver("", _POKE)

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        await self._carry_out(self.core.start(trio.current_time()))
        task_status.started()
        while True:
            deadline = min(self._timers.values(), default=math.inf)
            item = None
            with trio.move_on_at(deadline):
                item = await self._inbox.receive()
            now = trio.current_time()
            if item is None:
                due = [name for name, at in self._timers.items() if at <= now]
                for name in due:
                    del self._timers[name]
                effects = self.core.on_tick(now)
            elif item[1] is _POKE:
                effects = self.core.poke(now)
            else:
                effects = self.core.on_message(item[0], item[1], now)
            await self._carry_out(effects)

    async def _carry_out(self, effects: list[Any]) -> None:
        for effect in effects:
            if isinstance(effect, PersistLock):
                self._persist_lock(effect.state)  # synchronous and fsynced: nothing later may overtake it
            elif isinstance(effect, Broadcast):
                await self.transport.broadcast(_wire(effect.message))
            elif isinstance(effect, Send):
                await self.transport.send(effect.to, _wire(effect.message))
            elif isinstance(effect, SetTimer):
                self._timers[effect.name] = effect.at
            elif isinstance(effect, Decided):
                result = self._on_decided(effect)
                if result is not None:
                    await result
            elif isinstance(effect, Evidence):
                log.warning("misbehaviour evidence", kind=effect.kind.value, validator=effect.validator, height=effect.height)
                if self._on_evidence:
                    self._on_evidence(effect)
            elif isinstance(effect, Participation):
                if self._on_participation:
                    self._on_participation(effect)
            else:
                raise AssertionError(f"consensus emitted an effect the driver does not know: {effect!r}")


_POKE = object()


def _wire(message: Any) -> bytes:
    return canonical(message.to_wire() if hasattr(message, "to_wire") else message)
