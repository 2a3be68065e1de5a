"""When to dial a peer again after a failure: jittered exponential backoff (pure; `now` passed in)."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(slots=True)
class _Attempts:
    failures: int = 0
    next_at: float = float("-inf")


class RedialSchedule:
    """delay after the n-th consecutive failure = min(max_s, base_s * 2**(n-1)) * U(1 - jitter, 1 + jitter)."""

    def __init__(self, *, base_s: float, max_s: float, jitter: float, rng: random.Random) -> None:
        if base_s <= 0 or max_s < base_s or not 0 <= jitter < 1:
            raise ValueError("redial needs 0 < base_s <= max_s and 0 <= jitter < 1")
        self._base, self._max, self._jitter, self._rng = base_s, max_s, jitter, rng
        self._peers: dict[str, _Attempts] = {}

    def due(self, peer: str, now: float) -> bool:
        attempts = self._peers.get(peer)
        return attempts is None or now >= attempts.next_at

    def failed(self, peer: str, now: float) -> float:
        """Record a failed dial; returns the delay before the next attempt."""
        attempts = self._peers.setdefault(peer, _Attempts())
        attempts.failures += 1
        delay = min(self._max, self._base * 2 ** (attempts.failures - 1))
        delay *= self._rng.uniform(1 - self._jitter, 1 + self._jitter)
        attempts.next_at = now + delay
        return delay

    def new_address(self, peer: str) -> None:
        """A new address for `peer` is worth one attempt now; the failure count stays, so if that fails
        too the next delay is as long as it would have been (a peer naming fresh addresses over and
        over buys one dial each, never a storm)."""
        attempts = self._peers.get(peer)
        if attempts is not None:
            attempts.next_at = float("-inf")

    def succeeded(self, peer: str) -> None:
        self._peers.pop(peer, None)

    def failures(self, peer: str) -> int:
        attempts = self._peers.get(peer)
        return attempts.failures if attempts else 0
