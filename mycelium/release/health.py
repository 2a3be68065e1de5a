"""The health check a node passes after switching to a new release (pure).

Healthy: the node is a member of its network and has seen the chain advance HEALTHY_HEIGHTS past
where it stood when the new version started — consensus works with this build on the network.
The supervisor waits for it (mycelium.release.supervise) for [release] health_timeout_s.
"""

from __future__ import annotations

HEALTHY_HEIGHTS = 2


def healthy(*, started_at: int, height: int, member: bool) -> bool:
    return member and height >= started_at + HEALTHY_HEIGHTS
