"""The role rule: who is sclerotium, rhizomorph or hypha. A pure, deterministic function of the Primary.

Every validator runs `assign_roles` on the same Primary and must get the same answer, so it is checked
inside consensus like any other operation: no I/O, no clock, no floats, no dict-order dependence
(every iteration is over sorted node ids; every tie is broken by node id).

The validator set (sclerotia)
-----------------------------
*Seat-holders* are the current sclerotia that are still members and whose operator still allows
the role; *challengers* are the other members fit to be promoted (alive, plugged in, enough RAM,
disk, uptime and trust — see `fitness.sclerotium_blockers`). The set size is

    n = largest 3f+1 ≤ min(seat-holders + challengers, max_validators)        (1, 4, 7, …)

Seat-holders count whether they are alive or not. This is the "never shrink because members are
down" rule: if a down validator made the set smaller, a network of 4 with one crash would hand all
control to a single node — exactly when it can least afford it. Seats are then filled in order:

1. healthy seat-holders (alive and still fit, with the lower "keep" bars), best score first;
2. challengers, best score first — this is how a dead or unfit validator is *replaced*;
3. unfit seat-holders (alive but on battery past the grace period, or trust/uptime under the keep
   bar), then dead ones — they keep their seat only while nobody can take it.

The set therefore shrinks only when seat-holders leave the network or are capped by their operator
(both deliberate), never because of liveness, battery or trust. (Consensus needs a quorum of the
current set to decide any assignment at all, so a set that has lost its quorum is frozen anyway.)
Finally, at most `max_voluntary_swaps` healthy validators per assignment are displaced by a
challenger whose score beats theirs by more than `swap_margin` (hysteresis: no ping-pong between two
similar nodes). If there are neither seat-holders nor challengers — a brand-new network, or only
laptops on battery — the best member allowed to validate becomes the sole sclerotium, so the set is
never empty while a capable node exists. That is how the first node of a network becomes its sclerotium.

Rhizomorphs and hyphae
----------------------
Every other member becomes a rhizomorph if it may hold workloads (`fitness.rhizomorph_blockers`:
keep bars for nodes that hold workloads now, promote bars for the rest), else a hypha. There is no
quota on rhizomorphs, so an eligible node is never starved: it becomes a rhizomorph (or a sclerotium)
in the very assignment where it is first eligible. For the validator set the guarantee is weaker,
and exact: an eligible challenger takes any free seat at once (growth, a dead or unfit validator),
and with inputs held still, repeated assignments reach a fixed point within `max_validators`
steps where no challenger outscores any healthy validator by more than `swap_margin`.

What the caller (consensus, at an epoch boundary) must feed in
---------------------------------------------------------------
- `alive` must already be smoothed: the redundant-execution verdict after "no liveness for a
  configured time". A validator whose verdict flaps is replaced when it is dead and, once back, can
  retake a seat only by beating the weakest validator by `swap_margin` — the rule adds no memory of
  its own beyond the current roles.
- `battery_epochs` counts consecutive epochs on battery from the Primary's history; without it
  (None) an incumbent on battery is treated as past its grace period at once.
- Apply the result only at a height boundary, and refuse it in read-only mode (`readonly.py`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from mycelium.identity import NodeId
from mycelium.roles.fitness import (
    DEFAULT_ROLE_CONFIG,
    PERMILLE,
    Candidate,
    Role,
    RoleConfig,
    RoleError,
    facts,
    rhizomorph_blockers,
    sclerotium_blockers,
    score,
    short_id,
)

__all__ = [
    "Assignment",
    "Candidate",
    "DEFAULT_ROLE_CONFIG",
    "PERMILLE",
    "Role",
    "RoleConfig",
    "RoleError",
    "assign_roles",
    "bft_size",
]


def bft_size(available: int) -> int:
    """The largest n = 3f+1 with n ≤ available (0 when nothing is available): 1, 4, 7, 10, …"""
    if available < 1:
        return 0
    return (available - 1) // 3 * 3 + 1


@dataclass(frozen=True, slots=True)
class Assignment:
    """The rule's answer: a role and the deciding facts for every candidate."""

    roles: dict[NodeId, Role]
    reasons: dict[NodeId, tuple[str, ...]]  # short human strings for `mycelium status`
    validators: tuple[NodeId, ...] = field(default=())  # the sclerotia, sorted

    def role_of(self, node_id: NodeId) -> Role | None:
        return self.roles.get(node_id)

    def changes(self, current: Mapping[NodeId, Role]) -> dict[NodeId, tuple[Role | None, Role]]:
        """{node: (old role or None, new role)} for every node whose role differs from `current`."""
        return {n: (current.get(n), r) for n, r in sorted(self.roles.items()) if current.get(n) is not r}

    def to_wire(self) -> dict[str, Any]:
        return {
            "roles": {n: r.value for n, r in self.roles.items()},
            "why": {n: list(why) for n, why in self.reasons.items()},
        }


