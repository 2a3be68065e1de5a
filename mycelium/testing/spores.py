"""Test helpers for spores (like trio.testing): deterministic keys, signed entries, a loopback net.

Used by tests/unit/test_spores_*.py, tests/property/test_spores_*.py and the simulator's tests.
"""

from __future__ import annotations

from collections import deque
from functools import lru_cache
from typing import Callable, Iterable

from mycelium.shell.effects import Core, SetTimer
from mycelium.shell.interpreter import Interpreter
from mycelium.encoding import canonical
from mycelium.identity import NodeId, NodeKey
from mycelium.spores.entry import MASTER_SCOPE, TEMPORAL_TYPES, Entry, EntryType

NETWORK_ID = "5a" * 32  # a fixed network id for tests


@lru_cache(maxsize=None)
def node_key(i: int) -> NodeKey:
    """The i-th deterministic test key (0 ≤ i < 256)."""
    return NodeKey.from_seed(bytes([i % 256]) * 31 + bytes([i // 256 % 256]))


def node_id(i: int) -> NodeId:
    return node_key(i).node_id


def signed_entry(
    author: int,
    type_: EntryType = EntryType.NODE,
    version: int = 1,
    *,
    name: str = "",
    subject: int | None = None,
    body: dict | None = None,
    timestamp_ms: int | None = None,
    scope: str = MASTER_SCOPE,
    network_id: str = NETWORK_ID,
) -> Entry:
    """A signed entry by test node `author`. For temporal types the timestamp is the version."""
    return _signed(author, int(type_), version, name, subject, canonical(body or {"v": version}), timestamp_ms, scope, network_id)


@lru_cache(maxsize=20_000)
def _signed(author, type_, version, name, subject, body_bytes, timestamp_ms, scope, network_id) -> Entry:
    from mycelium.encoding import decode

    etype = EntryType(type_)
    ts = version if etype in TEMPORAL_TYPES else (timestamp_ms if timestamp_ms is not None else 1_000)
    key = node_key(author)
    entry = Entry(
        type=etype,
        observer=key.node_id,
        subject=node_id(subject) if subject is not None else key.node_id,
        name=name,
        author=key.node_id,
        version=version,
        timestamp_ms=ts,
        body=decode(body_bytes),
        scope=scope,
    )
    return entry.signed_by(key, network_id)


class LoopbackNet:
    """Delivers Send/Broadcast effects between cores in this process, in FIFO order (or in the
    order `pick` chooses). Other effects (timers) are collected in `other`."""

    def __init__(self, cores: dict[NodeId, Core], *, pick: Callable[[int], int] | None = None) -> None:
        self.cores = cores
        self.queue: deque[tuple[NodeId, NodeId, object]] = deque()
        self.pick = pick
        self.delivered = 0
        self.other: list[object] = []

    def absorb(self, sender: NodeId, effects: Iterable[object]) -> None:
        def broadcast(message: object) -> None:
            self.queue.extend((sender, peer, message) for peer in sorted(self.cores) if peer != sender)

        Interpreter(send=lambda to, message: self.queue.append((sender, to, message)), broadcast=broadcast,
                    set_timer=lambda name, at: self.other.append(SetTimer(name, at)), other=self.other.append)(effects)

    def tick_all(self, now: float) -> None:
        for nid in sorted(self.cores):
            self.absorb(nid, self.cores[nid].on_tick(now))

    def run_until_idle(self, now: float, *, max_steps: int = 100_000) -> int:
        steps = 0
        while self.queue:
            if steps >= max_steps:
                raise RuntimeError(f"loopback network still busy after {max_steps} deliveries")
            index = self.pick(len(self.queue)) if self.pick else 0
            self.queue.rotate(-index)
            sender, to, message = self.queue.popleft()
            self.queue.rotate(index)
            if to in self.cores:
                self.absorb(to, self.cores[to].on_message(sender, message, now))
            steps += 1
        self.delivered += steps
        return steps
