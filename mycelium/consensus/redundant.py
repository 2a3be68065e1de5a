"""Redundant execution: one critical computation given to k nodes, commit-reveal, majority wins. Pure.

First use: liveness verdicts ("is node X alive?") so that no single node can evict another. The
same shape as a consensus round: every assignee first commits to H(result ‖ nonce ‖ node ‖ task),
and only once every assignee committed (or the commit deadline passed) may results be revealed, so
nobody can copy an answer it did not compute. A result revealed by a strict majority of the k
assignees wins; those who revealed something else dissented, those who did not reveal (or revealed
something that does not open their commitment) withheld. Both are reported to trust.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from mycelium.encoding import EncodingError, canonical, digest, hash_value
from mycelium.identity import NodeId, NodeKey, verify

from mycelium.consensus.trust import Outcome

REDUNDANT_DOMAIN = b"mycelium-redundant-v1"


class TaskError(ValueError):
    """A task cannot be built as asked (local mistake), e.g. fewer candidates than k."""


@dataclass(frozen=True, slots=True)
class Task:
    task_id: bytes  # hash of (question, epoch): the same question in another epoch is another task
    question: Any  # canonical-encodable, e.g. {"alive": "<node id>"}
    assignees: tuple[NodeId, ...]


def make_task(question: Any, epoch: int, candidates: list[NodeId], k: int) -> Task:
    """The k candidates ranked highest by rendezvous hashing on the task id: deterministic, so every
    node agrees on who must answer, and unpredictable before the question is asked. Callers leave the
    subject of the question (the node under test) out of `candidates`."""
    try:
        task_id = hash_value([question, epoch], person=b"myc-task")
    except EncodingError as exc:
        raise TaskError(f"the question has no canonical encoding: {exc}") from exc
    pool = sorted(set(candidates))
    if not 1 <= k <= len(pool):
        raise TaskError(f"cannot give a task to {k} nodes out of {len(pool)} candidates")
    ranked = sorted(pool, key=lambda node: (digest(task_id + node.encode(), person=b"myc-assign"), node))
    return Task(task_id, question, tuple(sorted(ranked[:k])))


def _commitment(result: Any, nonce: bytes, node: NodeId, task_id: bytes) -> bytes:
    return hash_value([result, nonce, node, task_id], person=b"myc-task-commit")


def _signing_bytes(network_id: str, kind: str, fields: dict) -> bytes:
    return REDUNDANT_DOMAIN + canonical({"net": network_id, "t": kind, **fields})


@dataclass(frozen=True, slots=True)
class TaskCommitment:
    task_id: bytes
    commitment: bytes
    node: NodeId
    signature: bytes = b""

    def signing_bytes(self, network_id: str) -> bytes:
        return _signing_bytes(network_id, "commit", {"task": self.task_id, "c": self.commitment, "from": self.node})


@dataclass(frozen=True, slots=True)
class TaskReveal:
    task_id: bytes
    result: Any
    nonce: bytes
    node: NodeId
    signature: bytes = b""

    def signing_bytes(self, network_id: str) -> bytes:
        return _signing_bytes(network_id, "reveal", {"task": self.task_id, "res": self.result, "nonce": self.nonce,
                                                     "from": self.node})


@dataclass
class Participant:
    """An assignee's side: commit to a result, reveal it later (nonce derived from the key, so it
    survives a restart without being stored)."""

    key: NodeKey
    network_id: str
    results: dict[bytes, Any] = field(default_factory=dict)

    def _nonce(self, task: Task, result: Any) -> bytes:
        return digest(self.key.sign(REDUNDANT_DOMAIN + canonical([task.task_id, result])), person=b"myc-task-nonce")

    def commit(self, task: Task, result: Any) -> TaskCommitment:
        self.results[task.task_id] = result
        c = TaskCommitment(task.task_id, _commitment(result, self._nonce(task, result), self.key.node_id, task.task_id),
                           self.key.node_id)
        return TaskCommitment(c.task_id, c.commitment, c.node, self.key.sign_for(self.network_id, c.signing_bytes(self.network_id)))

    def reveal(self, task: Task) -> TaskReveal:
        result = self.results[task.task_id]
        r = TaskReveal(task.task_id, result, self._nonce(task, result), self.key.node_id)
        return TaskReveal(r.task_id, r.result, r.nonce, r.node, self.key.sign_for(self.network_id, r.signing_bytes(self.network_id)))


class Refused(str, Enum):
    WRONG_TASK = "wrong_task"
    NOT_ASSIGNED = "not_assigned"
    BAD_SIGNATURE = "bad_signature"
    LATE_COMMITMENT = "late_commitment"  # reveals may already be public: it could be a copy
    EARLY_REVEAL = "early_reveal"  # before the commit phase closed: would let others copy
    NO_COMMITMENT = "no_commitment"
    MISMATCH = "mismatch"  # does not open the signed commitment: counts as withheld
    DUPLICATE = "duplicate"
    MALFORMED = "malformed"


@dataclass(frozen=True, slots=True)
class Verdict:
    task_id: bytes
    result: Any  # the majority result, or None when no result reached a strict majority of k
    decided: bool
    agreed: frozenset[NodeId]
    dissented: frozenset[NodeId]
    withheld: frozenset[NodeId]

    def trust_outcomes(self) -> dict[NodeId, Outcome]:
        """What each assignee's answer means for its trust (nothing for dissent without a majority)."""
        outcomes = {node: Outcome.WITHHELD for node in self.withheld}
        if self.decided:
            outcomes.update({node: Outcome.AGREE for node in self.agreed})
            outcomes.update({node: Outcome.DISSENT for node in self.dissented})
        return outcomes


