"""How a protocol plugs into the simulator: a scenario builder per protocol name.

A builder takes `ScenarioParams` (node count, the run's seeded RNG, run length, wire mode) and
returns a `Scenario`: node ids, the core factory, the invariants, the Byzantine hooks and optional
codec. Builders are imported lazily by name so that the simulator runs even while a protocol module
is missing or broken; `register_protocol` adds one from a test.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from random import Random
from typing import Any, Callable

from mycelium.identity import NodeId
from mycelium.sim.byzantine import ByzantineHooks
from mycelium.sim.invariants import Invariant
from mycelium.sim.network import NetworkConfig, SimConfigError
from mycelium.sim.world import Codec, MakeCore


@dataclass(frozen=True, slots=True)
class ScenarioParams:
    nodes: int  # how many nodes to simulate
    rng: Random  # the run's one seeded RNG (derive keys etc. from it, in a fixed order)
    duration_s: float  # length of the faulty phase; the fault-free tail follows
    wire: bool = False  # True = messages go through the protocol's codec as bytes


@dataclass(slots=True)
class Scenario:
    node_ids: list[NodeId]
    make_core: MakeCore  # (node_id, persisted_state or None) -> core
    invariants: list[Invariant]
    hooks: ByzantineHooks = field(default_factory=ByzantineHooks)
    codec: Codec | None = None  # used only when ScenarioParams.wire is True
    network: NetworkConfig | None = None  # None = NetworkConfig() defaults
    # protocol outputs by effect type: {Decided: fn(world, node, effect), …} (the interpreter's table)
    outputs: dict[type, Callable[[Any, Any, Any], None]] = field(default_factory=dict)
    # protocol counters for the summary, e.g. messages dropped by reason (must be deterministic)
    report: Callable[[Any], dict] | None = None
    clock_origin_s: float = 0.0  # every node's clock starts here (e.g. a unix time for signed timestamps)
    # largest clock jump a generated plan uses; a protocol that rejects skewed data (Latent: 30 s)
    # cannot converge within the tail after bigger jumps, so it says what it tolerates
    max_clock_jump_s: float = 300.0


Builder = Callable[[ScenarioParams], Scenario]

PROTOCOLS: dict[str, str | Builder] = {
    "register": "mycelium.sim.register:scenario",  # the simulator's own toy protocol
    "latent": "mycelium.sim.latent:scenario",  # Latent spore gossip (mycelium.spores)
    "consensus": "mycelium.sim.consensus:scenario",  # commit-reveal BFT validators
}


def register_protocol(name: str, builder: Builder) -> None:
    PROTOCOLS[name] = builder


def load_protocol(name: str) -> Builder:
    """The builder registered as `name`, or the one at the import path `package.module:function`
    (so tests and experiments can run their own scenarios from the command line)."""
    target = PROTOCOLS.get(name) or (name if ":" in name else None)
    if target is None:
        raise SimConfigError(f"unknown protocol {name!r}; use one of {sorted(PROTOCOLS)} or module:function")
    if callable(target):
        return target
    module, _, attr = target.partition(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except AttributeError as exc:
        raise SimConfigError(f"protocol {name!r}: {module} has no {attr}") from exc
    except ImportError as exc:
        raise SimConfigError(f"protocol {name!r} is not available ({exc}); is {module} written yet?") from exc
