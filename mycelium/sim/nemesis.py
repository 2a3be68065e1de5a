"""The nemesis: a fault schedule as data.

A plan is a list of timed fault records, written by hand as JSON (`--faults PLAN`) or generated from
the seed by `generate_plan`. Nodes are named by index (0..n-1) so one plan fits any protocol.
Every record has `at_s` and `kind`; faults with a `duration_s` undo themselves afterwards.

    {"faults": [
      {"at_s": 10, "kind": "partition", "groups": [[0, 1, 2], [2, 3, 4]], "duration_s": 30},
      {"at_s": 15, "kind": "loss", "probability": 0.2, "duration_s": 20},
      {"at_s": 20, "kind": "duplicate", "probability": 0.1, "duration_s": 20},
      {"at_s": 25, "kind": "reorder", "probability": 0.3, "delay_s": 2.0, "duration_s": 20},
      {"at_s": 30, "kind": "crash", "node": 3, "restart_after_s": 15, "wipe": false},
      {"at_s": 40, "kind": "clock_jump", "node": 1, "delta_s": -120},
      {"at_s": 45, "kind": "slow", "node": 4, "factor": 20, "duration_s": 60},
      {"at_s": 0, "kind": "byzantine", "node": 2, "behaviour": "garbage", "options": {"probability": 0.5}},
      {"at_s": 70, "kind": "heal"}
    ]}

In `partition`, a node in two groups is a bridge and a node in no group is isolated. Undoing a
partition (its `duration_s` ending) reconnects everyone, including any partition that started
meanwhile; link faults (loss, duplicate, reorder) likewise return to the base network's values.
`crash` keeps the node's persisted state; `"wipe": true` restarts it from nothing (disk lost).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from random import Random
from typing import Any

from mycelium.sim.byzantine import ByzantineHooks, available_behaviours, make_wrapper
from mycelium.sim.network import SimConfigError
from mycelium.sim.world import World

KINDS = ("partition", "heal", "loss", "duplicate", "reorder", "crash", "restart", "clock_jump", "slow", "byzantine")

_FIELDS: dict[str, dict[str, type | tuple]] = {  # kind -> allowed fields besides at_s/kind
    "partition": {"groups": list, "duration_s": (int, float)},
    "heal": {},
    "loss": {"probability": (int, float), "duration_s": (int, float)},
    "duplicate": {"probability": (int, float), "duration_s": (int, float)},
    "reorder": {"probability": (int, float), "delay_s": (int, float), "duration_s": (int, float)},
    "crash": {"node": int, "restart_after_s": (int, float), "wipe": bool},
    "restart": {"node": int, "wipe": bool},
    "clock_jump": {"node": int, "delta_s": (int, float)},
    "slow": {"node": int, "factor": (int, float), "duration_s": (int, float)},
    "byzantine": {"node": int, "behaviour": str, "options": dict},
}
_REQUIRED = {
    "partition": ("groups",), "loss": ("probability",), "duplicate": ("probability",),
    "reorder": ("probability",), "crash": ("node",), "restart": ("node",),
    "clock_jump": ("node", "delta_s"), "slow": ("node", "factor"), "byzantine": ("node", "behaviour"),
}


@dataclass(frozen=True, slots=True)
class Fault:
    """One timed fault. `params` holds the kind's fields (see the module docstring)."""

    at_s: float
    kind: str
    params: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"at_s": self.at_s, "kind": self.kind, **self.params}

    @classmethod
    def from_json(cls, obj: object) -> Fault:
        if not isinstance(obj, dict):
            raise SimConfigError(f"a fault must be an object, got {obj!r}")
        kind, at = obj.get("kind"), obj.get("at_s")
        if kind not in _FIELDS:
            raise SimConfigError(f"fault kind {kind!r} is unknown; use one of {list(KINDS)}")
        if isinstance(at, bool) or not isinstance(at, (int, float)) or at < 0:
            raise SimConfigError(f"{kind} fault needs 'at_s' >= 0 (virtual seconds), got {at!r}")
        params = {k: v for k, v in obj.items() if k not in ("at_s", "kind")}
        allowed = _FIELDS[kind]
        for name, value in params.items():
            if name not in allowed:
                raise SimConfigError(f"{kind} fault has unknown field {name!r}; allowed: {sorted(allowed)}")
            if isinstance(value, bool) and allowed[name] is not bool or not isinstance(value, allowed[name]):
                raise SimConfigError(f"{kind} fault field {name!r} has the wrong type: {value!r}")
        for name in _REQUIRED.get(kind, ()):
            if name not in params:
                raise SimConfigError(f"{kind} fault at {at}s needs the field {name!r}")
        for name in ("probability",):
            if name in params and not 0 <= params[name] <= 1:
                raise SimConfigError(f"{kind} probability must be in [0, 1], got {params[name]}")
        if kind == "partition" and not all(
            isinstance(g, list) and all(isinstance(i, int) and not isinstance(i, bool) for i in g)
            for g in params["groups"]
        ):
            raise SimConfigError(f"partition groups must be lists of node indices, got {params['groups']!r}")
        return cls(float(at), kind, params)


