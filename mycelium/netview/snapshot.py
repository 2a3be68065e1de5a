"""The network picture the page and `mycelium top` show. `assemble` is pure: it takes plain data
(the Primary's members, this node's peers, the Latent gauges reports, the recent chain links and
the subsystem rows) and returns a JSON-able dict; `gather` reads those off a running node.

Each member gets a `state`:
    self         this node
    up           connected to us now (admitted)
    unreachable  the Primary still counts it alive, but we have no connection to it
    dead         silent longer than dead_after_s in Primary time (its seat and replicas move)
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Iterable

SNAPSHOT_SCHEMA = 1
ROUNDS_SHOWN = 12  # last decided heights listed (the chain keeps more; the page needs a few)
STALE_REPORT_S = 400.0  # a gauges report older than this is stale (republished ≤ REFRESH_S + 15 s apart)
MAX_LINKS = 512  # links drawn at most (a 32-node network has 496 pairs)


@dataclass(frozen=True, slots=True)
class Round:
    height: int
    time_s: int  # Primary time (proposers' clock), unix seconds
    round: int  # the consensus round that decided it (0: first try)
    signers: tuple[str, ...]
    members: int


def assemble(*, me: str, status: dict, members: dict[str, dict], alive: dict[str, bool],
             peers: Iterable[dict], reports: dict[str, dict], rounds: list[Round],
             services: list[dict] | None, endophytes: list[dict] | None, storage: dict | None,
             storage_reason: str | None, now_s: float) -> dict:
    """members: node id → {role, trust_ppm, joined, max_role}; reports: author → gauges body
    (gauges.py) with its `age_s`; peers: rows as in `mycelium peers --json`."""
    peer_rows = {p["node_id"]: p for p in peers}
    validators = sorted(n for n, m in members.items() if m["role"] == "sclerotium")
    rows = []
    for nid in sorted(members):
        m = members[nid]
        peer = peer_rows.get(nid, {})
        if nid == me:
            state = "self"
        elif peer.get("connected") and peer.get("admitted", True):
            state = "up"
        elif alive.get(nid, True):
            state = "unreachable"
        else:
            state = "dead"
        rep = None if nid == me else reports.get(nid)  # our own numbers are live, not our last report
        rows.append({
            "node_id": nid, "short": nid[-8:], "role": m["role"], "validator": nid in validators,
            "trust": round(m["trust_ppm"] / 1_000_000, 4), "joined_height": m["joined"],
            "max_role": m.get("max_role"), "state": state, "alive_in_primary": alive.get(nid, True),
            "latency_ms": peer.get("latency_ms") if state == "up" else None,  # a lost peer's last ping is stale
            "read_only": bool(rep["read_only"]) if rep else (status["read_only"] if nid == me else None),
            "epoch": rep["epoch"] if rep else (status["epoch"] if nid == me else None),
            "report_age_s": rep["age_s"] if rep else None,
            "report_stale": bool(rep and rep["age_s"] > STALE_REPORT_S),
            "software": rep.get("sw") if rep else (status["version"] if nid == me else None),
        })
    states = {r["node_id"]: r["state"] for r in rows}
    links = _links(me, peer_rows, reports, states)
    return {
        "schema": SNAPSHOT_SCHEMA,
        "generated_s": round(now_s, 3),
        "node": {**{k: status[k] for k in ("node_id", "network_name", "network_id", "role", "read_only",
                                           "read_only_reason", "personal_network", "version", "uptime_s")},
                 # the node cannot run (disk full, damaged database), and subsystems restarted after failures
                 "unusable": status.get("unusable"), "subsystems": status.get("subsystems") or {}},
        "members": rows,
        "links": links,
        "consensus": _consensus(status, rounds, validators, members),
        "services": services,
        "endophytes": endophytes,
        "storage": storage if storage is not None else {"unavailable": storage_reason or "not running"},
    }


def _links(me: str, peer_rows: dict[str, dict], reports: dict[str, dict], states: dict[str, str]) -> list[dict]:
    """Undirected links between members: ours from the mesh, the others' from their gauges reports.
    A link to a node we do not see up is left out (its last report may predate its death)."""
    seen: dict[tuple[str, str], dict] = {}

    def add(a: str, b: str, latency: float | None, by: str) -> None:
        if a == b or a not in states or b not in states:
            return
        if any(states[n] not in ("self", "up") for n in (a, b)):
            return
        pair = (min(a, b), max(a, b))
        old = seen.get(pair)
        if old is None or (old["latency_ms"] is None and latency is not None) or by == me:
            seen[pair] = {"a": pair[0], "b": pair[1], "latency_ms": latency, "seen_by": by}

    for author, rep in sorted(reports.items()):
        if author == me:
            continue
        for peer, latency_us in sorted((rep.get("links") or {}).items()):
            add(author, peer, None if latency_us is None or latency_us < 0 else round(latency_us / 1000, 2), author)
    for nid, p in sorted(peer_rows.items()):
        if p.get("connected"):
            add(me, nid, p.get("latency_ms"), me)
    return [seen[k] for k in sorted(seen)][:MAX_LINKS]


def _consensus(status: dict, rounds: list[Round], validators: list[str], members: dict[str, dict]) -> dict:
    shown = rounds[-ROUNDS_SHOWN:]
    rate = None
    timed = [r for r in rounds if r.time_s > 0]  # genesis carries no Primary time
    if len(timed) >= 2 and timed[-1].time_s > timed[0].time_s:
        rate = round((timed[-1].height - timed[0].height) * 60 / (timed[-1].time_s - timed[0].time_s), 2)
    return {
        "height": status["epoch"], "primary_hash": status["primary_hash"], "state": status["consensus"],
        "heights_per_min": rate,
        "validators": [{"node_id": v, "short": v[-8:], "trust": round(members[v]["trust_ppm"] / 1_000_000, 4)}
                       for v in validators],
        "rounds": [{"height": r.height, "time_s": r.time_s, "round": r.round, "members": r.members,
                    "signers": [s[-8:] for s in r.signers]} for r in reversed(shown)],
    }


# ------------------------------------------------------------------------------ reading a node
def gather(node: Any) -> dict:
    """The picture as `node` (a running mycelium.daemon.Node) sees it now."""
    from mycelium.api import dto
    from mycelium.ledger.operations import liveness
    from mycelium.netview.gauges import reports_from

    status = dto.status(node)
    head = node.ledger.head
    members = {} if head is None else {
        n: {"role": m.role, "trust_ppm": m.trust_ppm, "joined": m.joined_at_height, "max_role": m.caps.get("max_role")}
        for n, m in head.members.items()}
    session = node.session
    latent = getattr(session, "latent", None) if session else None
    now = time.time()
    reports = reports_from(latent.store.entries(), now) if latent is not None else {}
    chain = node.ledger.chain
    rounds = []
    if chain is not None:
        for link in chain.links_after(max(-1, chain.height - 60), 61):
            p, cert = link.primary, link.certificate
            rounds.append(Round(p.height, int(p.params.get("time_s", 0) or 0), cert.round,
                                tuple(sorted(cert.signatures)), len(p.members)))
    workloads = getattr(session, "workloads", None) if session else None
    endo = getattr(session, "endophytes", None) if session else None
    store = getattr(session, "storage", None) if session else None
    storage = reason = None
    if store is not None:
        try:
            storage = store.status()
        except Exception as exc:  # a view must not break the page: say what failed instead
            reason = f"storage status failed: {exc}"
    else:
        reason = getattr(session, "storage_unavailable", None) if session else "the network session is not running"
    return assemble(me=node.key.node_id, status=status, members=members,
                    alive=liveness(head) if head is not None else {}, peers=dto.peers(node)["peers"],
                    reports=reports, rounds=rounds, services=workloads.services() if workloads else None,
                    endophytes=endo.rows() if endo is not None else None, storage=storage,
                    storage_reason=reason, now_s=now)
