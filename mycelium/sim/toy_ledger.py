"""A toy application for consensus: operations are short strings, the candidate hash chains them.

What the consensus scenario, the in-process consensus tests (mycelium.testing.localnet) and the
consensus benchmark run validators on, so they measure the protocol and not the ledger.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from mycelium.encoding import hash_value
from mycelium.identity import NodeId

GENESIS_HASH = hash_value("genesis", person=b"myc-test-genesis")


@dataclass
class LedgerApp:
    """`schedule` maps a first height to the validator set from that height on; `decided` is the
    node's disk (height -> (value, batch)). With a `clock` (the node's local time) it judges batches
    as the real ledger does: a batch with operations opens with the proposer's clock, and a clock
    more than `max_skew_s` off ours makes the batch invalid (a judgement that lapses with time)."""

    schedule: dict[int, list[NodeId]]
    pending: list[str] = field(default_factory=list)
    decided: dict[int, tuple[bytes, tuple]] = field(default_factory=dict)
    clock: Callable[[], float] | None = None
    max_skew_s: float = 10.0

    def validators(self, height: int) -> list[NodeId]:
        start = max(h for h in self.schedule if h <= height)
        return sorted(self.schedule[start])

    def make_batch(self, height: int) -> list[Any]:
        ops = list(self.pending[:8])
        return [f"clock:{self.clock():.3f}"] + ops if ops and self.clock is not None else ops

    def validate_batch(self, height: int, batch: list[Any]) -> bool:
        if not all(isinstance(op, str) and 0 < len(op) <= 64 for op in batch):
            return False
        clocks = [float(op[6:]) for op in batch if op.startswith("clock:")]
        return self.clock is None or all(abs(t - self.clock()) <= self.max_skew_s for t in clocks)

    def execute(self, height: int, batch: list[Any], prev_hash: bytes) -> bytes:
        return hash_value([height, prev_hash, batch], person=b"myc-test-exec")

    def commit(self, height: int, value: bytes, batch: list[Any]) -> None:
        self.decided[height] = (value, tuple(batch))
        self.pending = [op for op in self.pending if op not in batch]

    def head(self) -> tuple[int, bytes]:
        """The height to run next and the hash it builds on (from what is on disk)."""
        height = max(self.decided, default=0) + 1
        return height, self.decided[height - 1][0] if height > 1 else GENESIS_HASH
