"""Prometheus metrics: one registry per node (so several nodes can live in one test process).
Subsystems register their counters here; the control API serves them at /metrics."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

CONTENT_TYPE = CONTENT_TYPE_LATEST


class NodeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.api_requests = Counter(
            "mycelium_api_requests", "Control API requests served", ["path", "status"], registry=r
        )
        self.api_errors = Counter(
            "mycelium_api_bad_requests", "Malformed or refused control API requests", ["reason"], registry=r
        )
        self.subsystem_restarts = Counter(
            "mycelium_subsystem_restarts", "Subsystems restarted after a failure", ["subsystem"], registry=r
        )
        self.epoch = Gauge("mycelium_epoch", "Height of the newest Primary spore held", registry=r)
        self.members = Gauge("mycelium_members", "Members in the newest Primary spore", registry=r)
        self.peers = Gauge("mycelium_peers_connected", "Admitted mesh peers currently connected", registry=r)
        self.read_only = Gauge("mycelium_read_only", "1 while the node is in read-only mode", registry=r)
        self.up = Gauge("mycelium_up_timestamp_seconds", "Unix time the daemon started", registry=r)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
