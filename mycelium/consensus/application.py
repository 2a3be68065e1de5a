"""What consensus needs from the application (the Primary model), ABCI-style.

The core calls these synchronously; they must be deterministic functions of the decided history
(no wall clock, no randomness), because every validator evaluates them independently — except
validate_batch, a validator's own judgement of a fresh proposal (see there).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from mycelium.identity import NodeId


@runtime_checkable
class Application(Protocol):
    def validators(self, height: int) -> list[NodeId]:
        """The sorted validator set that decides `height`. It may depend on heights < `height` only:
        validator-set changes decided at height h take effect at h+1."""
        ...

    def make_batch(self, height: int) -> list[Any]:
        """Operations (signed by their requesters, canonical-encodable) for this node to propose."""
        ...

    def validate_batch(self, height: int, batch: list[Any]) -> bool:
        """True iff every operation is well-formed, signed and authorised on top of height−1. May use
        local judgement (the ledger checks the proposer's clock against its own): the core asks it
        only about a fresh proposal, never about a value 2f+1 validators vouched for (re-proposed,
        precommitted or certified), which it executes and compares instead."""
        ...

    def execute(self, height: int, batch: list[Any], prev_hash: bytes) -> bytes:
        """The candidate hash (32 bytes) of the next Primary: apply `batch` on top of `prev_hash`."""
        ...

    def commit(self, height: int, value: bytes, batch: list[Any]) -> None:
        """`batch` was decided at `height` with candidate hash `value`. Called before the core moves
        to height+1 (so validators(height+1) can reflect it) and before the Decided effect is emitted."""
        ...