@dataclass(frozen=True, slots=True)
class FaultPlan:
    faults: tuple[Fault, ...] = ()

    def to_json(self) -> dict:
        return {"faults": [f.to_json() for f in self.faults]}

    @classmethod
    def from_json(cls, obj: object) -> FaultPlan:
        if isinstance(obj, dict) and "faults" in obj and len(obj) == 1:
            obj = obj["faults"]
        if not isinstance(obj, list):
            raise SimConfigError('a fault plan is {"faults": [...]} or a list of faults')
        return cls(tuple(sorted((Fault.from_json(f) for f in obj), key=lambda f: f.at_s)))

    @classmethod
    def load(cls, path: str | Path) -> FaultPlan:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise SimConfigError(f"cannot read fault plan {path}: {exc.strerror}") from exc
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SimConfigError(f"fault plan {path} is not JSON: {exc}") from exc
        return cls.from_json(obj)

    def byzantine_nodes(self) -> list[int]:
        return sorted({f.params["node"] for f in self.faults if f.kind == "byzantine"})


class Nemesis:
    """Installs a plan into a world and records what it injected."""

    def __init__(self, world: World, plan: FaultPlan, hooks: ByzantineHooks) -> None:
        self.world = world
        self.plan = plan
        self.hooks = hooks
        self.injected: list[tuple[float, str]] = []
        n = len(world.nodes)
        for f in plan.faults:
            nodes = [f.params["node"]] if "node" in f.params else []
            nodes += [i for g in f.params.get("groups", []) for i in g]
            bad = [i for i in nodes if not 0 <= i < n]
            if bad:
                raise SimConfigError(f"{f.kind} fault at {f.at_s}s names node(s) {bad}; the world has 0..{n - 1}")
            if f.kind == "byzantine":  # validate now, not mid-run
                self._wrapper(f)

    def install(self) -> None:
        for fault in self.plan.faults:
            self.world.schedule(fault.at_s, lambda w, f=fault: self.apply(f))

    def _wrapper(self, f: Fault) -> Any:
        w, i = self.world, f.params["node"]
        peers = [n.id for n in w.nodes if n.index != i]
        return make_wrapper(f.params["behaviour"], w.nodes[i].id, peers, w.rng, self.hooks, f.params.get("options", {}))

    def apply(self, f: Fault) -> None:
        w, p, net = self.world, f.params, self.world.net
        self.injected.append((w.now, f.kind))
        undo = None
        if f.kind == "partition":
            net.partition(p["groups"])
            undo = lambda: net.partition([range(len(w.nodes))])  # noqa: E731
        elif f.kind == "heal":
            net.heal()
        elif f.kind == "loss":
            net.loss = p["probability"]
            undo = lambda: setattr(net, "loss", net.base.loss)  # noqa: E731
        elif f.kind == "duplicate":
            net.duplicate = p["probability"]
            undo = lambda: setattr(net, "duplicate", net.base.duplicate)  # noqa: E731
        elif f.kind == "reorder":
            net.reorder, net.reorder_delay_s = p["probability"], p.get("delay_s", net.base.reorder_delay_s)
            undo = lambda: (setattr(net, "reorder", net.base.reorder),  # noqa: E731
                            setattr(net, "reorder_delay_s", net.base.reorder_delay_s))
        elif f.kind == "crash":
            w.crash(p["node"])
            if p.get("restart_after_s") is not None:
                wipe = p.get("wipe", False)
                w.schedule(w.now + p["restart_after_s"], lambda w_: w_.restart(p["node"], wipe=wipe))
        elif f.kind == "restart":
            w.restart(p["node"], wipe=p.get("wipe", False))
        elif f.kind == "clock_jump":
            w.jump_clock(p["node"], p["delta_s"])
        elif f.kind == "slow":
            net.slow[p["node"]] = float(p["factor"])
            undo = lambda: net.slow.__setitem__(p["node"], 1.0)  # noqa: E731
        elif f.kind == "byzantine":
            w.add_wrapper(p["node"], self._wrapper(f), p["behaviour"])
        if undo is not None and p.get("duration_s") is not None:
            w.schedule(w.now + p["duration_s"], lambda w_: undo())

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for _, kind in self.injected:
            out[kind] = out.get(kind, 0) + 1
        return dict(sorted(out.items()))