def assign_roles(
    candidates: Mapping[NodeId, Candidate],
    current: Mapping[NodeId, Role],
    config: RoleConfig = DEFAULT_ROLE_CONFIG,
) -> Assignment:
    """Roles for every member in `candidates`, given the roles in force (`current`; nodes absent
    from it have none yet, entries for non-members are ignored). Pure and deterministic."""
    for node_id, cand in candidates.items():
        if not isinstance(cand, Candidate):
            raise RoleError(f"candidate for {node_id!r} must be a Candidate, got {type(cand).__name__}")
    ids = sorted(candidates)
    now = {n: _role(current.get(n)) for n in ids}
    scores = {n: score(candidates[n], config) for n in ids}
    reasons: dict[NodeId, list[str]] = {n: [] for n in ids}

    validators = _choose_validators(ids, candidates, now, scores, reasons, config)

    roles: dict[NodeId, Role] = {}
    for n in ids:
        c = candidates[n]
        if n in validators:
            roles[n] = Role.SCLEROTIUM
            reasons[n].insert(0, facts(c))
            continue
        holds = now[n] in (Role.RHIZOMORPH, Role.SCLEROTIUM)
        blockers = rhizomorph_blockers(c, incumbent=holds, config=config)
        if blockers:
            roles[n] = Role.HYPHA
            reasons[n][:0] = blockers
        else:
            roles[n] = Role.RHIZOMORPH
            reasons[n].insert(0, facts(c))
            if c.cap is Role.RHIZOMORPH:
                reasons[n].append("capped at rhizomorph by operator")
    return Assignment(
        roles=roles,
        reasons={n: tuple(dict.fromkeys(reasons[n])) for n in ids},  # dedupe, keep order
        validators=tuple(sorted(validators)),
    )


def _role(value: object) -> Role | None:
    if value is None:
        return None
    if not isinstance(value, Role):
        raise RoleError(f"current role must be a Role, got {value!r}")
    return value


