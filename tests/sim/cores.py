"""Tiny cores for testing the simulator itself."""

from __future__ import annotations

from typing import Any

from mycelium.shell.effects import Broadcast, Send, SetTimer


class Recorder:
    """Records every input; sends what the test scripts in `script` (a list of effects per tick)."""

    def __init__(self, node_id: str, persisted: Any = None) -> None:
        self.node_id = node_id
        self.received: list[tuple[str, Any, float]] = []
        self.ticks: list[float] = []
        self.script: list[list] = []
        self.persisted_in = persisted
        self.state = persisted if persisted is not None else 0

    def on_message(self, sender: str, message: Any, now: float) -> list:
        self.received.append((sender, message, now))
        return []

    def on_tick(self, now: float) -> list:
        self.ticks.append(now)
        return self.script.pop(0) if self.script else []

    def persist(self) -> Any:
        return self.state


class Sender:
    """On boot sends `count` numbered messages to `to` (or broadcasts when `to` is None)."""

    def __init__(self, node_id: str, to: str | None, count: int) -> None:
        self.node_id = node_id
        self.to = to
        self.count = count
        self.received: list[tuple[str, Any, float]] = []

    def on_message(self, sender: str, message: Any, now: float) -> list:
        self.received.append((sender, message, now))
        return []

    def on_tick(self, now: float) -> list:
        if self.to is None:
            return [Broadcast(i) for i in range(self.count)]
        return [Send(self.to, i) for i in range(self.count)]


class Ticker:
    """Sets a timer every `period_s` and records the local times it was woken at."""

    def __init__(self, node_id: str, period_s: float = 10.0) -> None:
        self.node_id = node_id
        self.period_s = period_s
        self.ticks: list[float] = []

    def on_message(self, sender: str, message: Any, now: float) -> list:
        return []

    def on_tick(self, now: float) -> list:
        self.ticks.append(now)
        return [SetTimer("t", now + self.period_s)]
