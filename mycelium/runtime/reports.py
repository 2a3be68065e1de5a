"""Service spores: what each node says about the replicas it runs, and the network-wide view of every
service built from the Primary and those reports (pure: no trio, no I/O, the clock is an argument).

A node that runs (or was placed to run) a replica of service S authors one Latent entry of type
SERVICE named S, re-signed whenever it changes and at least every refresh period:

    {"v": 1, "health": "healthy", "endpoints": ["192.168.1.7:41235"], "restarts": 0,
     "spec_version": "3f2a…", "message": ""}

Entries cannot be deleted, so a replica that stops says so (health "stopped"). A report counts only
while the Primary places S on its author (anything else is a leftover of an older placement) and
while it is fresh: a report older than `stale_after_ms` (by the reader's clock) shows as "stale",
because its author stopped refreshing it (crashed, cut off). The Primary decides *where* replicas
should run (desired); the reports say what actually runs there (running, endpoints, health).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

from mycelium.identity import NodeId
from mycelium.runtime.driver import InstanceState
from mycelium.runtime.reconciler import ReplicaView
from mycelium.runtime.spec import ServiceSpec

BODY_VERSION = 1  # bump (and keep reading the old one) when the body below changes
MAX_ENDPOINTS = 16  # endpoints per replica report (one per port)
MAX_MESSAGE_CHARS = 300  # keeps a report far below the Latent body limit (4 KiB)


class ReplicaHealth(str, Enum):
    """A replica's state as reported network-wide. Append only (the values are on the wire)."""

    PENDING = "pending"  # placed, nothing reported yet (the node is starting it, or has not seen the Primary)
    STARTING = "starting"  # spawned, health check not yet passed
    RUNNING = "running"  # spawned, no health check declared
    HEALTHY = "healthy"  # health check passes
    UNHEALTHY = "unhealthy"  # health check fails
    EXITED = "exited"  # not running; waiting to restart, or finished under its restart policy
    CRASH_LOOP = "crash_loop"  # failing quickly again and again; restarts continue with backoff
    FAILED = "failed"  # could not be started (port in use, missing program…); retried with backoff
    STOPPED = "stopped"  # the node stopped it (undeployed, moved elsewhere, node shutting down)
    STALE = "stale"  # the last report is too old to trust (never on the wire; computed by readers)

    @property
    def available(self) -> bool:
        """Serving traffic as far as anyone can tell: counts as running, its endpoints resolve."""
        return self in (ReplicaHealth.RUNNING, ReplicaHealth.HEALTHY)


_FROM_INSTANCE = {
    InstanceState.STARTING: ReplicaHealth.STARTING,
    InstanceState.RUNNING: ReplicaHealth.RUNNING,
    InstanceState.HEALTHY: ReplicaHealth.HEALTHY,
    InstanceState.UNHEALTHY: ReplicaHealth.UNHEALTHY,
    InstanceState.EXITED: ReplicaHealth.EXITED,
    InstanceState.CRASH_LOOP: ReplicaHealth.CRASH_LOOP,
}
_WIRE_HEALTH = frozenset(h.value for h in ReplicaHealth) - {ReplicaHealth.STALE.value}


def replica_health(state: InstanceState) -> ReplicaHealth:
    return _FROM_INSTANCE[state]


@dataclass(frozen=True, slots=True)
class ReplicaReport:
    """One node's replica of one service, as it reports it."""

    node: NodeId
    service: str
    health: ReplicaHealth
    endpoints: tuple[str, ...] = ()  # "host:port", one per port of the spec, in the spec's order
    restarts: int = 0
    spec_version: str = ""  # ServiceSpec.version() of what runs ("" when nothing runs)
    message: str = ""  # the last notable event, for humans
    timestamp_ms: int = 0  # when the author reported it (its clock)

    def to_body(self) -> dict[str, Any]:
        return {"v": BODY_VERSION, "health": self.health.value, "endpoints": list(self.endpoints[:MAX_ENDPOINTS]),
                "restarts": self.restarts, "spec_version": self.spec_version,
                "message": self.message[:MAX_MESSAGE_CHARS]}

    @classmethod
    def from_body(cls, node: NodeId, service: str, body: Any, timestamp_ms: int) -> ReplicaReport | None:
        """The report in an entry body, or None when the body is not one (a newer or broken author)."""
        if not isinstance(body, dict) or type(body.get("v")) is not int or body["v"] != BODY_VERSION:
            return None
        health, endpoints = body.get("health"), body.get("endpoints")
        restarts, version, message = body.get("restarts"), body.get("spec_version"), body.get("message")
        if (not isinstance(health, str) or health not in _WIRE_HEALTH or not isinstance(endpoints, list) or len(endpoints) > MAX_ENDPOINTS
                or not all(isinstance(e, str) and _is_endpoint(e) for e in endpoints)
                or not isinstance(restarts, int) or isinstance(restarts, bool) or restarts < 0
                or not isinstance(version, str) or not isinstance(message, str)):
            return None
        return cls(node, service, ReplicaHealth(health), tuple(endpoints), restarts, version,
                   message[:MAX_MESSAGE_CHARS], timestamp_ms)


def _is_endpoint(text: str) -> bool:
    host, sep, port = text.rpartition(":")
    return bool(sep and host and len(text) <= 64 and port.isdigit() and 0 < int(port) < 65536)


