"""Overlay addresses and pod CIDRs: a pure, deterministic function of the Primary's member set.

Every member gets a *slot* s in [0, slots); its overlay address is overlay_cidr's network address
+ 1 + s, and its pod CIDR is the s-th /pod_prefix_len block of cluster_cidr. With the defaults (K3s's
own cluster CIDR 10.42.0.0/16 cut into /24s, overlay 10.99.0.0/16) there are 256 slots.

Slot rule (collisions handled deterministically, so every node computes the same map):

    preferred(N) = int(BLAKE2b(N, person="myc-overlay")[:8]) mod slots
    members sorted by (joined_at_height, node_id); each takes preferred(N), or on collision the next
    free slot upward (mod slots) — linear probing.

Earlier members never move when later ones join (they were placed first). When a member leaves, a
later member that had probed past its slot moves back to a freer one: its address changes, and
K3s on that node is restarted with the new node-ip by the supervisor (config change). Members
beyond `slots` get no address (`unplaced`): the network is larger than the overlay; raise
pod_prefix_len or widen cluster_cidr (a network parameter) — they stay on the process runtime.
Pure: no I/O.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from mycelium.encoding import digest
from mycelium.identity import NodeId

_PERSON = b"myc-overlay"


@dataclass(frozen=True, slots=True)
class OverlayConfig:
    """Address plan of the overlay. Every node of a network must use the same values."""

    overlay_cidr: str = "10.99.0.0/16"  # node addresses on the WireGuard interface; outside common LANs
    cluster_cidr: str = "10.42.0.0/16"  # K3s's default cluster CIDR: all pod addresses
    pod_prefix_len: int = 24  # one pod block per node (K3s's default node-cidr-mask-size): 254 pods
    service_cidr: str = "10.43.0.0/16"  # K3s's default service CIDR (ClusterIPs; not routed by us)
    listen_port: int = 51871  # UDP port of the WireGuard interface on every node
    interface: str = "myc-wg0"  # interface name (≤ 15 characters)

    def __post_init__(self) -> None:
        overlay = ipaddress.IPv4Network(self.overlay_cidr)
        cluster = ipaddress.IPv4Network(self.cluster_cidr)
        if not cluster.prefixlen <= self.pod_prefix_len <= 30:
            raise ValueError(f"pod_prefix_len {self.pod_prefix_len} must be in [{cluster.prefixlen}, 30]")
        if overlay.num_addresses - 2 < self.slots:
            raise ValueError(f"overlay {overlay} has fewer host addresses than the {self.slots} pod blocks")
        if overlay.overlaps(cluster) or overlay.overlaps(ipaddress.IPv4Network(self.service_cidr)):
            raise ValueError("overlay, cluster and service CIDRs must not overlap")
        if not 1 <= len(self.interface) <= 15:
            raise ValueError(f"interface name {self.interface!r} must be 1-15 characters")

    @property
    def slots(self) -> int:
        return 2 ** (self.pod_prefix_len - ipaddress.IPv4Network(self.cluster_cidr).prefixlen)

    def address_of_slot(self, slot: int) -> str:
        return str(ipaddress.IPv4Network(self.overlay_cidr).network_address + 1 + slot)

    def pod_cidr_of_slot(self, slot: int) -> str:
        cluster = ipaddress.IPv4Network(self.cluster_cidr)
        size = 2 ** (32 - self.pod_prefix_len)
        return str(ipaddress.IPv4Network((int(cluster.network_address) + slot * size, self.pod_prefix_len)))

    @property
    def overlay_prefix_len(self) -> int:
        return ipaddress.IPv4Network(self.overlay_cidr).prefixlen


@dataclass(frozen=True, slots=True)
class NodeAddress:
    node: NodeId
    slot: int
    address: str  # overlay IPv4 address (node-ip for K3s)
    pod_cidr: str  # this node's pod block, routed to it over the overlay


@dataclass(frozen=True, slots=True)
class AddressPlan:
    by_node: Mapping[NodeId, NodeAddress] = field(default_factory=dict)
    unplaced: tuple[NodeId, ...] = ()  # members beyond the slot count (no overlay address)

    def get(self, node: NodeId) -> NodeAddress | None:
        return self.by_node.get(node)


def preferred_slot(node: NodeId, slots: int) -> int:
    return int.from_bytes(digest(node.encode(), person=_PERSON)[:8], "big") % slots


def assign_addresses(members: Iterable[tuple[NodeId, int]], config: OverlayConfig = OverlayConfig()) -> AddressPlan:
    """Slots for `members` given as (node id, joined_at_height) pairs; see the module doc."""
    slots = config.slots
    taken: dict[int, NodeId] = {}
    by_node: dict[NodeId, NodeAddress] = {}
    unplaced: list[NodeId] = []
    for node, _joined in sorted(set(members), key=lambda m: (m[1], m[0])):
        if len(taken) >= slots:
            unplaced.append(node)
            continue
        slot = preferred_slot(node, slots)
        while slot in taken:
            slot = (slot + 1) % slots
        taken[slot] = node
        by_node[node] = NodeAddress(node, slot, config.address_of_slot(slot), config.pod_cidr_of_slot(slot))
    return AddressPlan(by_node, tuple(unplaced))


def plan_for_primary(primary, config: OverlayConfig = OverlayConfig()) -> AddressPlan:
    """The address plan of a Primary spore's members."""
    return assign_addresses(((n, m.joined_at_height) for n, m in primary.members.items()), config)