class Tally:
    """Collects one task's commitments and reveals and returns the verdict. Feed it every message;
    refused ones return their reason (also counted in `refused`), accepted ones None."""

    def __init__(self, task: Task, network_id: str, *, commit_deadline: float, reveal_deadline: float) -> None:
        if reveal_deadline < commit_deadline:
            raise TaskError("the reveal deadline must not come before the commit deadline")
        self.task, self.network_id = task, network_id
        self.commit_deadline, self.reveal_deadline = commit_deadline, reveal_deadline
        self.commitments: dict[NodeId, bytes] = {}
        self.results: dict[NodeId, Any] = {}
        self.mismatched: set[NodeId] = set()
        self.refused: Counter[str] = Counter()
        self._commit_closed = False

    def reveals_open(self, now: float) -> bool:
        """True once assignees may reveal: all committed, or the commit deadline passed."""
        if not self._commit_closed and (now >= self.commit_deadline or len(self.commitments) == len(self.task.assignees)):
            self._commit_closed = True
        return self._commit_closed

    def _refuse(self, why: Refused) -> Refused:
        self.refused[why.value] += 1
        return why

    def add_commitment(self, message: Any, now: float) -> Refused | None:
        if not isinstance(message, TaskCommitment) or not isinstance(message.commitment, bytes):
            return self._refuse(Refused.MALFORMED)
        try:
            why = self._check(message)
        except EncodingError:
            return self._refuse(Refused.MALFORMED)
        if why is not None:
            return why
        if self.reveals_open(now):
            return self._refuse(Refused.LATE_COMMITMENT)
        if message.node in self.commitments:
            return self._refuse(Refused.DUPLICATE)
        self.commitments[message.node] = message.commitment
        self.reveals_open(now)
        return None

    def add_reveal(self, message: Any, now: float) -> Refused | None:
        if not isinstance(message, TaskReveal) or not isinstance(message.nonce, bytes):
            return self._refuse(Refused.MALFORMED)
        try:
            why = self._check(message)
            opens = _commitment(message.result, message.nonce, message.node, message.task_id)
        except EncodingError:
            return self._refuse(Refused.MALFORMED)
        if why is not None:
            return why
        if not self.reveals_open(now):
            return self._refuse(Refused.EARLY_REVEAL)
        if message.node not in self.commitments:
            return self._refuse(Refused.NO_COMMITMENT)
        if message.node in self.results or message.node in self.mismatched:
            return self._refuse(Refused.DUPLICATE)
        if opens != self.commitments[message.node]:
            self.mismatched.add(message.node)
            return self._refuse(Refused.MISMATCH)
        self.results[message.node] = message.result
        return None

    def _check(self, message: TaskCommitment | TaskReveal) -> Refused | None:
        if message.task_id != self.task.task_id:
            return self._refuse(Refused.WRONG_TASK)
        if message.node not in self.task.assignees:
            return self._refuse(Refused.NOT_ASSIGNED)
        if not verify(message.node, message.signing_bytes(self.network_id), message.signature, self.network_id):
            return self._refuse(Refused.BAD_SIGNATURE)
        return None

    def verdict(self, now: float) -> Verdict | None:
        """The verdict once every assignee revealed or the reveal deadline passed; None before."""
        answered = set(self.results) | self.mismatched
        if now < self.reveal_deadline and answered != set(self.task.assignees):
            return None
        counts = Counter(canonical(result) for result in self.results.values())
        winner, decided = None, False
        if counts:
            encoded, votes = max(counts.items(), key=lambda item: (item[1], item[0]))
            if 2 * votes > len(self.task.assignees):
                winner = next(r for r in self.results.values() if canonical(r) == encoded)
                decided = True
        agreed = frozenset(n for n, r in self.results.items() if decided and canonical(r) == canonical(winner))
        dissented = frozenset(n for n in self.results if n not in agreed)
        withheld = frozenset(n for n in self.task.assignees if n not in self.results)
        return Verdict(self.task.task_id, winner, decided, agreed, dissented, withheld)