def reachable_host(addresses: Iterable[str]) -> str:
    """The IP others should use to reach services on this node, from its mesh multiaddrs
    (/ip4/A.B.C.D/tcp/N…): the first routable one, else the first loopback one, else 127.0.0.1."""
    loopback = None
    for addr in addresses:
        parts = addr.split("/")
        if len(parts) < 3 or parts[1] not in ("ip4", "ip6"):
            continue
        try:
            ip = ipaddress.ip_address(parts[2])
        except ValueError:
            continue
        if ip.is_unspecified or ip.is_link_local:
            continue
        text = str(ip) if ip.version == 4 else f"[{ip}]"
        if ip.is_loopback:
            loopback = loopback or text
        else:
            return text
    return loopback or "127.0.0.1"


def endpoints(host: str, ports: Mapping[str, int]) -> tuple[str, ...]:
    return tuple(f"{host}:{port}" for port in ports.values())


# --------------------------------------------------------------------------- the network-wide view


@dataclass(frozen=True, slots=True)
class ServiceView:
    """Everything known about one service: the Primary's decision and the replicas' reports."""

    name: str
    wanted: int | str  # the manifest's replicas (a number or "all")
    placement: tuple[NodeId, ...]  # the Primary's placement (desired replicas), in its order
    replicas: Mapping[NodeId, ReplicaReport]  # one per placed node; PENDING/STALE when nothing usable
    version: str  # the deployed spec's version

    @property
    def running(self) -> int:
        return sum(1 for r in self.replicas.values() if r.health.available)

    @property
    def up_to_date(self) -> int:
        """Available replicas that run the deployed version (a rolling update is done when = desired)."""
        return sum(1 for r in self.replicas.values() if r.health.available and r.spec_version == self.version)

    def endpoints(self) -> list[str]:
        """Where the service answers: the endpoints of available replicas, in placement order."""
        return [e for node in self.placement for e in self.replicas[node].endpoints
                if self.replicas[node].health.available]

    def health(self) -> str:
        """One word for the whole service (see `summary_health`)."""
        return summary_health(len(self.placement), [r.health for r in self.replicas.values()])

    def replica_views(self) -> list[ReplicaView]:
        """The rolling-update view for the reconciler, in placement order."""
        return [ReplicaView(node, self.replicas[node].spec_version, self.replicas[node].health.available)
                for node in self.placement]

    def row(self, now_ms: int) -> dict[str, Any]:
        """The row of `mycelium services --json` (see api/dto.py)."""
        return {
            "name": self.name, "desired": len(self.placement), "wanted": self.wanted, "running": self.running,
            "up_to_date": self.up_to_date, "placement": {node: self.replicas[node].health.value for node in self.placement},
            "endpoints": self.endpoints(), "health": self.health(), "version": self.version,
            "replicas": [{"node": node, "health": r.health.value, "endpoints": list(r.endpoints),
                          "restarts": r.restarts, "version": r.spec_version, "message": r.message,
                          "age_s": max(0, now_ms - r.timestamp_ms) // 1000 if r.timestamp_ms else None}
                         for node, r in ((n, self.replicas[n]) for n in self.placement)],
        }


def summary_health(desired: int, states: Sequence[ReplicaHealth]) -> str:
    """healthy (every desired replica available) · degraded (some) · crash_loop / failed (none, and
    at least one replica is in that state) · starting (none yet, some on their way) · unplaced (no
    node can run it) · unhealthy (none available for another reason)."""
    available = sum(1 for s in states if s.available)
    if desired == 0:
        return "unplaced"
    if available >= desired:
        return "healthy"
    if available:
        return "degraded"
    for bad in (ReplicaHealth.CRASH_LOOP, ReplicaHealth.FAILED):
        if bad in states:
            return bad.value
    if any(s in (ReplicaHealth.PENDING, ReplicaHealth.STARTING) for s in states):
        return "starting"
    return "unhealthy"


def service_views(specs: Mapping[str, ServiceSpec], placements: Mapping[str, Sequence[NodeId]],
                  reports: Iterable[ReplicaReport], *, now_ms: int, stale_after_ms: int,
                  local: Mapping[str, ReplicaReport] | None = None) -> dict[str, ServiceView]:
    """Merge the Primary (specs, placements) with replica reports. Per (service, node) the newest
    report wins; `local` (this node's own, straight from its driver) beats any gossiped one.
    A report older than `stale_after_ms` becomes STALE (local ones are always fresh)."""
    newest: dict[tuple[str, NodeId], ReplicaReport] = {}
    for r in reports:
        key = (r.service, r.node)
        if key not in newest or r.timestamp_ms > newest[key].timestamp_ms:
            newest[key] = r
    own = {(name, r.node): r for name, r in (local or {}).items()}
    views = {}
    for name in sorted(specs):
        spec = specs[name]
        placed = tuple(placements.get(name, ()))
        replicas: dict[NodeId, ReplicaReport] = {}
        for node in placed:
            report = own.get((name, node)) or newest.get((name, node))
            if report is None:
                report = ReplicaReport(node, name, ReplicaHealth.PENDING)
            elif (name, node) not in own and now_ms - report.timestamp_ms > stale_after_ms:
                report = ReplicaReport(node, name, ReplicaHealth.STALE, (), report.restarts, report.spec_version,
                                       f"last report {(now_ms - report.timestamp_ms) // 1000} s ago "
                                       f"said {report.health.value}", report.timestamp_ms)
            replicas[node] = report
        views[name] = ServiceView(name, spec.replicas, placed, replicas, spec.version())
    return views
