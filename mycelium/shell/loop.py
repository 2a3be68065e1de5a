"""The trio loop around one sans-IO core: inbound messages and local calls through one bounded inbox,
timers from the core's `SetTimer`s, every result carried out by the one `Interpreter`.

    loop = CoreLoop(core, send=…, broadcast=…, outputs={…})
    await nursery.start(loop.run)        the core's first step (`start`, default on_tick) ran
    loop.deliver(peer, message)          never blocks; a full inbox drops and counts ("inbox_full")
    loop.call(lambda now: core.publish(entry, now))    a local action, run from the loop
    loop.stop()                          the core is never called again (before replacing it)

The clock is trio's by default; cores that compare `now` with timestamps signed by other nodes run
on the wall clock (`clock=time.time`), and their timers are set on it. The send and broadcast
callbacks must not block (rpc queues per peer, a bounded publish queue): a slow peer never stalls
the core.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any, Callable, Mapping

import trio

from mycelium.identity import NodeId
from mycelium.shell.interpreter import Interpreter, OutputHandler, Timers

INBOX = 1024  # inbound messages (and local calls) waiting for the core; beyond this dropped and counted


class CoreLoop:
    def __init__(
        self,
        core: Any,
        *,
        send: Callable[[NodeId, Any], None],
        broadcast: Callable[[Any], None],
        outputs: Mapping[type, OutputHandler] | None = None,
        other: OutputHandler | None = None,
        clock: Callable[[], float] | None = None,
        start: Callable[[float], list[Any]] | None = None,
        inbox: int = INBOX,
    ) -> None:
        self.core = core
        self.timers = Timers()
        self.interpret = Interpreter(send=send, broadcast=broadcast, set_timer=self.timers.set,
                                     outputs=outputs, other=other)
        self._clock = clock or trio.current_time
        self._start = start or core.on_tick
        self._send, self._inbox = trio.open_memory_channel[tuple[NodeId, Any]](inbox)
        self.dropped: Counter[str] = Counter()
        self._stopped = False

    def stop(self) -> None:
        """Never call the core again, from this moment on. Cancelling the loop's scope is not enough
        to replace a core: a message the loop already received is still handed to the core at once
        (trio delivers a cancel only at the next checkpoint), so an old consensus core could sign a
        vote its successor — built from the persisted state before that vote — does not know of."""
        self._stopped = True

    def deliver(self, sender: NodeId, message: Any) -> None:
        """Queue a message from a peer. Never blocks; drops and counts when the inbox is full."""
        try:
            self._send.send_nowait((sender, message))
        except trio.WouldBlock:
            self.dropped["inbox_full"] += 1

    def call(self, fn: Callable[[float], list[Any]]) -> None:
        """Run a local action on the core (`fn(now) -> effects`) from the loop."""
        self.deliver("", _Call(fn))

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        if not self._stopped:
            self.interpret(self._start(self._clock()))
        task_status.started()
        while True:
            due = self.timers.next_at()
            deadline = trio.current_time() + (due - self._clock()) if due != math.inf else math.inf
            item = None
            with trio.move_on_at(deadline):
                item = await self._inbox.receive()
            if self._stopped:
                return
            now = self._clock()
            if item is None:
                self.timers.pop_due(now)
                effects = self.core.on_tick(now)
            elif isinstance(item[1], _Call):
                effects = item[1].fn(now)
            else:
                effects = self.core.on_message(item[0], item[1], now)
            self.interpret(effects)


class _Call:
    __slots__ = ("fn",)

    def __init__(self, fn: Callable[[float], list[Any]]) -> None:
        self.fn = fn
