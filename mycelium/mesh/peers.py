"""What the mesh knows about each peer (pure bookkeeping; the host updates it)."""

from __future__ import annotations

from dataclasses import dataclass, field

from mycelium.identity import NodeId

MAX_ADDRESSES_PER_PEER = 16  # addresses remembered per peer (newest kept)


@dataclass(frozen=True, slots=True)
class PeerInfo:
    """A snapshot of one peer for `Mesh.peers()` (and, via the daemon, `mycelium peers --json`)."""

    node_id: NodeId
    addresses: tuple[str, ...]  # dialable multiaddrs, without /p2p/<id>
    connected: bool
    admitted: bool  # passed the membership handshake on the current connection
    latency_ms: float | None  # last ping round trip; None until measured
    last_seen: float | None  # unix seconds of the last connection, request or ping
    via_relay: bool  # the current connection goes through a circuit relay
    failure: str | None  # why the last handshake failed (a FailureReason value), if it did
    blocked_until: float | None  # unix seconds; None when not blocked


@dataclass(slots=True)
class PeerRecord:
    node_id: NodeId
    addresses: list[str] = field(default_factory=list)
    connected: bool = False
    admitted: bool = False
    latency_ms: float | None = None
    last_seen: float | None = None
    via_relay: bool = False
    failure: str | None = None
    blocked_until: float | None = None
    member: bool = False  # ever admitted, or named by a member (bootstrap, exchange, spores): worth redialling

    def add_addresses(self, addrs: list[str]) -> bool:
        """Remember `addrs` (newest last, bounded); True if any was new."""
        new = False
        for addr in addrs:
            if addr in self.addresses:
                continue
            self.addresses.append(addr)
            new = True
        del self.addresses[:-MAX_ADDRESSES_PER_PEER]
        return new

    def info(self) -> PeerInfo:
        return PeerInfo(
            node_id=self.node_id,
            addresses=tuple(self.addresses),
            connected=self.connected,
            admitted=self.admitted,
            latency_ms=self.latency_ms,
            last_seen=self.last_seen,
            via_relay=self.via_relay,
            failure=self.failure,
            blocked_until=self.blocked_until,
        )


class PeerBook:
    """node id → PeerRecord, bounded: the least useful (unconnected non-members) go first."""

    def __init__(self, max_peers: int = 4096) -> None:
        self._max = max_peers
        self._records: dict[NodeId, PeerRecord] = {}

    def get(self, node_id: NodeId) -> PeerRecord:
        rec = self._records.get(node_id)
        if rec is None:
            rec = self._records[node_id] = PeerRecord(node_id)
            self._evict()
        return rec

    def find(self, node_id: NodeId) -> PeerRecord | None:
        return self._records.get(node_id)

    def records(self) -> list[PeerRecord]:
        return list(self._records.values())

    def admitted(self) -> list[PeerRecord]:
        return [r for r in self._records.values() if r.admitted and r.connected]

    def _evict(self) -> None:
        if len(self._records) <= self._max:
            return
        for node_id, rec in list(self._records.items()):
            if not rec.connected and not rec.member:
                del self._records[node_id]
                if len(self._records) <= self._max:
                    return
