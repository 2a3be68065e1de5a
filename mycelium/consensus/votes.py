"""Vote bookkeeping for one round of one height: who proposed, committed, revealed, precommitted.

Keeps the first signed message of each validator for each step; a different second one is
equivocation, returned as Evidence. A reveal counts only once it opens its author's commitment;
a reveal that does not open it is Evidence too. Signatures are checked by the caller.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from enum import Enum

from mycelium.identity import NodeId

from mycelium.consensus.messages import NIL, Commitment, Precommit, Proposal, Reveal, VoteMessage
from mycelium.consensus.outcomes import Evidence, equivocation, reveal_mismatch


class Added(Enum):
    NEW = "new"  # stored: the rules may now fire
    DUPLICATE = "duplicate"  # the very same message again (rebroadcast): ignored
    CONFLICT = "conflict"  # a different message for a step this validator already signed: evidence


@dataclass(slots=True)
class RoundVotes:
    proposal: Proposal | None = None
    commitments: dict[NodeId, Commitment] = field(default_factory=dict)
    reveals: dict[NodeId, Reveal] = field(default_factory=dict)
    precommits: dict[NodeId, Precommit] = field(default_factory=dict)
    _mismatched: set[NodeId] = field(default_factory=set)

    def add(self, message: VoteMessage) -> tuple[Added, list[Evidence]]:
        if isinstance(message, Proposal):
            if self.proposal is None:
                self.proposal = message
                return Added.NEW, []
            return self._same_or_conflict(self.proposal, message)
        table: dict = (
            self.commitments if isinstance(message, Commitment)
            else self.reveals if isinstance(message, Reveal)
            else self.precommits
        )
        first = table.get(message.validator)
        if first is not None:
            return self._same_or_conflict(first, message)
        table[message.validator] = message
        return Added.NEW, self._check_opening(message.validator)

    @staticmethod
    def _same_or_conflict(first: VoteMessage, second: VoteMessage) -> tuple[Added, list[Evidence]]:
        if first == second:
            return Added.DUPLICATE, []
        return Added.CONFLICT, [equivocation(first, second)]

    def _check_opening(self, validator: NodeId) -> list[Evidence]:
        commitment, reveal = self.commitments.get(validator), self.reveals.get(validator)
        if commitment is None or reveal is None or reveal.opens(commitment) or validator in self._mismatched:
            return []
        self._mismatched.add(validator)
        return [reveal_mismatch(commitment, reveal)]

    # -- counting ----------------------------------------------------------------------------------

    def opened(self) -> dict[NodeId, bytes]:
        """Validator → revealed candidate, for reveals that open their commitment."""
        return {
            v: r.candidate
            for v, r in self.reveals.items()
            if v in self.commitments and v not in self._mismatched and r.opens(self.commitments[v])
        }

    def reveal_tally(self) -> Counter[bytes]:
        return Counter(self.opened().values())

    def precommit_tally(self) -> Counter[bytes]:
        return Counter(p.value for p in self.precommits.values())

    def precommit_signatures(self, value: bytes) -> dict[NodeId, bytes]:
        return {v: p.signature for v, p in self.precommits.items() if p.value == value}

    def senders(self) -> set[NodeId]:
        found = set(self.commitments) | set(self.reveals) | set(self.precommits)
        if self.proposal is not None:
            found.add(self.proposal.validator)
        return found

    def participation(self, value: bytes) -> tuple[frozenset, frozenset, frozenset]:
        """(agreed, dissented, withheld) with respect to the decided `value`. A nil reveal is neither
        agreement nor dissent: honest validators reveal nil when a proposal reaches them late."""
        opened = self.opened()
        agreed = frozenset(v for v, c in opened.items() if c == value)
        dissented = frozenset(v for v, c in opened.items() if c not in (value, NIL))
        withheld = frozenset(v for v in self.commitments if v not in opened)
        return agreed, dissented, withheld
