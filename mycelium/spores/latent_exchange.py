"""The Latent spore over the mesh: this node's own entries published, everybody's merged by the
anti-entropy core (mycelium.spores.gossip) — deltas on a gossip topic, digests and range repairs
over rpc — and checked against the Primary as it changes. Addresses that members announce in their
node entries are handed to the mesh, so nodes find each other through the spore too.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import trio

from mycelium import __version__
from mycelium.shell.exchange import CoreShell
from mycelium.identity import NodeId
from mycelium.observability.logs import get_logger
from mycelium.spores.entry import MASTER_SCOPE, TEMPORAL_TYPES, Entry, EntryType, make_entry, next_temporal_version
from mycelium.spores.gossip import GossipConfig, LatentGossip
from mycelium.spores.latent import LatentLimits, LatentStore
from mycelium.spores.seed import contradiction_for
from mycelium.spores.validation import DropReason, EntryValidator

log = get_logger("mycelium.latent")
OWN_ENTRY_NAMES = {EntryType.USAGE: "gauges"}  # the free part of own entries' keys ("" for the rest)



@dataclass(frozen=True, slots=True)
class LatentExchangeConfig:
    publish_interval_s: float = 15.0  # how often own entries are checked for change (and republished if changed)
    peers_interval_s: float = 2.0  # how often the gossip peer set and learned addresses are refreshed
    gossip: GossipConfig = field(default_factory=GossipConfig)  # the anti-entropy core's timers and limits
    limits: LatentLimits = field(default_factory=LatentLimits)  # the store's bounds

    @classmethod
    def local(cls) -> LatentExchangeConfig:
        """In-process tests: own entries and peers looked at often."""
        return cls(publish_interval_s=1.0, peers_interval_s=0.2)

    @classmethod
    def lan(cls) -> LatentExchangeConfig:
        return cls()

    @classmethod
    def wan(cls) -> LatentExchangeConfig:
        return cls(peers_interval_s=5.0)


class MeshTrustReporter:
    """Invalid spore data counts against the peer that relayed it (consensus turns these into trust
    changes through operations; until then they are counted and logged)."""

    def __init__(self) -> None:
        self.reports: Counter[tuple[NodeId, str]] = Counter()

    def report_invalid(self, sender: NodeId, author: NodeId | None, reason: DropReason) -> None:
        self.reports[(sender, reason.value)] += 1


class LatentExchange:
    RPC = "latent"
    TOPIC = "latent"

    def __init__(self, session: Any, config: LatentExchangeConfig | None = None) -> None:
        self.session = session
        self.config = config or LatentExchangeConfig()
        self.key = session.key
        self.network_id = session.membership.network_id
        self.store = LatentStore(MASTER_SCOPE, self.config.limits)
        self.reporter = MeshTrustReporter()
        self.validator = EntryValidator(self.network_id, scope=MASTER_SCOPE, reporter=self.reporter)
        self.core = LatentGossip(self.key.node_id, self.store, self.validator, self.config.gossip)
        self.shell: CoreShell | None = None
        self._published: dict[EntryType, dict] = {}
        self._versions: dict[EntryType, int] = {}
        self._service_versions: dict[str, int] = {}  # service -> last version of our SERVICE entry
        self.primary_changed()

    # ------------------------------------------------------------------------------------------
    def primary_changed(self) -> None:
        """Validate against the newest Primary: only members author entries; contradictions dropped."""
        head = self.session.ledger.head
        self.validator.members = frozenset(head.members) if head is not None else None
        self.validator.contradiction = contradiction_for(head)

    async def handle_rpc(self, peer: NodeId, data: bytes) -> bytes:
        if self.shell is not None:
            self.shell.deliver(peer, data)
        return b""

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self.shell = CoreShell(self.core, self.session.mesh, nursery, rpc_name=self.RPC, topic=self.TOPIC,
                                   clock=time.time)  # entries are validated against the wall clock
            await nursery.start(self.shell.run)
            nursery.start_soon(self._publish_loop)
            nursery.start_soon(self._peers_loop)
            task_status.started()

    # ------------------------------------------------------------------------------------------
    def _own_bodies(self) -> dict[EntryType, dict]:
        session = self.session
        me = self.key.node_id
        bodies: dict[EntryType, dict] = {
            EntryType.NODE: {"addrs": sorted(session.mesh.own_addresses()), "sw": __version__,
                             "role": session.ledger.role_of(me)},
        }
        if session.profile is not None:
            bodies[EntryType.CAPABILITY] = session.profile.to_wire()
        if getattr(session, "k3s", None) is not None:
            bodies[EntryType.OVERLAY] = session.k3s.announcement_body()  # WireGuard key and endpoint
        gauges = getattr(session, "gauges_body", None)  # the node's gauges for the others (mycelium.netview)
        body = gauges() if gauges is not None else None
        if body is not None:
            bodies[EntryType.USAGE] = body
        return bodies

    def publish_own(self) -> int:
        """Publish own entries whose content changed; returns how many."""
        if not self.session.ledger.is_member(self.key.node_id):
            return 0  # others drop entries from non-members; publish once admitted
        now_ms = int(time.time() * 1000)
        changed = 0
        for type_, body in self._own_bodies().items():
            if self._published.get(type_) == body:
                continue
            version = next_temporal_version(self._versions.get(type_, 0), now_ms)
            # temporal types (the gauges' usage entry) keep version == timestamp, the store's law
            entry = make_entry(self.key, self.network_id, type_, body, version=version,
                               timestamp_ms=version if type_ in TEMPORAL_TYPES else now_ms,
                               name=OWN_ENTRY_NAMES.get(type_, ""))
            self._versions[type_] = version
            self._published[type_] = body
            self.shell.call(lambda now, e=entry: self.core.publish(e, now))
            changed += 1
        return changed

    def publish_service_entry(self, service: str, body: dict) -> bool:
        """Sign and gossip this node's service-spore entry for `service`: the replica it runs (body
        built by mycelium.runtime.reports.ReplicaReport). Entries cannot be deleted; a replica that
        stops publishes health "stopped". Versions follow the wall clock (next_temporal_version), so
        a restarted daemon's reports outrank the ones it published before. False when not published
        (not a member yet, or the exchange is not running).
        These travel on the master Latent topic for now; DESIGN wants one topic per service
        (spores.entry.service_scope), which needs a LatentStore and gossip shell per scope."""
        if self.shell is None or not self.session.ledger.is_member(self.key.node_id):
            return False
        now_ms = int(time.time() * 1000)
        version = next_temporal_version(self._service_versions.get(service, 0), now_ms)
        entry = make_entry(self.key, self.network_id, EntryType.SERVICE, body, version=version,
                           timestamp_ms=now_ms, name=service)
        self._service_versions[service] = version
        self.shell.call(lambda now, e=entry: self.core.publish(e, now))
        return True

    async def _publish_loop(self) -> None:
        while True:
            self.publish_own()
            await trio.sleep(self.config.publish_interval_s if self._published else self.config.peers_interval_s)

    async def _peers_loop(self) -> None:
        mesh = self.session.mesh
        while True:
            self.core.set_peers(mesh.admitted_peers())
            for entry in self.store.entries():
                if entry.type == EntryType.NODE and entry.author != self.key.node_id:
                    addrs = entry.body.get("addrs")
                    if isinstance(addrs, list) and all(isinstance(a, str) for a in addrs):
                        mesh.add_addresses(entry.author, addrs[:16])
            await trio.sleep(self.config.peers_interval_s)

    def entries(self) -> list[Entry]:
        return self.store.entries()
