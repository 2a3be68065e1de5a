"""One simulation run: build the world, inject the plan, run the faulty phase, heal, run a quiet tail,
check liveness, and describe the run in a deterministic summary.

Phases:
1. `duration_s` of virtual time with the fault plan active; safety invariants every `check_every`
   events;
2. heal: pending plan events are cancelled, partitions/link faults/slow nodes removed, crashed
   nodes restarted from their persisted state (Byzantine nodes stay Byzantine, clock offsets stay);
3. `tail_s` of fault-free time, then safety and liveness invariants once more.

The summary (`RunResult.summary`) is a pure function of the configuration, the seed and the code;
the wall-clock time is kept apart in `RunResult.real_s`.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass
from random import Random

from mycelium.sim.invariants import InvariantViolation, Monitor
from mycelium.sim.nemesis import FaultPlan, Nemesis, generate_plan
from mycelium.sim.network import NetworkConfig, SimConfigError
from mycelium.sim.protocols import Scenario, ScenarioParams, load_protocol
from mycelium.sim.world import World

SUMMARY_SCHEMA = "mycelium.sim.summary/1"  # bump when a field of the JSON summary changes meaning
DEFAULT_CHECK_EVERY = 1000  # events between safety checks (see RunConfig.check_every)
NETWORKS = {"default": NetworkConfig, "lan": NetworkConfig.lan, "wan": NetworkConfig.wan}


@dataclass(frozen=True, slots=True)
class RunConfig:
    protocol: str = "register"  # scenario name (see mycelium.sim.protocols.PROTOCOLS)
    nodes: int = 20  # simulated nodes
    seed: int = 1  # the one seed everything random derives from
    duration_s: float = 600.0  # virtual seconds with faults active
    tail_s: float = 120.0  # fault-free virtual seconds before liveness is checked
    faults: str | None = None  # JSON plan path; None = generated from the seed; "none" = no faults
    byzantine: bool = True  # let a generated plan include Byzantine nodes
    network: str = "default"  # base network preset: default, lan, wan (faults come on top)
    wire: bool = False  # encode every message through the protocol codec (slower, exercises decoders)
    check_every: int = DEFAULT_CHECK_EVERY  # events between safety checks; smaller = earlier detection, slower

    def validate(self) -> None:
        if self.nodes < 1:
            raise SimConfigError(f"--nodes must be at least 1, got {self.nodes}")
        if self.duration_s < 0 or self.tail_s < 0:
            raise SimConfigError("--duration and --tail must be >= 0 virtual seconds")
        if self.check_every < 1:
            raise SimConfigError(f"--check-every must be at least 1 event, got {self.check_every}")
        if self.network not in NETWORKS:
            raise SimConfigError(f"unknown --network {self.network!r}; use one of {sorted(NETWORKS)}")

    def replay_command(self) -> str:
        """The exact command line that reproduces this run."""
        parts = ["python -m mycelium.sim", f"--protocol {self.protocol}", f"--nodes {self.nodes}",
                 f"--seed {self.seed}", f"--duration {self.duration_s:g}", f"--tail {self.tail_s:g}"]
        if self.faults is not None:
            parts.append(f"--faults {self.faults}")
        if not self.byzantine:
            parts.append("--no-byzantine")
        if self.network != "default":
            parts.append(f"--network {self.network}")
        if self.wire:
            parts.append("--wire")
        if self.check_every != DEFAULT_CHECK_EVERY:
            parts.append(f"--check-every {self.check_every}")
        return " ".join(parts)


@dataclass(slots=True)
class RunResult:
    config: RunConfig
    summary: dict  # deterministic DTO (see `summarise`)
    real_s: float  # wall-clock seconds: NOT deterministic, never part of `summary`
    failure: str | None  # one-paragraph report with seed and replay commands, None when all held

    @property
    def ok(self) -> bool:
        return self.failure is None


def build_world(config: RunConfig) -> tuple[World, Monitor, Nemesis]:
    world, monitor, nemesis, _ = _build(config)
    return world, monitor, nemesis


def _build(config: RunConfig) -> tuple[World, Monitor, Nemesis, Scenario]:
    """The world of a run, ready to start (exposed for tests that drive phases themselves)."""
    config.validate()
    rng = Random(config.seed)
    scenario = load_protocol(config.protocol)(ScenarioParams(config.nodes, rng, config.duration_s, config.wire))
    if config.wire and scenario.codec is None:
        raise SimConfigError(f"protocol {config.protocol!r} has no codec; run without --wire")
    network = scenario.network if config.network == "default" and scenario.network else NETWORKS[config.network]()
    world = World(
        scenario.node_ids, scenario.make_core, rng=rng, network=network,
        codec=scenario.codec if config.wire else None, outputs=scenario.outputs,
        clock_origin_s=scenario.clock_origin_s, check_every=config.check_every,
    )
    if config.faults is None:
        plan = generate_plan(rng, config.nodes, config.duration_s, scenario.hooks,
                             byzantine=config.byzantine, max_clock_jump_s=scenario.max_clock_jump_s)
    elif config.faults == "none":
        plan = FaultPlan()
    else:
        plan = FaultPlan.load(config.faults)
    nemesis = Nemesis(world, plan, scenario.hooks)
    monitor = Monitor(scenario.invariants)
    world.checkers.append(monitor.safety)
    return world, monitor, nemesis, scenario


def heal(world: World) -> None:
    """End of the faulty phase: no pending faults, a whole network, every node up."""
    world.cancel_calls()
    world.net.heal()
    for node in world.nodes:
        if not node.up:
            world.restart(node.index)


def run(config: RunConfig) -> RunResult:
    """Run one simulation. Configuration errors raise SimConfigError; invariant violations and core
    exceptions are reported in `RunResult.failure` (with the seed and the replay commands)."""
    started = time.perf_counter()
    world, monitor, nemesis, scenario = _build(config)
    outcome, detail = "ok", None
    try:
        nemesis.install()
        world.start()
        world.run_until(config.duration_s)
        heal(world)
        world.run_until(config.duration_s + config.tail_s)
        monitor.safety(world)
        monitor.liveness(world)
    except InvariantViolation as exc:
        outcome, detail = "violated", str(exc)
    except Exception as exc:  # a core (or the simulator) crashed: report it with the seed, not a bare traceback
        frame = traceback.extract_tb(exc.__traceback__)[-1]
        outcome = "crashed"
        detail = f"{type(exc).__name__}: {exc} (at {frame.filename}:{frame.lineno}, t={world.now:.6f}s)"
    real_s = time.perf_counter() - started
    summary = summarise(config, world, monitor, nemesis, outcome, detail)
    summary["protocol_stats"] = scenario.report(world) if scenario.report is not None else {}
    failure = None
    if outcome != "ok":
        failure = (f"simulation {outcome} (seed {config.seed}): {detail}\n"
                   f"replay: {summary['replay']['cli']}\n"
                   f"    or: {summary['replay']['pytest']}")
    return RunResult(config, summary, real_s, failure)


def summarise(config: RunConfig, world: World, monitor: Monitor, nemesis: Nemesis, outcome: str, detail: str | None) -> dict:
    """The run's JSON DTO (schema owned here; no internal objects)."""
    byzantine = [{"node": n.index, "id": n.id, "behaviours": list(n.tags)} for n in world.nodes if n.tags]
    return {
        "schema": SUMMARY_SCHEMA,
        "protocol": config.protocol,
        "nodes": config.nodes,
        "seed": config.seed,
        "duration_s": config.duration_s,
        "tail_s": config.tail_s,
        "virtual_s": round(world.now, 6),
        "events": world.stats.events,
        "stats": world.stats.as_dict(),
        "faults_injected": len(nemesis.injected),
        "faults": nemesis.counts(),
        "byzantine": byzantine,
        "invariants": monitor.results(),
        "result": outcome,
        "failure": detail,
        "replay": {"cli": config.replay_command(), "pytest": f"pytest tests/sim --sim-seed={config.seed}"},
    }


