"""What this node must do so that what runs here matches what the Primary places here (pure core).

Each service placed on a node runs as exactly one instance there (placement is anti-affine), whose
instance id is the service name. Given the desired services, the observed instances (from the driver)
and optionally a network-wide view of the service's replicas (from service spores), `reconcile`
returns actions for the shell to execute in order:

    Stop     an instance whose service is no longer placed here;
    Restart  stop then start with the desired spec: a rolling-update step (the running version is
             not the desired one), or an instance the driver has given up on although its policy
             is `always`;
    Start    a desired service with no instance here.

The driver itself restarts crashed processes (policy, backoff); the reconciler never fights it.

Rolling updates honour `update.maxUnavailable` network-wide: with the replicas of a service ordered
by placement rank, and `unavailable` = replicas currently not available (any version),
an outdated *available* replica may be replaced only if fewer than
    budget = maxUnavailable − unavailable
outdated available replicas rank before it. Every node evaluates the same rule on (nearly) the same
view, so the first `budget` replicas update, then the next ones once those report available again.
An outdated replica that is not available anyway is replaced at once (that costs no availability).
A stale view can let one extra replica go down briefly; it never stalls the update.
Without a view, the node's own instance is the only replica it knows, and it updates.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from mycelium.identity import NodeId
from mycelium.runtime.driver import InstanceState
from mycelium.runtime.spec import ServiceSpec


@dataclass(frozen=True, slots=True)
class ObservedInstance:
    service: str
    version: str  # ServiceSpec.version() of what runs
    state: InstanceState
    final: bool = False  # the driver stopped supervising it (exited under its restart policy)


@dataclass(frozen=True, slots=True)
class ReplicaView:
    node: NodeId
    version: str
    available: bool


@dataclass(frozen=True, slots=True)
class Start:
    instance_id: str
    spec: ServiceSpec


@dataclass(frozen=True, slots=True)
class Stop:
    instance_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class Restart:
    instance_id: str
    spec: ServiceSpec
    reason: str


Action = Start | Stop | Restart


def desired_here(services: Mapping[str, ServiceSpec], placement: Mapping[str, Sequence[NodeId]],
                 node: NodeId) -> dict[str, ServiceSpec]:
    """The services placement puts on `node`."""
    return {name: spec for name, spec in services.items() if node in placement.get(name, ())}


def reconcile(node: NodeId, desired: Mapping[str, ServiceSpec], observed: Mapping[str, ObservedInstance],
              replicas: Mapping[str, Sequence[ReplicaView]] | None = None) -> list[Action]:
    """Actions that converge this node: all Stops, then Restarts, then Starts, each sorted by id.

    `replicas[service]` lists the service's replicas in placement-rank order, network-wide (this
    node included); missing means "only what this node sees".
    """
    stops: list[Action] = []
    restarts: list[Action] = []
    starts: list[Action] = []
    for iid in sorted(observed):
        seen = observed[iid]
        spec = desired.get(seen.service)
        if spec is None or iid != seen.service:
            stops.append(Stop(iid, f"service {seen.service} is no longer placed on this node"))
    for name in sorted(desired):
        spec = desired[name]
        seen = observed.get(name)
        if seen is None or seen.service != name:
            starts.append(Start(name, spec))
            continue
        version = spec.version()
        if seen.version != version:
            if not seen.state.available:
                restarts.append(Restart(name, spec, f"update to {version}: the old version is not available anyway"))
            elif _my_turn(node, spec, version, (replicas or {}).get(name)):
                restarts.append(Restart(name, spec, f"rolling update {seen.version} -> {version}"))
        elif seen.final and spec.restart.policy == "always":
            restarts.append(Restart(name, spec, "the driver stopped restarting it, but the policy is always"))
    return stops + restarts + starts


def _my_turn(node: NodeId, spec: ServiceSpec, version: str, view: Sequence[ReplicaView] | None) -> bool:
    if not view:
        return True
    unavailable = sum(1 for r in view if not r.available)
    budget = spec.update.max_unavailable - unavailable
    ahead = 0
    for replica in view:
        if replica.node == node:
            return ahead < budget
        if replica.available and replica.version != version:
            ahead += 1
    return ahead < budget  # this node is not in the view yet (fresh placement): it is last in line
