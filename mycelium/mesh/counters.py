"""Counts of what the mesh saw, for logs, `peers --json` and Prometheus (the daemon exports them)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass(slots=True)
class MeshCounters:
    connections_opened: int = 0  # libp2p connections, both directions
    connections_closed: int = 0
    handshake_ok: int = 0  # peers admitted (a peer admitted twice over two connections counts twice)
    handshake_failed: int = 0  # all reasons; see handshake_failed_by_reason
    handshake_failed_by_reason: Counter = field(default_factory=Counter)
    blocked: int = 0  # blocks started (PeerGate)
    blocked_dropped: int = 0  # connections or streams from blocked peers dropped
    unadmitted_access: int = 0  # streams on mycelium protocols from peers not admitted
    rate_limited: int = 0  # inbound requests over the per-peer token bucket
    overloaded: int = 0  # inbound requests refused because max_inbound_requests were running
    garbage: int = 0  # malformed frames or requests
    unresponsive: int = 0  # peers dropped after failing several pings in a row
    requests_in: int = 0  # inbound requests served
    requests_out: int = 0  # outbound requests answered
    stream_messages_in: int = 0  # messages received on long-lived message streams (mesh.streams)
    stream_messages_out: int = 0  # messages written to them
    request_errors: int = 0  # outbound requests that failed (timeout, refused, unreachable, remote error)
    handler_errors: int = 0  # our own handlers raising (our bug)
    dial_attempts: int = 0
    dial_failures: int = 0
    channels_opened: int = 0  # data channels we opened
    channels_accepted: int = 0  # data channels opened to us and handed to a handler
    channel_refused: int = 0  # channel opens refused (not admitted, wrong certificate, unknown channel, busy)
    gossip_published: int = 0
    gossip_received: int = 0
    gossip_dropped: int = 0  # delivered to a full subscription buffer

    def snapshot(self) -> dict[str, int]:
        """Flat name → count (reasons as `handshake_failed_<reason>`); a copy, safe to export."""
        out = {
            name: getattr(self, name)
            for name in self.__slots__  # type: ignore[attr-defined]
            if isinstance(getattr(self, name), int)
        }
        for reason, count in sorted(self.handshake_failed_by_reason.items()):
            out[f"handshake_failed_{reason}"] = count
        return out
