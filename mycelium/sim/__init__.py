"""Deterministic network simulator for the sans-IO protocol cores.

Runs N cores (anything with `on_message(sender, message, now)` / `on_tick(now)`, see
mycelium.shell.effects) in one process with a virtual clock and ONE seeded `random.Random`; the same
seed and code give the same run, event for event.

Modules:
- world      event loop (heap of (time, seq) events), boot/crash/restart, timers, clocks, effects:
             the one in-process network (consensus and spores tests reach it through the small
             views in mycelium.testing: localnet, spores)
- network    latency models, loss, duplication, reordering, partitions, slow nodes
- nemesis    fault plans as data (JSON), generated from the seed or written by hand
- byzantine  equivocate / copy / withhold / lie / garbage wrappers around any core
- invariants safety and liveness checkers, Monitor
- protocols  how a protocol plugs in (Scenario, ScenarioParams, register_protocol)
- run        one run: faulty phase, heal, quiet tail, summary; `python -m mycelium.sim`
- register   the simulator's own toy protocol (max-register gossip)
- latent     Latent spore gossip from mycelium.spores
- consensus  commit-reveal BFT validators (boot_validator, consensus_hooks); toy_ledger: their LedgerApp

Adding a protocol: write `scenario(params: ScenarioParams) -> Scenario` (node ids, core factory,
invariants, Byzantine hooks) and add it to `protocols.PROTOCOLS`, or pass `--protocol module:function`.
"""

from mycelium.sim.byzantine import ByzantineHooks
from mycelium.sim.invariants import Converged, EveryHonestNode, InvariantViolation, Monitor
from mycelium.sim.nemesis import Fault, FaultPlan, Nemesis, generate_plan
from mycelium.sim.network import FixedLatency, LogNormalLatency, NetworkConfig, SimConfigError, UniformLatency
from mycelium.sim.protocols import Scenario, ScenarioParams, register_protocol
from mycelium.sim.run import RunConfig, RunResult, run
from mycelium.sim.world import Persistent, World

__all__ = [
    "ByzantineHooks", "Converged", "EveryHonestNode", "Fault", "FaultPlan", "FixedLatency", "InvariantViolation",
    "LogNormalLatency", "Monitor", "Nemesis", "NetworkConfig", "Persistent", "RunConfig", "RunResult", "Scenario",
    "ScenarioParams", "SimConfigError", "UniformLatency", "World", "generate_plan", "register_protocol", "run",
]
