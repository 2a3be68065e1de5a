"""Each node's own gauges, carried in its Latent spore as a `usage` entry named "gauges", so that
one node can show (and export to Prometheus) every node's numbers, labelled by node.

Body (integers only: the spore encoding has no floats):
    epoch, members, peers, read_only (0/1), rss_bytes, uptime_s, sw (version string),
    links: {peer node id: last ping round trip in microseconds, or -1 when not measured}
           (at most MAX_LINKS peers, the lowest latency first)
"""

from __future__ import annotations

import os
import time
from typing import Any, Iterable

from prometheus_client.core import GaugeMetricFamily

GAUGES_NAME = "gauges"
MAX_LINKS = 32  # a body holds at most 4 KiB: 32 × (52-character id + latency) fits with room to spare
LATENCY_STEP_US = 1000  # latency is rounded to this, so the entry is not republished for jitter

# (metric name, help, body field): the network's gauges as /metrics exports them
GAUGE_FIELDS = (
    ("mycelium_network_epoch", "Height of the newest Primary the node holds (from its Latent gauges)", "epoch"),
    ("mycelium_network_members", "Members in the node's newest Primary (from its Latent gauges)", "members"),
    ("mycelium_network_peers_connected", "Admitted mesh peers the node is connected to (from its Latent gauges)", "peers"),
    ("mycelium_network_read_only", "1 while the node is in read-only mode (from its Latent gauges)", "read_only"),
    ("mycelium_network_rss_bytes", "Resident memory of the node's daemon (from its Latent gauges)", "rss_bytes"),
    ("mycelium_network_uptime_seconds", "Seconds since the node's daemon started (from its Latent gauges)", "uptime_s"),
)
NETWORK_METRICS = tuple(name for name, _, _ in GAUGE_FIELDS) + (
    "mycelium_network_report_age_seconds", "mycelium_network_link_latency_seconds")


