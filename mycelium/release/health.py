"""The health check a node passes after switching to a new release (pure).

Healthy: the node is a member of its network and has seen the chain advance HEALTHY_HEIGHTS past
where it stood when the new version started — consensus works with this build on the network. A
validator must also have voted with it: its own precommit is in the certificate of a height after
the start (a catch-up moves the chain without this build deciding anything).
The supervisor waits for it (mycelium.release.supervise) for [release] health_timeout_s.
"""

from __future__ import annotations

from typing import Any, Iterable

HEALTHY_HEIGHTS = 2


def healthy(*, started_at: int, height: int, member: bool, voted: bool = True) -> bool:
    if not voted:
        return False
    return member and height >= started_at + HEALTHY_HEIGHTS


def voted_since(me: str, started_at: int, certificates: Iterable[Any]) -> bool:
    """True if `me` signed the certificate of a height after `started_at` (certificates of the
    chain's newest links, any order)."""
    return any(c.height > started_at and me in c.signatures for c in certificates)
