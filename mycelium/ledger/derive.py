"""What apply_batch derives after a batch's operations: kept sequences, liveness, roles, placement (pure)."""

from __future__ import annotations

from dataclasses import replace

from mycelium.identity import NodeId
from mycelium.ledger import governance
from mycelium.ledger.operation import (
    DEAD_AFTER, DEFAULT_DEAD_AFTER_S, MAX_DEPARTED_SEQS, SEEN, SEQ, SEQ_LEFT, TIME, UPTIME_WARMUP_HEIGHTS,
    WORKLOAD_MEMORY_PERMILLE,
)
from mycelium.roles.assignment import Candidate, Role, RoleError, assign_roles
from mycelium.roles.profile import CapabilityProfile, ProfileError
from mycelium.spores.primary import Member, PrimarySpore


def last_sequence(params: dict, node: NodeId) -> int:
    """The sequence of `node`'s last applied operation (0: none, or forgotten long after it left)."""
    if node in params.get(SEQ, {}):
        return params[SEQ][node]
    return params.get(SEQ_LEFT, {}).get(node, (0, 0))[0]


def _kept_sequences(seqs: dict[NodeId, int], left: dict[NodeId, tuple], members: dict[NodeId, Member], height: int
                    ) -> tuple[dict[NodeId, int], dict[NodeId, list[int]]]:
    """(members' sequences, departed nodes' [sequence, height they left]) — the newest
    MAX_DEPARTED_SEQS departures kept, chosen by (height, id) so every validator drops the same."""
    for node in seqs:
        if node not in members:
            left[node] = (seqs[node], height)  # left (or never became a member) at this height
    kept = {n: seqs[n] for n in sorted(seqs) if n in members}
    departed = sorted((n for n in left if n not in members), key=lambda n: (left[n][1], n))[-MAX_DEPARTED_SEQS:]
    return kept, {n: list(left[n]) for n in sorted(departed)}


def _place(services: dict[str, dict], members: dict[NodeId, Member], alive: dict[NodeId, bool]) -> dict[str, list[NodeId]]:
    """Where every service runs: rendezvous hashing weighted by what members offer (pure)."""
    if not services:
        return {}
    from mycelium.runtime.placement import NodeCapacity, place

    nodes = {}
    for node, m in members.items():
        try:
            profile = CapabilityProfile.from_wire(m.profile)
        except ProfileError:
            continue  # no profile yet: nothing is placed on it
        labels = m.caps.get("labels") if isinstance(m.caps.get("labels"), dict) else {}
        nodes[node] = NodeCapacity(role=m.role, labels=labels, cpu_millicores=profile.cores * 1000,
                                   memory_bytes=profile.ram_total_bytes * WORKLOAD_MEMORY_PERMILLE // 1000,
                                   alive=alive.get(node, True))
    placed = place(services, nodes)
    return {name: sorted(placed.get(name, [])) for name in sorted(services)}


def liveness(primary: PrimarySpore) -> dict[NodeId, bool]:
    """Which members the Primary considers alive (see the module docstring)."""
    now = primary.params.get(TIME, 0)
    seen = primary.params.get(SEEN, {})
    dead_after = primary.params.get(DEAD_AFTER, DEFAULT_DEAD_AFTER_S)
    return {n: now - seen.get(n, now) <= dead_after for n in primary.members}


def _candidates(members: dict[NodeId, Member], height: int, alive: dict[NodeId, bool] | None = None
                ) -> dict[NodeId, Candidate]:
    out: dict[NodeId, Candidate] = {}
    for node, m in members.items():
        try:
            profile = CapabilityProfile.from_wire(m.profile)
            cap = Role(m.caps.get("max_role", "sclerotium"))
            age = max(0, height - m.joined_at_height)
            uptime = 1000 if m.joined_at_height == 0 else min(1000, 1000 * age // UPTIME_WARMUP_HEIGHTS)
            out[node] = Candidate(profile=profile, trust=m.trust_ppm // 1000, cap=cap, uptime_permille=uptime,
                                  alive=True if alive is None else alive.get(node, True))
        except (ProfileError, RoleError, ValueError):
            continue  # no usable profile yet: keeps its role until it publishes one
    return out


def _reassign_roles(members: dict[NodeId, Member], height: int, alive: dict[NodeId, bool],
                    max_validators: int = governance.PARAMS["max_validators"].default) -> dict[NodeId, Member]:
    candidates = _candidates(members, height, alive)
    if not candidates:
        return members
    current = {n: Role(m.role) for n, m in members.items()}
    assignment = assign_roles(candidates, current, _role_config(max_validators))
    return {n: (replace(m, role=assignment.roles[n].value) if n in assignment.roles else m)
            for n, m in sorted(members.items())}


def role_reasons(primary: PrimarySpore) -> dict[NodeId, tuple[str, ...]]:
    """The role rule's deciding facts for each member (for `mycelium status`)."""
    members = primary.members
    candidates = _candidates(members, primary.height, liveness(primary))
    if not candidates:
        return {}
    prior = {n: Role(m.role) for n, m in members.items()}
    return assign_roles(candidates, prior).reasons


def _role_config(max_validators: int):
    from mycelium.roles.fitness import DEFAULT_ROLE_CONFIG

    if max_validators == DEFAULT_ROLE_CONFIG.max_validators:
        return DEFAULT_ROLE_CONFIG
    return replace(DEFAULT_ROLE_CONFIG, max_validators=max_validators)
