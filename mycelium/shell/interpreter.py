"""The one effect interpreter: how a core's effects are carried out, in the daemon, the simulator and
the in-process test networks alike (STYLE §14; h11's one `Connection` for every server).

    interpret = Interpreter(send=…, broadcast=…, set_timer=timers.set, outputs={Decided: on_decided})
    interpret(core.on_message(sender, message, now))

Effects are carried out in the order the core returned them, each to completion before the next:
a `PersistLock` handler that fsyncs runs before the `Send` that follows it is even queued. `Send`,
`Broadcast` and `SetTimer` go to the three callbacks; any other effect goes to the handler
registered for its exact type, else to `other`; an effect with neither raises `UnexpectedEffect`
(a core emitting something its owner never heard of is a bug, not noise). Pure: no trio, no clock —
the callbacks decide what "send" means (a bounded rpc queue, a virtual wire, a FIFO list).

`Timers` is the one timer table: named deadlines on the core's clock, a later `SetTimer` with the
same name replacing the earlier one.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable, Mapping

from mycelium.identity import NodeId
from mycelium.shell.effects import Broadcast, Send, SetTimer

OutputHandler = Callable[[Any], None]


class UnexpectedEffect(AssertionError):
    """A core returned an effect its owner registered no handler for."""


class Timers:
    """Named deadlines of one core (bounded by the names the core uses)."""

    __slots__ = ("_at",)

    def __init__(self) -> None:
        self._at: dict[str, float] = {}

    def set(self, name: str, at: float) -> None:
        self._at[name] = at

    def next_at(self) -> float:
        """The earliest deadline, or infinity when none is set."""
        return min(self._at.values(), default=math.inf)

    def pop_due(self, now: float) -> list[str]:
        """Remove and return the names whose deadline is `now` or earlier."""
        due = [name for name, at in self._at.items() if at <= now]
        for name in due:
            del self._at[name]
        return due

    def clear(self) -> None:
        self._at.clear()

    def __len__(self) -> int:
        return len(self._at)


class Interpreter:
    __slots__ = ("_send", "_broadcast", "_set_timer", "_outputs", "_other")

    def __init__(
        self,
        *,
        send: Callable[[NodeId, Any], None],
        broadcast: Callable[[Any], None],
        set_timer: Callable[[str, float], None],
        outputs: Mapping[type, OutputHandler] | None = None,
        other: OutputHandler | None = None,
    ) -> None:
        self._send = send
        self._broadcast = broadcast
        self._set_timer = set_timer
        self._outputs = dict(outputs or {})
        self._other = other

    def __call__(self, effects: Iterable[Any]) -> None:
        for effect in effects:
            kind = type(effect)
            if kind is Send:
                self._send(effect.to, effect.message)
            elif kind is Broadcast:
                self._broadcast(effect.message)
            elif kind is SetTimer:
                self._set_timer(effect.name, effect.at)
            else:
                handler = self._outputs.get(kind, self._other)
                if handler is None:
                    raise UnexpectedEffect(f"a core emitted an effect nobody handles: {effect!r}")
                handler(effect)
