"""Which members run `k3s server`, which `k3s agent`, and on which datastore: a pure function of the
Primary, so every node computes the same cluster without talking about it.

    candidates = alive sclerotia with an overlay address, ranked by (joined_at_height, node_id)
    stable     = candidates reached directly (profile reach "direct") and without a battery
    servers    = the first `etcd_servers` stable candidates on embedded etcd, if at least
                 `etcd_servers` (≥ 3) stable candidates exist and the network allows etcd;
                 otherwise the first candidate alone, on SQLite through kine
    agents     = every other alive sclerotium and rhizomorph with an overlay address
    none       = hyphae, dead members, members without an overlay address

Why one SQLite server by default: etcd is Raft — crash-tolerant, not Byzantine-tolerant — and needs a
majority of its members up with low, steady latency; on two servers it is *less* available than one,
and on consumer links (Wi-Fi, laptops that sleep) it loses quorum and stalls the API. K3s's
datastore is never our source of truth (consensus decides what runs; the manager recreates every
object from the Primary), so losing it costs a re-sync, not data. Embedded etcd only pays off with
three or more always-on, directly reachable servers, where it keeps the API up through one failure.
Ranking by join height, not trust, keeps the server where it is as long as it lives (trust moves a
little every height; a server that moved on every wobble would restart the cluster); a dead server
is replaced by the next candidate at the next height. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum

from mycelium.identity import NodeId
from mycelium.overlay.addressing import AddressPlan, OverlayConfig, plan_for_primary

API_PORT = 6443  # kube-apiserver (and K3s supervisor) port on a server's overlay address


class K3sMode(str, Enum):
    SERVER = "server"
    AGENT = "agent"
    NONE = "none"


class Datastore(str, Enum):
    SQLITE = "sqlite"  # kine over SQLite: one server
    ETCD = "etcd"  # embedded etcd: an odd number ≥ 3 of servers


@dataclass(frozen=True, slots=True)
class ClusterParams:
    """Cluster shape. Network-wide: read from the Primary's params (`k3s_*` keys) when present."""

    allow_etcd: bool = True  # False keeps one SQLite server whatever the network looks like
    etcd_servers: int = 3  # servers on etcd (odd, ≥ 3): 3 survive one failure, 5 survive two

    def __post_init__(self) -> None:
        if self.etcd_servers < 3 or self.etcd_servers % 2 == 0:
            raise ValueError(f"etcd_servers must be odd and at least 3, not {self.etcd_servers}")

    @classmethod
    def from_primary_params(cls, params: Mapping) -> ClusterParams:
        allow = params.get("k3s_allow_etcd", True)
        servers = params.get("k3s_etcd_servers", 3)
        try:
            return cls(allow if isinstance(allow, bool) else True, servers if isinstance(servers, int) else 3)
        except ValueError:
            return cls()  # a malformed network parameter: keep the safe default shape


@dataclass(frozen=True, slots=True)
class NodeAssignment:
    node: NodeId
    mode: K3sMode
    reason: str  # for `mycelium status`
    address: str = ""  # overlay address (node-ip), "" for mode none
    pod_cidr: str = ""


@dataclass(frozen=True, slots=True)
class ClusterPlan:
    datastore: Datastore
    servers: tuple[NodeId, ...]  # in rank order; servers[0] initialises the cluster
    server_url: str  # what agents (and later etcd servers) join: https://<servers[0] overlay>:6443
    assignments: Mapping[NodeId, NodeAssignment] = field(default_factory=dict)
    addresses: AddressPlan = field(default_factory=AddressPlan)

    def of(self, node: NodeId) -> NodeAssignment:
        return self.assignments.get(node) or NodeAssignment(node, K3sMode.NONE, "not a member of the Primary")


def _stable(profile: Mapping) -> bool:
    return profile.get("reach") == "direct" and profile.get("bat") is False


def plan_cluster(primary, alive: Mapping[NodeId, bool], overlay: OverlayConfig = OverlayConfig()) -> ClusterPlan:
    """The cluster of `primary` given its liveness map (mycelium.ledger.operations.liveness)."""
    params = ClusterParams.from_primary_params(primary.params)
    addresses = plan_for_primary(primary, overlay)
    members = primary.members
    ranked = sorted(members, key=lambda n: (members[n].joined_at_height, n))
    candidates = [n for n in ranked if members[n].role == "sclerotium" and alive.get(n, False) and addresses.get(n)]
    stable = [n for n in candidates if _stable(members[n].profile)]
    if params.allow_etcd and len(stable) >= params.etcd_servers:
        datastore, servers = Datastore.ETCD, tuple(stable[: params.etcd_servers])
        server_reason = f"etcd server {{i}} of {params.etcd_servers} (≥ {params.etcd_servers} stable sclerotia)"
    else:
        datastore, servers = Datastore.SQLITE, tuple(candidates[:1])
        server_reason = "the cluster's only server (SQLite; etcd needs ≥ 3 stable sclerotia)"
    assignments: dict[NodeId, NodeAssignment] = {}
    for node in ranked:
        m, addr = members[node], addresses.get(node)
        if addr is None:
            assignments[node] = NodeAssignment(node, K3sMode.NONE, "no overlay address (the overlay is full)")
        elif not alive.get(node, False):
            assignments[node] = NodeAssignment(node, K3sMode.NONE, "dead in the Primary")
        elif node in servers:
            reason = server_reason.replace("{i}", str(servers.index(node) + 1))
            assignments[node] = NodeAssignment(node, K3sMode.SERVER, reason, addr.address, addr.pod_cidr)
        elif m.role in ("sclerotium", "rhizomorph"):
            assignments[node] = NodeAssignment(node, K3sMode.AGENT, f"{m.role} not chosen as server", addr.address,
                                               addr.pod_cidr)
        else:
            assignments[node] = NodeAssignment(node, K3sMode.NONE, "hyphae run no K3s")
    url = f"https://{addresses.get(servers[0]).address}:{API_PORT}" if servers else ""
    return ClusterPlan(datastore, servers, url, assignments, addresses)
