"""Pacing for the session's loops: a capped exponential backoff and a wake-up a loop can sleep on.

A joiner should act the moment something changes (its first peer admitted, the chain adopted, a new
Primary) and otherwise retry soon, then less often: `Wakeup.sleep(delay)` returns early when
`wake()` was called, and `Backoff` gives the delays (pure: no clock, no randomness).
"""

from __future__ import annotations

import trio


class Backoff:
    """first_s, first_s × factor, … up to max_s; `reset()` after a success."""

    def __init__(self, first_s: float, max_s: float, factor: float = 2.0) -> None:
        if not 0 < first_s <= max_s or factor < 1:
            raise ValueError("need 0 < first_s <= max_s and factor >= 1")
        self.first_s, self.max_s, self.factor = first_s, max_s, factor
        self._next = first_s

    def next(self) -> float:
        delay = self._next
        self._next = min(self.max_s, self._next * self.factor)
        return delay

    def reset(self) -> None:
        self._next = self.first_s


class Wakeup:
    """`await wakeup.sleep(s)` sleeps up to `s` seconds, less if `wakeup.wake()` is called meanwhile
    (a wake with nobody sleeping is kept for the next sleep)."""

    def __init__(self) -> None:
        self._event = trio.Event()

    def wake(self) -> None:
        self._event.set()

    async def sleep(self, seconds: float) -> bool:
        """True if woken, False if the time ran out."""
        with trio.move_on_after(seconds):
            await self._event.wait()
        woken = self._event.is_set()
        if woken:
            self._event = trio.Event()
        return woken
