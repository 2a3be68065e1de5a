"""The JSON schemas the CLI prints with --json: DTOs we own, built field by field from the node's
state (never our internal objects serialised as they are). Documented in README ("Status JSON").
Fields are only ever added; a removed or retyped field breaks users' scripts."""

from __future__ import annotations

from typing import Any

STATUS_SCHEMA_VERSION = 1


def status(node: Any) -> dict:
    ledger = node.ledger
    me = node.key.node_id
    runtime = node.runtime_report()
    return {
        "schema": STATUS_SCHEMA_VERSION,
        "version": _version(),
        "node_id": me,
        "addresses": list(node.addresses()),
        "network_id": node.membership.network_id,
        "network_name": node.membership.name,
        "personal_network": node.membership.personal,
        "role": ledger.role_of(me),
        "role_reason": ledger.role_reason(me),
        "max_role": node.cfg.node.max_role,
        "epoch": ledger.height,
        "primary_hash": ledger.head_hash.hex() if ledger.head_hash else None,
        # the oldest certified Primary this node still holds (history_kept prunes older ones; a node
        # that joined or came back by state sync starts from a recent head)
        "oldest_height": ledger.chain.oldest_height if ledger.chain is not None else None,
        "validators": ledger.validators(),
        "members": ledger.member_count(),
        "admitted": ledger.is_member(me),
        "peers": node.peer_count(),
        "consensus": node.session.consensus_state if node.session else "starting",
        # the Seed spore this node bootstrapped from: holder, head height, members listed/confirmed
        "seed": node.session.seeds.status() if node.session and hasattr(node.session, "seeds") else None,
        # subsystems restarted on their own after a failure: name → restarts, last error, when
        "subsystems": node.session.failures.report() if node.session else {},
        # set while the node cannot run at all (disk full, damaged database): what and what to do
        "unusable": ({"reason": node.unusable.reason, "fix": node.unusable.fix}
                     if getattr(node, "unusable", None) is not None else None),
        "read_only": node.read_only(),
        "read_only_reason": node.read_only_reason(),
        "runtime": runtime["runtime"],
        "runtime_reason": runtime["reason"],
        "k3s": runtime["k3s"],
        "services": ledger.service_count(),
        "uptime_s": node.uptime_s,
        "state_dir": str(node.cfg.state_dir),
    }


def _version() -> str:
    from mycelium import __version__

    return __version__


# What a mesh failure code means for the user (codes: mycelium.mesh.membership.FailureReason).
FAILURE_TEXT = {
    "wrong_network": "it belongs to another network",
    "scheme_mismatch": "one of the two networks is post-quantum (created with --pq) and the other classic: "
                       "such nodes never share a network",
    "secret_revoked": "it proves a network secret that was rotated (rekey after a removal): a removed device, "
                      "or a member that fell behind — it needs a fresh invite",
    "secret_ahead": "it holds a newer network secret than ours: this node must catch up with the chain first",
    "kem_required": "this post-quantum network's handshake needs ML-KEM-768 and none was sent: the other node "
                    "runs a mycelium version without it (upgrade it), or the key was stripped on the way",
    "bad_proof": "it does not know this network's secret (another network, or a forged token)",
    "no_protocol": "it does not serve this network: another network, or not a mycelium node",
    "replayed_nonce": "it replayed an old handshake",
    "malformed": "it sent a malformed handshake",
    "unexpected_message": "it broke the handshake protocol",
    "version_mismatch": "it runs an incompatible mycelium version",
    "refused_by_peer": "it refused us",
    "timeout": "it did not answer the handshake in time",
    "stream_error": "the connection broke during the handshake",
    "blocked": "it is blocked after earlier failures",
}


def _failure_text(code: str | None) -> str | None:
    if code is None:
        return None
    base, _, remote = code.partition(":")
    if base == "refused_by_peer" and remote in FAILURE_TEXT:
        return f"it refused us: {FAILURE_TEXT[remote]} ({code})"
    return FAILURE_TEXT.get(base, code) + (f" ({code})" if base in FAILURE_TEXT else "")


def peers(node: Any) -> dict:
    """`mycelium peers --json`: every peer the mesh knows, with its role in the Primary."""
    session = node.session
    mesh = session.mesh if session else None
    rows = []
    for p in (mesh.peers() if mesh else []):
        rows.append({
            "node_id": p.node_id,
            "addresses": [f"{a}/p2p/{p.node_id}" for a in p.addresses],
            "role": node.ledger.role_of(p.node_id),
            "member": node.ledger.is_member(p.node_id),
            "connected": p.connected,
            "admitted": p.admitted,
            "latency_ms": None if p.latency_ms is None else round(p.latency_ms, 2),
            "last_seen": p.last_seen,
            "via_relay": p.via_relay,
            "failure": p.failure,
            "failure_text": _failure_text(p.failure),
            "blocked_until": p.blocked_until,
        })
    rows.sort(key=lambda r: (not r["connected"], r["node_id"]))
    counters = mesh.counters.snapshot() if mesh else {}
    return {"schema": 1, "peers": rows, "counters": counters}


def spores(node: Any, kind: str | None) -> dict:
    """`mycelium spores --json`: the Primary held, the Seed spores held, and the Latent summary with
    entries dropped by validation or limits (built by mycelium.spores.report)."""
    from mycelium.spores.report import spores_report

    chain = node.ledger.chain
    latent = getattr(node.session, "latent", None) if node.session else None
    stores = [(latent.store, latent.core.drops)] if latent is not None else []
    report = spores_report(chain.head if chain else None, (), stores, kind=kind)
    report["schema"] = 1
    if kind in (None, "latent") and latent is not None:
        report["latent_digest"] = latent.store.digest().hex()
    return report


def services(node: Any, runner: Any) -> dict:
    """`mycelium services --json`: each service in the Primary with desired and running replicas,
    placement per node, endpoints and health (rows built by the workload runner from the Primary
    and the service spores)."""
    return {"schema": 1, "services": runner.services()}