def render_text(summary: dict, real_s: float | None) -> str:
    """Human summary; every line but the last ('real seconds') is deterministic."""
    s = summary["stats"]
    lines = [
        f"mycelium.sim protocol={summary['protocol']} nodes={summary['nodes']} seed={summary['seed']}",
        f"virtual seconds: {summary['virtual_s']:.3f} ({summary['duration_s']:g} faulty + {summary['tail_s']:g} quiet)",
        f"events processed: {summary['events']}",
        f"messages: sent {s['sent']}, delivered {s['delivered']}, duplicated {s['duplicated']}",
        f"dropped: partition {s['dropped_partition']}, loss {s['dropped_loss']}, node down {s['dropped_down']}, "
        f"unknown peer {s['dropped_unknown_peer']}, undecodable {s['undecodable']}",
        f"timers fired: {s['timers_fired']}, boots: {s['boots']}, crashes: {s['crashes']}",
        "faults injected: {} ({})".format(
            summary["faults_injected"], ", ".join(f"{k} {v}" for k, v in summary["faults"].items()) or "none"),
        "byzantine nodes: {} ({})".format(
            len(summary["byzantine"]),
            ", ".join(f"{b['node']} {'+'.join(b['behaviours'])}" for b in summary["byzantine"]) or "none"),
    ]
    if summary.get("protocol_stats"):
        lines.append("protocol: " + ", ".join(f"{k} {v}" for k, v in summary["protocol_stats"].items()))
    lines.append("invariants:")
    for inv in summary["invariants"]:
        lines.append(f"  {inv['status']:<9} {inv['name']} ({inv['kind']}, {inv['checks']} checks)")
    if summary["result"] == "ok":
        lines.append("result: ok")
    else:
        lines.append(f"result: {summary['result'].upper()} (seed {summary['seed']}): {summary['failure']}")
        lines.append(f"replay: {summary['replay']['cli']}")
        lines.append(f"    or: {summary['replay']['pytest']}")
    if real_s is not None:
        ratio = summary["virtual_s"] / real_s if real_s > 0 else float("inf")
        lines.append(f"real seconds: {real_s:.3f} (virtual/real {ratio:.1f}x)")
    return "\n".join(lines)
