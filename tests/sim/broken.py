"""Deliberately broken merge rules, as scenarios the CLI can load (`--protocol tests.sim.broken:tie_flip`).

Used to prove that the invariants catch a wrong merge and that the printed replay command
reproduces the failure in a fresh process.
"""

from __future__ import annotations

from typing import Any

from mycelium.sim import register
from mycelium.sim.protocols import Scenario, ScenarioParams


def ties_keep_mine(mine: register.RegisterValue, theirs: register.RegisterValue) -> register.RegisterValue:
    """Non-commutative: an equal value is resolved by arrival order (first one kept), not by writer id."""
    return theirs if theirs.value > mine.value else mine


def lowest_wins(mine: register.RegisterValue, theirs: register.RegisterValue) -> register.RegisterValue:
    """Commutative but wrong: the register only ever goes down, losing every newer write."""
    return min(mine, theirs, key=lambda r: (r.value, r.writer))


class _BrokenRegister(register.RegisterGossip):
    rule: Any = None

    def merge(self, mine, theirs):  # type: ignore[override]
        return type(self).rule(mine, theirs)


def _scenario_with(rule, params: ScenarioParams) -> Scenario:
    cls = type(f"Register_{rule.__name__}", (_BrokenRegister,), {"rule": staticmethod(rule)})
    scenario = register.scenario(params)
    honest = scenario.make_core

    def make_core(node_id: str, persisted: Any) -> register.RegisterGossip:
        core = honest(node_id, persisted)
        core.__class__ = cls  # same state, broken merge
        return core

    scenario.make_core = make_core
    return scenario


def tie_flip(params: ScenarioParams) -> Scenario:
    return _scenario_with(ties_keep_mine, params)


def lowest(params: ScenarioParams) -> Scenario:
    return _scenario_with(lowest_wins, params)
