"""Trust in the Primary: the `participation` operation and the epoch's decay (pure).

Every node computes the same trust from the Primary alone (consensus.trust's integer rules):

- The proposer of height h+1 adds one `participation` operation carrying the quorum certificate of
  height h (the Primary it builds on) and the validators it saw commit but not reveal there.
- Agreement: every validator of h whose precommit signature in that certificate verifies gains
  `agree_gain_ppm`. A certificate holds only the 2f+1 (or more) precommits its holder collected, so
  absence from it proves nothing: an absent validator gains nothing and loses nothing.
- Withheld reveals cut (`withheld_keep_ppm`). Absence of a reveal cannot be proved either, so the
  claim is confirmed by the batch's acceptors instead: a validator that itself saw the named
  validator open its commitment at h refuses the batch (`contradicted_by`, run by Ledger.validate_batch
  next to check_operation). A cut is therefore applied only when 2f+1 validators accepted it, i.e.
  at least f+1 honest ones did not see that reveal; a lying proposer cannot cut a validator whose
  reveal reached the honest validators. The apply itself checks only what every node can verify:
  the certificate is for the previous Primary, its signatures check out, a withheld validator is a
  validator of h that is not in the certificate.
- Dissent is not cut from a proposer's word: an equivocating proposer makes honest validators reveal
  different hashes, so a dissenting reveal alone does not prove a fault (equivocation does: evidence).
- Evidence (membership_rules) slashes to 0 forever; a slashed member never regains trust here.
- Decay toward the prior once per epoch (when the validator set changes), for every member.
- Validators under the role rule's keep threshold are replaced by it (derive._reassign_roles reads
  Member.trust_ppm at every height).
At most one participation per height (params[TRUST_HEIGHT] = the last height credited).
"""

from __future__ import annotations

from dataclasses import replace

from mycelium.consensus.trust import Outcome, TrustConfig, after_decay, after_outcome
from mycelium.identity import NodeId, NodeKey, is_node_id, verify
from mycelium.ledger.operation import Operation, OperationError, OpType, sign_operation
from mycelium.ledger.rule import Draft
from mycelium.spores.certificate import CertificateError, QuorumCertificate, precommit_signing_bytes
from mycelium.spores.primary import Member, PrimarySpore

TRUST_HEIGHT = "trust_h"  # Primary params key: the last height whose participation was credited
TRUST_CONFIG = TrustConfig()


def participation_operation(key: NodeKey, network_id: str, certificate: QuorumCertificate,
                            withheld: list[NodeId], *, now_s: int, seq: int | None = None) -> Operation:
    body = {"cert": certificate.to_wire(), "withheld": sorted(set(withheld) - set(certificate.signatures))}
    return sign_operation(key, network_id, OpType.PARTICIPATION, body, now_s=now_s, seq=seq)


def _parsed(op: Operation, prev: PrimarySpore, *, check_hash: bool = True, check_signatures: bool = True
            ) -> tuple[list[NodeId], list[NodeId]]:
    """(validators of `prev` that precommitted it, validators claimed withheld), or OperationError."""
    try:
        cert = QuorumCertificate.from_wire(op.body.get("cert"))
    except CertificateError as exc:
        raise OperationError(f"participation carries a malformed certificate: {exc}") from None
    if cert.height != prev.height or (check_hash and cert.value != prev.hash()):
        raise OperationError("participation's certificate is not for the previous Primary")
    validators = prev.validators()
    msg = precommit_signing_bytes(prev.network_id, cert.height, cert.round, cert.value)
    agreed = sorted(v for v in cert.signatures if v in validators)
    # each signer's ML-DSA key (post-quantum networks) from the Primary itself, so the verdict depends
    # on the Primary alone, never on which keys this process happens to have pinned
    if check_signatures and any(not verify(v, msg, cert.signatures[v], prev.network_id,
                                           pq_key=prev.members[v].pq_key or None) for v in agreed):
        raise OperationError("participation's certificate has an invalid signature")
    withheld = op.body.get("withheld")
    if not isinstance(withheld, list) or len(withheld) > len(validators):
        raise OperationError("participation withheld must be a list of at most one entry per validator")
    if withheld != sorted(set(withheld)) or not all(is_node_id(v) and v in validators for v in withheld):
        raise OperationError("participation withheld must be sorted, distinct validators of the previous Primary")
    if set(withheld) & set(agreed):
        raise OperationError("participation names a validator both precommitted and withheld")
    return agreed, withheld


def check_participation(op: Operation, prev: PrimarySpore, now_s: int | None) -> None:
    if op.author not in prev.validators():
        raise OperationError("only a validator may report participation")
    if prev.params.get(TRUST_HEIGHT, -1) >= prev.height:
        raise OperationError(f"participation of height {prev.height} is already credited")
    # Inside apply_batch `prev` already carries the batch's earlier changes (its hash is not the
    # previous Primary's): the apply checks the hash against the real one (draft.prev).
    _parsed(op, prev, check_hash=now_s is not None)


def apply_participation(op: Operation, draft: Draft) -> None:
    try:
        agreed, withheld = _parsed(op, draft.prev, check_signatures=False)  # the check just verified them
    except OperationError:
        return  # a certificate for another Primary: nothing credited, identically everywhere
    slashed = {e.get("validator") for e in draft.evidence}
    for node, outcome in [(v, Outcome.AGREE) for v in agreed] + [(v, Outcome.WITHHELD) for v in withheld]:
        m = draft.members.get(node)
        if m is not None and node not in slashed:
            draft.members[node] = replace(m, trust_ppm=after_outcome(m.trust_ppm, outcome, TRUST_CONFIG))
    draft.params[TRUST_HEIGHT] = draft.prev.height


def decayed(members: dict[NodeId, Member], evidence: list[dict]) -> dict[NodeId, Member]:
    """Every member's trust one decay step toward the prior (once per epoch); slashed ones stay 0."""
    slashed = {e.get("validator") for e in evidence}
    return {n: (m if n in slashed else replace(m, trust_ppm=after_decay(m.trust_ppm, TRUST_CONFIG)))
            for n, m in sorted(members.items())}


def contradicted_by(op: Operation, opened: frozenset[NodeId] | None) -> bool:
    """True if this node saw a validator the participation calls withheld open its commitment
    (`opened`: who revealed at that height, in this node's own view; None: no view, no objection)."""
    if op.type is not OpType.PARTICIPATION or opened is None:
        return False
    withheld = op.body.get("withheld")
    return isinstance(withheld, list) and any(v in opened for v in withheld if isinstance(v, str))


class ParticipationWitness:
    """This node's own view of the last heights' reveals (the consensus core's Participation effects),
    bounded to KEPT heights: what the proposer reports as withheld and what an acceptor objects to."""

    KEPT = 16

    def __init__(self) -> None:
        self._seen: dict[int, tuple[frozenset[NodeId], frozenset[NodeId]]] = {}

    def observe(self, participation: object) -> None:
        """Record a consensus.outcomes.Participation (the driver's on_participation callback)."""
        p = participation
        self._seen[p.height] = (frozenset(p.agreed) | frozenset(p.dissented), frozenset(p.withheld))
        for height in sorted(self._seen)[:-self.KEPT]:
            del self._seen[height]

    def opened(self, height: int) -> frozenset[NodeId] | None:
        return self._seen[height][0] if height in self._seen else None

    def withheld(self, height: int) -> list[NodeId]:
        return sorted(self._seen[height][1]) if height in self._seen else []

    def __len__(self) -> int:
        return len(self._seen)
