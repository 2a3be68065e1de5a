"""Which nodes run which service: a pure, deterministic function every validator computes alike.

Weighted rendezvous (highest-random-weight) hashing. For service S and node N:

    h      = first 8 bytes of BLAKE2b(canonical([S, N]), person="mycelium-place") as an integer
    u      = (h + 1) / 2^64                      # uniform in (0, 1]
    L      = -log2(u) = 64 - log2(h + 1)         # computed in fixed point with 32 fractional bits
    score  = weight(N) * 2^96 // L               # integer division; L is clamped to ≥ 1

`weight / -ln(u)` is the classic weighted-HRW score (a node of weight w wins a fair lottery w times as
often); using log2 instead of ln multiplies every score by the same constant, so the ranking is the
same. Everything is integer arithmetic (`_log2_fixed` is the bit-by-bit squaring algorithm), so no
platform's floating point can make two validators disagree. Ties (astronomically rare) go to the
smaller node id.

weight(N) = max(1, min(cpu_millicores // 100, memory_bytes // 128 MiB)): the node's offered capacity
in "standard slots". It uses the capacity the node *offers to workloads*, not what is left after
this placement, so a node's weight — and therefore every ranking — does not depend on other services.

Then, service by service in name order, each service takes the best-ranked eligible nodes that still
have room for its resource request: eligible = alive, role sclerotium or rhizomorph (hyphae never run
workloads), and matching the selector (roles, labels, node ids). One replica per node (anti-affinity);
`replicas: all` means every eligible node with room. Capacity placed for earlier services is
subtracted before later ones.

Movement: while capacity does not bind, removing a node moves only the replicas it held, and adding
one takes a replica only where it out-ranks the current holder. When capacity binds, a moved replica
can displace a later service's replica (the price of honouring resources without previous-placement
stickiness); `tests/property/test_placement_properties.py` checks both the exact and the capacity rule.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from mycelium.encoding import hash_value
from mycelium.identity import NodeId
from mycelium.runtime.spec import ELIGIBLE_ROLES, ServiceSpec

WEIGHT_CPU_MILLICORES = 100  # one weight slot = 0.1 core ...
WEIGHT_MEMORY_BYTES = 128 * 2**20  # ... and 128 MiB
_FRAC_BITS = 32  # fixed-point precision of -log2(u); 32 bits separates scores far below hash collisions
_PERSON = b"mycelium-place"


@dataclass(frozen=True, slots=True)
class NodeCapacity:
    """What a node offers to workloads, as recorded in the Primary."""

    role: str  # "sclerotium" | "rhizomorph" | "hypha"
    labels: Mapping[str, str] = field(default_factory=dict, hash=False)
    cpu_millicores: int = 0  # offered to workloads (not counting what this placement puts there)
    memory_bytes: int = 0  # offered to workloads
    alive: bool = True  # False = failed/left: nothing is placed on it

    def weight(self) -> int:
        return max(1, min(self.cpu_millicores // WEIGHT_CPU_MILLICORES,
                          self.memory_bytes // WEIGHT_MEMORY_BYTES))


def _log2_fixed(x: int) -> int:
    """floor-ish log2(x) * 2^32 for an integer x ≥ 1, using integers only."""
    n = x.bit_length() - 1
    y = (x << _FRAC_BITS) >> n  # x / 2^n in [1, 2), fixed point
    result = n << _FRAC_BITS
    for bit in range(_FRAC_BITS - 1, -1, -1):
        y = (y * y) >> _FRAC_BITS
        if y >= 2 << _FRAC_BITS:
            y >>= 1
            result |= 1 << bit
    return result


@lru_cache(maxsize=65536)  # pure; placement recomputes the same pairs at every membership change
def rendezvous_score(service: str, node: NodeId, weight: int) -> int:
    """The integer weighted-HRW score of `node` for `service` (higher wins)."""
    h = int.from_bytes(hash_value([service, node], person=_PERSON)[:8], "big")
    neg_log2_u = max(1, (64 << _FRAC_BITS) - _log2_fixed(h + 1))
    return (weight << 96) // neg_log2_u


def _as_spec(value: ServiceSpec | Mapping[str, Any]) -> ServiceSpec:
    return value if isinstance(value, ServiceSpec) else ServiceSpec.from_wire(value)


def eligible(spec: ServiceSpec, node_id: NodeId, node: NodeCapacity) -> bool:
    """May `node` run `spec` at all (ignoring capacity)?"""
    sel = spec.selector
    if not node.alive or node.role not in ELIGIBLE_ROLES:
        return False
    if sel.roles and node.role not in sel.roles:
        return False
    if sel.nodes and node_id not in sel.nodes:
        return False
    return all(node.labels.get(k) == v for k, v in sel.labels)


def rank(service: str, candidates: Mapping[NodeId, NodeCapacity]) -> list[NodeId]:
    """Candidates best-first by weighted rendezvous score."""
    scored = [(-rendezvous_score(service, nid, n.weight()), nid) for nid, n in candidates.items()]
    return [nid for _, nid in sorted(scored)]


def place(services: Mapping[str, ServiceSpec | Mapping[str, Any]],
          nodes: Mapping[NodeId, NodeCapacity]) -> dict[str, list[NodeId]]:
    """Nodes for every service, best-ranked first. Raises SpecError for a malformed wire spec."""
    specs = {name: _as_spec(s) for name, s in services.items()}
    room = {nid: [n.cpu_millicores, n.memory_bytes] for nid, n in nodes.items()
            if n.alive and n.role in ELIGIBLE_ROLES}
    placement: dict[str, list[NodeId]] = {}
    for name in sorted(specs):
        spec = specs[name]
        cpu, memory = spec.resources.cpu_millicores, spec.resources.memory_bytes
        candidates = {nid: nodes[nid] for nid in room if eligible(spec, nid, nodes[nid])}
        want = len(candidates) if spec.replicas == "all" else spec.replicas
        chosen: list[NodeId] = []
        for nid in rank(name, candidates):
            if len(chosen) >= want:
                break
            free_cpu, free_memory = room[nid]
            if free_cpu >= cpu and free_memory >= memory:
                room[nid] = [free_cpu - cpu, free_memory - memory]
                chosen.append(nid)
        placement[name] = chosen
    return placement


def shortfall(services: Mapping[str, ServiceSpec | Mapping[str, Any]],
              placement: Mapping[str, list[NodeId]]) -> dict[str, int]:
    """Replicas each service wanted but did not get (0 for `replicas: all`); for `mycelium services`."""
    out = {}
    for name, value in services.items():
        spec = _as_spec(value)
        want = len(placement.get(name, [])) if spec.replicas == "all" else spec.replicas
        out[name] = max(0, want - len(placement.get(name, [])))
    return out
