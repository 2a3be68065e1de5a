"""Peer addresses remembered across restarts, so a restarted node dials the members it knew at once
instead of waiting to be redialled (whose backoff may have grown to minutes while it was down)."""

from __future__ import annotations

from typing import Any, Iterable

from mycelium.encoding import EncodingError, canonical, decode
from mycelium.identity import NodeId, is_node_id

META_PREFIX = "peer_addresses:"
MAX_PEERS = 64  # peers remembered (the most recently seen)
MAX_ADDRESSES = 8  # addresses per peer


def save_peer_addresses(db: Any, network_id: str, peers: Iterable[tuple[NodeId, Iterable[str], float]]) -> int:
    """Store (node, addresses, last_seen) of up to MAX_PEERS peers, most recently seen first."""
    rows = sorted(((node, list(addrs)[:MAX_ADDRESSES], seen) for node, addrs, seen in peers if addrs),
                  key=lambda row: (-row[2], row[0]))[:MAX_PEERS]
    db.set_meta(META_PREFIX + network_id, canonical([[node, addrs] for node, addrs, _ in rows]))
    return len(rows)


def load_peer_addresses(db: Any, network_id: str) -> list[tuple[NodeId, list[str]]]:
    """What save_peer_addresses stored; a damaged record reads as nothing (peers are found again)."""
    raw = db.get_meta(META_PREFIX + network_id)
    if raw is None:
        return []
    try:
        rows = decode(raw)
    except EncodingError:
        return []
    out = []
    for row in rows if isinstance(rows, list) else []:
        if (isinstance(row, list) and len(row) == 2 and isinstance(row[0], str) and is_node_id(row[0])
                and isinstance(row[1], list) and all(isinstance(a, str) for a in row[1])):
            out.append((row[0], row[1][:MAX_ADDRESSES]))
    return out[:MAX_PEERS]
