"""Plain, JSON-ready descriptions of the spores a node holds (what `mycelium spores --json` shows).

These are data-transfer dicts (hex strings and integers), never the internal objects, so the
control API can serve them as they are. Pure: no I/O.
"""

from __future__ import annotations

from typing import Iterable

from mycelium.spores.latent import LatentStore
from mycelium.spores.primary import CertifiedPrimary
from mycelium.spores.seed import SeedSpore
from mycelium.spores.validation import DropCounter


def describe_primary(link: CertifiedPrimary | None) -> dict | None:
    if link is None:
        return None
    p, qc = link.primary, link.certificate
    return {
        "network_id": p.network_id,
        "height": p.height,
        "epoch": p.epoch,
        "hash": p.hash().hex(),
        "prev_hash": p.prev_hash.hex(),
        "members": [
            {"node_id": n, "role": m.role, "trust_ppm": m.trust_ppm, "joined_at_height": m.joined_at_height}
            for n, m in sorted(p.members.items())
        ],
        "validators": p.validators(),
        "services": sorted(p.services),
        "placements": {s: list(nodes) for s, nodes in sorted(p.placements.items())},
        "evidence": len(p.evidence),
        "certificate": {"height": qc.height, "round": qc.round, "signers": sorted(qc.signatures)},
    }


def describe_seed(seed: SeedSpore) -> dict:
    return {
        "holder": seed.holder,
        "created_ms": seed.created_ms,
        "primary_height": seed.snapshot.primary.height,
        "primary_hash": seed.snapshot.primary.hash().hex(),
        "connections": len(seed.connections),
        "observations": len(seed.observations),
    }


def describe_latent(store: LatentStore, drops: DropCounter | None = None) -> dict:
    summary = store.summary()
    summary["dropped"] = drops.as_dict() if drops is not None else {}
    summary["intermittent"] = sorted(store.intermittent_nodes())
    return summary


def spores_report(
    primary: CertifiedPrimary | None,
    seeds: Iterable[SeedSpore] = (),
    latent: Iterable[tuple[LatentStore, DropCounter | None]] = (),
    *,
    kind: str | None = None,
) -> dict:
    """The whole report, or one part of it when kind is "primary", "seed" or "latent"."""
    if kind not in (None, "primary", "seed", "latent"):
        raise ValueError(f"unknown spore kind {kind!r}; use primary, seed or latent")
    report: dict = {}
    if kind in (None, "primary"):
        report["primary"] = describe_primary(primary)
    if kind in (None, "seed"):
        report["seeds"] = [describe_seed(s) for s in sorted(seeds, key=lambda s: s.holder)]
    if kind in (None, "latent"):
        report["latent"] = [describe_latent(store, drops) for store, drops in sorted(latent, key=lambda x: x[0].scope)]
    return report