def own_gauges(session: Any) -> dict:
    """This node's gauges body, read off its running session."""
    node = session.node
    ledger = session.ledger
    mesh = session.mesh
    peers = [p for p in mesh.peers() if p.connected and p.admitted] if mesh is not None else []
    peers.sort(key=lambda p: (p.latency_ms is None, p.latency_ms or 0.0, p.node_id))
    links = {}
    for p in peers[:MAX_LINKS]:
        if p.latency_ms is None:
            links[p.node_id] = -1
        else:
            links[p.node_id] = max(LATENCY_STEP_US, round(p.latency_ms * 1000 / LATENCY_STEP_US) * LATENCY_STEP_US)
    from mycelium import __version__

    return {"epoch": ledger.height, "members": ledger.member_count(), "peers": len(peers),
            "read_only": 1 if node.read_only() else 0, "rss_bytes": _rss_bytes(),
            "uptime_s": (node.uptime_s // 60) * 60,  # minutes: the entry is republished only when it changed
            "sw": __version__, "links": links}


# Gauges that only drift (height, latency, memory, uptime) are republished at most this often. Every
# republish is a new Latent version on every member, and a store that changes all the time never
# shows one digest network-wide (tests/integration/test_mesh_join.py waits for exactly that).
REFRESH_S = 300.0
# What readers must see soon (membership, peers, links appearing or getting their first ping time)
# is published once it held still this long. Such changes come in bursts while nodes join, and a
# joiner still catching up drops (and counts) every entry whose author its old Primary does not
# list yet: waiting for the burst to end keeps those drops away.
SETTLE_S = 20.0


def signature(body: dict) -> tuple:
    """The part of a gauges body whose change is news (drift excluded)."""
    links = body.get("links", {})
    return (body.get("members"), body.get("peers"), body.get("read_only"), body.get("sw"),
            tuple(sorted((p, v >= 0) for p, v in links.items())))


class GaugesPublisher:
    """The body a session hands its Latent exchange (None: nothing to publish yet). Read-only flips
    go out at once; other news once it held still SETTLE_S; drift every REFRESH_S."""

    def __init__(self, clock: Any = time.monotonic) -> None:
        self._clock = clock
        self._body: dict | None = None
        self._at = 0.0
        self._pending: tuple | None = None  # the signature waiting to settle, and since when
        self._pending_since = 0.0

    def body(self, session: Any) -> dict | None:
        new = own_gauges(session)
        now = self._clock()
        if self.decide(new, now):
            self._body, self._at, self._pending = new, now, None
        return self._body

    def decide(self, new: dict, now: float) -> bool:
        old = self._body
        if old is not None and old.get("read_only") != new.get("read_only"):
            return True
        sig = signature(new)
        if old is not None and sig == signature(old):
            self._pending = None
            return now - self._at >= REFRESH_S
        if sig != self._pending:
            self._pending, self._pending_since = sig, now
        return now - self._pending_since >= SETTLE_S


def _rss_bytes() -> int:
    try:
        with open(f"/proc/{os.getpid()}/statm") as f:
            pages = int(f.read().split()[1])
        return (pages * os.sysconf("SC_PAGE_SIZE")) >> 20 << 20  # MiB steps, for the same reason
    except (OSError, ValueError, IndexError):
        return 0


def valid_body(body: Any) -> bool:
    if not isinstance(body, dict):
        return False
    if not all(isinstance(body.get(f), int) and not isinstance(body.get(f), bool) for _, _, f in GAUGE_FIELDS):
        return False
    links = body.get("links", {})
    return isinstance(links, dict) and all(isinstance(k, str) and isinstance(v, int) for k, v in links.items())


def reports_from(entries: Iterable[Any], now_s: float) -> dict[str, dict]:
    """author → its newest gauges body (well-formed ones only) plus `age_s`."""
    from mycelium.spores.entry import EntryType

    out: dict[str, dict] = {}
    newest: dict[str, int] = {}
    for e in entries:
        if e.type != EntryType.USAGE or e.name != GAUGES_NAME or not valid_body(e.body):
            continue
        if e.version <= newest.get(e.author, -1):
            continue
        newest[e.author] = e.version
        out[e.author] = {**e.body, "age_s": round(max(0.0, now_s - e.timestamp_ms / 1000), 1)}
    return out


class NetworkCollector:
    """/metrics: every member's gauges from the Latent spore, labelled by node (`read()` returns
    the node's session or None)."""

    def __init__(self, read: Any) -> None:
        self._read = read

    def describe(self) -> Iterable[Any]:
        return []

    def collect(self) -> Iterable[GaugeMetricFamily]:
        session = self._read()
        latent = getattr(session, "latent", None) if session is not None else None
        reports = reports_from(latent.store.entries(), time.time()) if latent is not None else {}
        head = session.ledger.head if session is not None else None
        if head is not None:  # only members' reports (a removed node's last one lingers in the spore)
            reports = {n: r for n, r in reports.items() if n in head.members}
        families = []
        for name, help_text, field_name in GAUGE_FIELDS:
            fam = GaugeMetricFamily(name, help_text, labels=["node"])
            for node_id, rep in sorted(reports.items()):
                fam.add_metric([node_id], rep[field_name])
            families.append(fam)
        age = GaugeMetricFamily("mycelium_network_report_age_seconds", "Age of the node's newest Latent gauges report",
                                labels=["node"])
        latency = GaugeMetricFamily("mycelium_network_link_latency_seconds",
                                    "Ping round trip from node to peer (from the node's Latent gauges)", labels=["node", "peer"])
        for node_id, rep in sorted(reports.items()):
            age.add_metric([node_id], rep["age_s"])
            for peer, us in sorted(rep.get("links", {}).items()):
                if us >= 0:
                    latency.add_metric([node_id, peer], us / 1_000_000)
        return [*families, age, latency]
