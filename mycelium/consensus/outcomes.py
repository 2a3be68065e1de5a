"""What the consensus core asks its owner to do besides sending messages and setting timers.

Effects are returned in order and must be carried out in order: a PersistLock is on disk (fsynced)
before the shell sends the signed message that follows it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

from mycelium.identity import NodeId
from mycelium.spores.certificate import QuorumCertificate

from mycelium.consensus.messages import (
    Commitment,
    MessageError,
    VOTE_CLASSES,
    Reveal,
    VoteMessage,
    parse_message,
    verify_message,
)


@dataclass(frozen=True, slots=True)
class PersistLock:
    """Write `state` durably (fsync) before acting on any later effect. Feed it back to
    ConsensusCore.restore() after a crash so the node never signs two values for one step."""

    state: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Decided:
    """`batch` is decided at `height`; `value` is the next Primary's hash and `certificate` proves it."""

    height: int
    value: bytes
    batch: tuple
    certificate: QuorumCertificate


@dataclass(frozen=True, slots=True)
class Behind:
    """`peer` is at `peer_height` and no longer keeps the decisions this node (at `height`) needs
    to catch up through consensus (only `decisions_kept` are kept). The owner syncs the certified
    chain from `peer` (state sync) and rebuilds the core at the new head; until then this core
    waits. Emitted at most once per rebroadcast interval."""

    peer: NodeId
    height: int
    peer_height: int


class EvidenceKind(str, Enum):
    EQUIVOCATION = "equivocation"  # two different signed messages for one height/round/step
    REVEAL_MISMATCH = "reveal_mismatch"  # a signed reveal that does not open its signed commitment


@dataclass(frozen=True, slots=True)
class Evidence:
    """Proof of misbehaviour that anyone with the network id can check with verify_evidence()."""

    kind: EvidenceKind
    validator: NodeId
    height: int
    round: int
    first: dict  # wire form of the first signed message
    second: dict  # wire form of the conflicting one

    def to_wire(self) -> dict:
        return {"kind": self.kind.value, "from": self.validator, "h": self.height, "r": self.round,
                "a": self.first, "b": self.second}


@dataclass(frozen=True, slots=True)
class Participation:
    """Local observation when a height is decided, for trust bookkeeping: who revealed the decided
    hash, who revealed another one, who committed but never revealed (in the deciding round).
    A hint from one node's view: trust changes enter the Primary only through decided operations."""

    height: int
    round: int
    agreed: frozenset[NodeId]
    dissented: frozenset[NodeId]
    withheld: frozenset[NodeId]


def verify_evidence(evidence: Evidence, network_id: str) -> bool:
    """True iff `evidence` really proves that its validator misbehaved. Never raises."""
    try:
        first, second = parse_message(evidence.first), parse_message(evidence.second)
    except MessageError:
        return False
    for message in (first, second):
        if not isinstance(message, VOTE_CLASSES):
            return False
        if message.validator != evidence.validator or not verify_message(message, network_id):
            return False
        if (message.height, message.round) != (evidence.height, evidence.round):
            return False
    if evidence.kind is EvidenceKind.EQUIVOCATION:
        return type(first) is type(second) and first != second
    if evidence.kind is EvidenceKind.REVEAL_MISMATCH:
        return isinstance(first, Commitment) and isinstance(second, Reveal) and not second.opens(first)
    return False


def equivocation(first: VoteMessage, second: VoteMessage) -> Evidence:
    return Evidence(EvidenceKind.EQUIVOCATION, first.validator, first.height, first.round,
                    first.to_wire(), second.to_wire())


def reveal_mismatch(commitment: Commitment, reveal: Reveal) -> Evidence:
    return Evidence(EvidenceKind.REVEAL_MISMATCH, reveal.validator, reveal.height, reveal.round,
                    commitment.to_wire(), reveal.to_wire())
