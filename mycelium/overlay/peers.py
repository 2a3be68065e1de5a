"""The overlay Latent entry and the desired WireGuard peer set: pure functions of Primary + Latent.

Each member publishes one `EntryType.OVERLAY` entry about itself:

    {"pub": <32-byte X25519 public key>, "endpoint": "<host>:<port>"}   # endpoint may be "" (not reachable)

The desired overlay of node `me` is then: its own address (from the Primary's address plan), and one
peer per *other* member that has both an address in the plan and a well-formed overlay entry, with
allowed IPs = that member's overlay address/32 and its pod CIDR. Everything not in the Primary (a
node that left, a non-member's entry) is absent, so applying the result removes it. The Latent entry
only supplies the key and endpoint: addresses come from the Primary, so a Latent claim cannot steal
another member's address or pod block. Pure: no I/O.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass

from mycelium.identity import NodeId
from mycelium.overlay.addressing import AddressPlan, OverlayConfig

MAX_ENDPOINT_CHARS = 64


class OverlayEntryError(ValueError):
    """An overlay entry's body is malformed (the entry is ignored and counted)."""


@dataclass(frozen=True, slots=True)
class Announcement:
    """What a member says about its own overlay presence."""

    public_key: bytes  # 32 bytes
    endpoint: str = ""  # "host:port" where its WireGuard listens, "" if it cannot be reached directly

    def to_body(self) -> dict:
        return {"pub": self.public_key, "endpoint": self.endpoint}


def parse_announcement(body: object) -> Announcement:
    if not isinstance(body, dict) or set(body) != {"pub", "endpoint"}:
        raise OverlayEntryError("overlay entry body must be a map of exactly pub and endpoint")
    pub, endpoint = body["pub"], body["endpoint"]
    if not (isinstance(pub, bytes) and len(pub) == 32):
        raise OverlayEntryError("overlay public key must be 32 bytes")
    if not isinstance(endpoint, str) or len(endpoint) > MAX_ENDPOINT_CHARS:
        raise OverlayEntryError(f"overlay endpoint must be a string of at most {MAX_ENDPOINT_CHARS} characters")
    if endpoint:
        host, sep, port = endpoint.rpartition(":")
        try:
            ipaddress.ip_address(host.strip("[]"))
            ok = sep == ":" and port.isdigit() and 1 <= int(port) <= 65535
        except ValueError:
            ok = False
        if not ok:
            raise OverlayEntryError(f"overlay endpoint {endpoint[:40]!r} is not ip:port")
    return Announcement(pub, endpoint)


@dataclass(frozen=True, slots=True)
class Peer:
    node: NodeId
    public_key: bytes
    endpoint: str  # "" = wait for the peer to reach us
    allowed_ips: tuple[str, ...]  # its overlay address /32 and its pod CIDR


@dataclass(frozen=True, slots=True)
class DesiredOverlay:
    """Everything the shell needs to bring one node's WireGuard interface to the agreed state."""

    node: NodeId
    address: str  # this node's overlay address
    prefix_len: int  # of the overlay CIDR (the interface address is address/prefix_len)
    pod_cidr: str  # this node's own pod block (not routed over the overlay)
    listen_port: int
    peers: tuple[Peer, ...]  # sorted by node id
    skipped: tuple[tuple[NodeId, str], ...] = ()  # members without a peer entry, and why

    def routes(self) -> tuple[str, ...]:
        """Destinations routed into the WireGuard interface: every peer's pod CIDR (its /32 is inside
        the interface's own overlay prefix already)."""
        return tuple(sorted(ip for p in self.peers for ip in p.allowed_ips if not ip.endswith("/32")))


def desired_overlay(me: NodeId, plan: AddressPlan, announcements: Mapping[NodeId, object],
                    config: OverlayConfig = OverlayConfig()) -> DesiredOverlay | None:
    """The desired overlay of `me`, or None when `me` has no address (not a member, or unplaced).

    `announcements` maps node id → overlay entry body (raw, as gossiped; validated here). Callers
    pass only entries whose signature and authorship the spore layer has checked."""
    own = plan.get(me)
    if own is None:
        return None
    peers: list[Peer] = []
    skipped: list[tuple[NodeId, str]] = []
    for node in sorted(plan.by_node):
        if node == me:
            continue
        addr = plan.by_node[node]
        body = announcements.get(node)
        if body is None:
            skipped.append((node, "no overlay entry yet"))
            continue
        try:
            ann = parse_announcement(body)
        except OverlayEntryError as exc:
            skipped.append((node, str(exc)))
            continue
        peers.append(Peer(node, ann.public_key, ann.endpoint, (f"{addr.address}/32", addr.pod_cidr)))
    keys = [p.public_key for p in peers]
    if len(set(keys)) != len(keys):  # two members claiming one key: WireGuard keeps one; keep neither
        dupes = {k for k in keys if keys.count(k) > 1}
        skipped += [(p.node, "public key shared with another member") for p in peers if p.public_key in dupes]
        peers = [p for p in peers if p.public_key not in dupes]
    return DesiredOverlay(me, own.address, config.overlay_prefix_len, own.pod_cidr, config.listen_port,
                          tuple(peers), tuple(sorted(skipped)))
