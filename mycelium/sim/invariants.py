"""Pluggable invariant checkers.

An invariant is an object with a `name`, a `kind` and `check(world) -> str | None` (None when it
holds, otherwise a message saying what broke, with node ids and values). Two kinds:
- "safety": must hold at every instant; checked every `check_every` events and at the end of a run;
- "liveness": must hold after the faults stop and a quiet tail has passed; checked once at the end.

`Monitor` runs them, counts checks, and raises `InvariantViolation` on the first failure; the
runner turns that into a report carrying the seed and the replay command.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Hashable, Protocol

SAFETY = "safety"
LIVENESS = "liveness"


class Invariant(Protocol):
    name: str
    kind: str  # SAFETY or LIVENESS

    def check(self, world: Any) -> str | None: ...


class InvariantViolation(AssertionError):
    """An invariant failed. `at_s` and `events` say when (virtual time, events processed)."""

    def __init__(self, invariant: str, kind: str, detail: str, *, at_s: float, events: int) -> None:
        super().__init__(f"{kind} invariant {invariant!r} violated at t={at_s:.6f}s (event {events}): {detail}")
        self.invariant = invariant
        self.kind = kind
        self.detail = detail
        self.at_s = at_s
        self.events = events


@dataclass(slots=True)
class Converged:
    """Liveness: every live honest node's `state_of(core)` is equal (e.g. a CRDT digest)."""

    state_of: Callable[[Any], Hashable]
    name: str = "converged"
    kind: str = LIVENESS

    def check(self, world: Any) -> str | None:
        groups: dict[Hashable, list[str]] = {}
        for node in world.honest_nodes():
            groups.setdefault(self.state_of(node.inner), []).append(node.id)
        if len(groups) <= 1:
            return None
        sizes = sorted(((len(ids), ids[0]) for ids in groups.values()), key=lambda s: (-s[0], s[1]))
        parts = ", ".join(f"{size} like {first}" for size, first in sizes[:5])
        more = f" and {len(sizes) - 5} more" if len(sizes) > 5 else ""
        return f"{len(groups)} distinct states among honest nodes (node count like node id): {parts}{more}"


@dataclass(slots=True)
class EveryHonestNode:
    """Safety (by default): `check_core(core)` returns None or a problem, for every live honest node."""

    check_core: Callable[[Any], str | None]
    name: str
    kind: str = SAFETY

    def check(self, world: Any) -> str | None:
        for node in world.honest_nodes():
            problem = self.check_core(node.inner)
            if problem is not None:
                return f"node {node.id}: {problem}"
        return None


class Monitor:
    """Runs a protocol's invariants against a world and keeps per-invariant results."""

    def __init__(self, invariants: list[Invariant]) -> None:
        names = [inv.name for inv in invariants]
        if len(set(names)) != len(names):
            raise ValueError(f"invariant names must be distinct, got {names}")
        self.invariants = invariants
        self.checks = {inv.name: 0 for inv in invariants}
        self.failed: str | None = None

    def safety(self, world: Any) -> None:
        self._run(world, SAFETY)

    def liveness(self, world: Any) -> None:
        self._run(world, LIVENESS)

    def _run(self, world: Any, kind: str) -> None:
        for inv in self.invariants:
            if inv.kind != kind:
                continue
            self.checks[inv.name] += 1
            problem = inv.check(world)
            if problem is not None:
                self.failed = inv.name
                raise InvariantViolation(inv.name, kind, problem, at_s=world.now, events=world.stats.events)

    def results(self) -> list[dict]:
        """One DTO per invariant: name, kind, checks run, status ("ok", "violated" or "unchecked")."""
        out = []
        for inv in self.invariants:
            n = self.checks[inv.name]
            status = "violated" if inv.name == self.failed else ("ok" if n else "unchecked")
            out.append({"name": inv.name, "kind": inv.kind, "checks": n, "status": status})
        return out
