"""Prometheus metrics: one registry per node (so several nodes can live in one test process).
Subsystems register their counters here; the control API serves them at /metrics."""

from __future__ import annotations

from typing import Any, Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily
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

    def add_source(self, read: Callable[[], Any]) -> None:
        """Export counters a subsystem keeps itself (read at scrape time, never copied): `read()`
        returns the node's current session or None."""
        self.registry.register(_SessionCollector(read))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _SessionCollector:
    """Counters of the running network session's subsystems, as Prometheus counters."""

    def __init__(self, read: Callable[[], Any]) -> None:
        self._read = read

    def describe(self) -> Iterable[Any]:
        return []  # dynamic labels: nothing to pre-declare

    def collect(self) -> Iterable[CounterMetricFamily]:
        session = self._read()
        mesh = CounterMetricFamily("mycelium_mesh_events", "Mesh events (handshakes, blocks, rate limits, garbage)", labels=["event"])
        consensus = CounterMetricFamily("mycelium_consensus_rejected", "Consensus input rejected, by reason", labels=["reason"])
        latent = CounterMetricFamily("mycelium_spores_dropped", "Latent spore data dropped, by reason", labels=["reason"])
        session_rej = CounterMetricFamily("mycelium_session_rejected", "Chain and operation requests refused", labels=["reason"])
        if session is not None:
            if session.mesh is not None:
                for event, n in sorted(session.mesh.counters.snapshot().items()):
                    mesh.add_metric([event], n)
            if session.driver is not None:
                for reason, n in sorted(session.driver.core.errors.items()):
                    consensus.add_metric([reason], n)
            latent_x = getattr(session, "latent", None)
            if latent_x is not None:
                for reason, n in sorted(latent_x.core.drops.counts.items(), key=lambda kv: kv[0].value):
                    latent.add_metric([reason.value], n)
            for reason, n in sorted(session.rejected.items()):
                session_rej.add_metric([reason], n)
        return [mesh, consensus, latent, session_rej]