def generate_plan(
    rng: Random, n_nodes: int, duration_s: float, hooks: ByzantineHooks, *,
    byzantine: bool = True, max_clock_jump_s: float = 300.0,
) -> FaultPlan:
    """A random but reproducible plan: about one fault episode per 10% of the run, all over by
    `duration_s`; up to f = (n-1)//3 (and at most n//10, at least one when f >= 1) Byzantine nodes."""
    faults: list[Fault] = []
    nodes = list(range(n_nodes))
    f_max = (n_nodes - 1) // 3
    if byzantine and f_max >= 1:
        behaviours = available_behaviours(hooks)
        for i in rng.sample(nodes, rng.randint(0, min(f_max, max(1, n_nodes // 10)))):
            b = rng.choice(behaviours)
            options: dict = {"probability": 0.5} if b in ("garbage", "lie") else {}
            faults.append(Fault(0.0, "byzantine", {"node": i, "behaviour": b, "options": options}))
    step = duration_s / 10
    t = step * rng.random()
    while t < duration_s * 0.9:
        t = round(t, 3)
        span = round(min(step * (0.5 + rng.random()), duration_s - t), 3)
        kind = rng.choice(("halves", "bridge", "isolate", "loss", "duplicate", "reorder", "crash", "clock_jump", "slow"))
        node = rng.randrange(n_nodes)
        if kind in ("halves", "bridge", "isolate") and n_nodes >= 2:
            order = nodes[:]
            rng.shuffle(order)
            half = n_nodes // 2
            if kind == "halves":
                groups = [sorted(order[:half]), sorted(order[half:])]
            elif kind == "bridge":
                groups = [sorted(order[:half] + [order[-1]]), sorted(order[half:])]
            else:
                groups = [sorted(i for i in nodes if i != node)]
            faults.append(Fault(t, "partition", {"groups": groups, "duration_s": span}))
        elif kind in ("loss", "duplicate"):
            faults.append(Fault(t, kind, {"probability": round(0.05 + 0.4 * rng.random(), 3), "duration_s": span}))
        elif kind == "reorder":
            faults.append(Fault(t, kind, {"probability": round(0.5 * rng.random(), 3), "delay_s": 2.0, "duration_s": span}))
        elif kind == "crash":
            faults.append(Fault(t, "crash", {"node": node, "restart_after_s": span, "wipe": rng.random() < 0.2}))
        elif kind == "clock_jump":
            faults.append(Fault(t, "clock_jump", {"node": node, "delta_s": round(rng.uniform(-max_clock_jump_s, max_clock_jump_s), 3)}))
        elif kind == "slow":
            faults.append(Fault(t, "slow", {"node": node, "factor": round(2 + 30 * rng.random(), 3), "duration_s": span}))
        t += step * (0.3 + rng.random())
    return FaultPlan(tuple(sorted(faults, key=lambda f: f.at_s)))
