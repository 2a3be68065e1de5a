"""Test helpers for spores (like trio.testing): deterministic keys, signed entries, and the
simulator's World set up as a loopback network over cores a test built.

Used by tests/unit/test_spores_*.py, tests/property/test_spores_*.py and the simulator's tests.
"""

from __future__ import annotations

from functools import lru_cache
from random import Random
from typing import Any, Callable

from mycelium.encoding import canonical
from mycelium.identity import NodeId, NodeKey
from mycelium.shell.effects import Core
from mycelium.sim.network import FixedLatency, NetworkConfig
from mycelium.sim.world import SimNode, World
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


def loopback(cores: dict[NodeId, Core], *, latency_s: float = 0.0,
             on_output: Callable[[World, SimNode, Any], None] | None = None) -> World:
    """The simulator's World (the one in-process network) over cores a test already built, in
    node-id order: every message takes `latency_s` (0 = delivered in FIFO order at the instant it
    was sent; a huge value = held until the test picks it with `world.deliver_one`), no boot jitter,
    and every node booted (its first on_tick runs at time 0)."""
    ids = sorted(cores)
    world = World(ids, lambda node_id, persisted: cores[node_id], rng=Random(0), boot_jitter_s=0.0,
                  network=NetworkConfig(latency=FixedLatency(latency_s)), on_output=on_output)
    world.start()
    return world


def deliver_all(world: World, *, max_steps: int = 100_000) -> int:
    """Deliver every message in flight, and the ones they cause, in FIFO order, however far off
    their arrival time; the number delivered."""
    steps = 0
    while world.in_flight():
        if steps >= max_steps:
            raise RuntimeError(f"network still busy after {max_steps} deliveries")
        world.deliver_one(0)
        steps += 1
    return steps


def tick_all(world: World, now: float) -> None:
    """Move the clock to `now` (due timers fire) and tick every core once more."""
    world.run_until(now)
    for node in world.nodes:
        world.apply(node.index, node.core.on_tick(world.local_now(node.index)))