def _choose_validators(
    ids: list[NodeId],
    candidates: Mapping[NodeId, Candidate],
    now: Mapping[NodeId, Role | None],
    scores: Mapping[NodeId, int],
    reasons: dict[NodeId, list[str]],
    config: RoleConfig,
) -> set[NodeId]:
    def best_first(nodes: list[NodeId]) -> list[NodeId]:
        return sorted(nodes, key=lambda n: (-scores[n], n))

    holders = [n for n in ids if now[n] is Role.SCLEROTIUM and candidates[n].cap.allows(Role.SCLEROTIUM)]
    holder_set = set(holders)
    for n in ids:
        if now[n] is Role.SCLEROTIUM and n not in holder_set:
            reasons[n].append(f"capped at {candidates[n].cap.value} by operator")
    unfit_why = {n: sclerotium_blockers(candidates[n], incumbent=True, config=config) for n in holders}
    healthy = best_first([n for n in holders if candidates[n].alive and not unfit_why[n]])
    unfit = best_first([n for n in holders if candidates[n].alive and unfit_why[n]])
    dead = best_first([n for n in holders if not candidates[n].alive])
    challengers = best_first(
        [
            n
            for n in ids
            if n not in holder_set and not sclerotium_blockers(candidates[n], incumbent=False, config=config)
        ]
    )

    size = bft_size(min(len(holders) + len(challengers), config.max_validators))
    if size == 0:
        return _sole_sclerotium(ids, candidates, scores, reasons)

    chosen = healthy[:size]
    promoted = challengers[: size - len(chosen)]
    waiting = challengers[len(promoted) :]
    chosen += promoted
    chosen += (unfit + dead)[: size - len(chosen)]

    # Voluntary swaps: a clearly better challenger displaces the weakest healthy validator.
    swapped: set[NodeId] = set()
    for _ in range(config.max_voluntary_swaps):
        kept_healthy = [n for n in chosen if n in healthy]
        if not waiting or not kept_healthy:
            break
        weakest = min(kept_healthy, key=lambda n: (scores[n], n))
        best = waiting[0]
        if scores[best] <= scores[weakest] + config.swap_margin:
            break
        chosen[chosen.index(weakest)] = best
        waiting.pop(0)
        swapped.update((best, weakest))
        reasons[best].append(f"replaces {short_id(weakest)} (score {scores[best]} vs {scores[weakest]})")
        reasons[weakest].append(f"replaced by {short_id(best)} (score {scores[best]} vs {scores[weakest]})")

    chosen_set = set(chosen)
    _explain(holders, chosen_set, promoted, swapped, healthy, unfit_why, candidates, size, reasons)
    return chosen_set


def _explain(
    holders: list[NodeId],
    chosen: set[NodeId],
    promoted: list[NodeId],
    swapped: set[NodeId],
    healthy: list[NodeId],
    unfit_why: Mapping[NodeId, list[str]],
    candidates: Mapping[NodeId, Candidate],
    size: int,
    reasons: dict[NodeId, list[str]],
) -> None:
    """Pair each dropped seat-holder with the challenger that took its seat, for status lines."""

    def failure(n: NodeId) -> str:
        return "dead" if not candidates[n].alive else "; ".join(unfit_why[n])

    dropped = sorted(
        (n for n in holders if n not in chosen and n not in swapped), key=lambda n: (candidates[n].alive, n)
    )
    newcomers = [n for n in promoted if n not in swapped]
    for old, new in zip(dropped, newcomers):
        if not candidates[old].alive:
            reasons[new].append(f"replaces dead validator {short_id(old)}")
            reasons[old].append(f"replaced by {short_id(new)} while dead")
        else:
            reasons[new].append(f"replaces validator {short_id(old)} ({failure(old)})")
            reasons[old].append(f"replaced by {short_id(new)} ({failure(old)})")
    for new in newcomers[len(dropped) :]:
        reasons[new].append(f"promoted: validator set of {size}")
    for old in dropped[len(newcomers) :]:
        reasons[old].append(f"validator set shrank to {size}")
    for n in holders:
        if n in chosen and n not in healthy:
            reasons[n].append(f"kept as validator ({failure(n)}): no replacement")


def _sole_sclerotium(
    ids: list[NodeId],
    candidates: Mapping[NodeId, Candidate],
    scores: Mapping[NodeId, int],
    reasons: dict[NodeId, list[str]],
) -> set[NodeId]:
    """No seat-holder and no fit challenger: the best member allowed to validate (alive first) is
    the sole sclerotium, so that consensus can run at all. Empty only if every operator capped."""
    capable = [n for n in ids if candidates[n].cap.allows(Role.SCLEROTIUM)]
    if not capable:
        return set()
    pick = min(capable, key=lambda n: (not candidates[n].alive, -scores[n], n))
    reasons[pick].append("first node of the network" if len(ids) == 1 else "sole validator: no other node is fit")
    return {pick}
