"""Signed operations and the deterministic function that applies a decided batch to a Primary.

Here: `check_operation`, `apply_batch` and RULES, the one table of (check, apply) per operation type.
The operation itself is in operation.py (re-exported here), the rules by concern in
membership_rules.py, workload_rules.py and governance.py (rule.py: what a rule is), and what a batch
derives afterwards (sequences kept, liveness, roles, placement) in derive.py.

Every validator runs `apply_batch(prev, batch)` independently and must get byte-identical results:
no wall clock, no randomness, no floats, every iteration over sorted keys. Checks that need the
local clock (an invite's expiry, an operation's age) live in `check_operation`, which validators
run before they accept a proposal (`validate_batch`); honest validators with sane clocks agree.

Operation types are append-only. Who may author what:
    profile  a member, about itself: its capability profile and operator cap
    join     a new node, with a member's signed invite (unexpired, uses left)
    leave    a member, about itself
    deploy   an admin (params["admins"]; the founder at genesis): a service spec, new or updated
    release  an admin publishes a release; a member reports its version and switch (mycelium.release.rules)
    undeploy an admin: a service name
    participation the proposer (a validator): the previous height's certificate and the reveals it
             saw withheld; trust moves by consensus.trust's rules (mycelium.ledger.trust_rules)
    clock    the proposer (a validator), first in its batch: the Primary's time. Honest validators
             refuse a batch whose clock is more than MAX_CLOCK_SKEW_S off their own or goes back,
             so a lying proposer moves the Primary's clock by at most that much.
    alive    a member, about itself: "I am up" (sent every dead_after_s / 4)
    evidence any member: proof that a validator signed two conflicting consensus messages (or a
             reveal that does not open its commitment). Every validator checks the signatures
             itself; the proof is kept in the Primary and the offender is removed as by `remove`
             (the secret rotates, it cannot rejoin), unless it is the only validator (trust 0).

Liveness: a member whose last operation is older than params["dead_after_s"] of Primary time
counts as dead for the role rule (its seat goes to a promotable node) and for placement (its
replicas move). One proposer can delay but not forge liveness: a censored member is seen again
as soon as an honest proposer includes its operations. (Redundant-execution verdicts — several
nodes probing, commit-reveal — are the planned replacement; see mycelium.consensus.redundant.)

Replay: every operation carries its author's sequence number (signed). The Primary keeps each
author's last applied sequence (params["seq"]) and applies an operation only if its sequence is
above it — memberlist's incarnation idea, with no window of ids to outgrow. Authors take sequences
from `next_sequence()`: microseconds of wall clock, never below what this process used or what the
Primary already holds for it, so a restart or a slow clock cannot reuse one. Sequences of members
are kept forever; of departed nodes the newest MAX_DEPARTED_SEQS. A non-member can only join, and a
join is refused once its invite expired in Primary time, so an evicted entry reopens nothing.

After the operations, roles are reassigned and every service is placed again (placement is a pure
function of the Primary: mycelium.runtime.placement).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from mycelium.identity import verify
from mycelium.ledger import governance, trust_rules
from mycelium.ledger.derive import _kept_sequences, _place, _reassign_roles, last_sequence, liveness, role_reasons
from mycelium.ledger.membership_rules import (
    _apply_clock, _apply_evidence, _apply_join, _apply_leave, _apply_nothing, _apply_profile, _check_clock,
    _check_evidence, _check_join, _check_member, _check_profile,
)
from mycelium.ledger.operation import (  # the operation itself; re-exported: this is the ledger's API
    ADMINS, DEAD_AFTER, DEFAULT_DEAD_AFTER_S, INVITES_USED, MAX_BATCH, MAX_CLOCK_SKEW_S, MAX_EVIDENCE_KEPT,
    MAX_OP_AGE_S, MAX_OP_BYTES, MAX_OP_FUTURE_S, OP_DOMAIN, SEEN, SEQ, SEQ_LEFT, TIME, UPTIME_WARMUP_HEIGHTS,
    NotAuthorized, Operation, OperationError, OpType, alive_operation, clock_operation, deploy_operation,
    endophyte_operation, evidence_operation, join_operation, next_sequence, observe_sequence,
    profile_operation, sign_operation, undeploy_operation,
)
from mycelium.ledger.rule import Draft, Rule
from mycelium.release import rules as release_rules
from mycelium.ledger.workload_rules import (
    _apply_deploy, _apply_endophyte, _apply_undeploy, _apply_volume, _check_deploy, _check_endophyte,
    _check_undeploy, _check_volume,
)
from mycelium.signatures import ML_DSA_65_PUBLIC_SIZE
from mycelium.spores.primary import PrimarySpore

__all__ = [
    "ADMINS", "DEAD_AFTER", "DEFAULT_DEAD_AFTER_S", "INVITES_USED", "MAX_BATCH", "MAX_CLOCK_SKEW_S",
    "MAX_EVIDENCE_KEPT", "MAX_OP_AGE_S", "MAX_OP_BYTES", "MAX_OP_FUTURE_S", "OP_DOMAIN", "RULES", "SEEN", "SEQ",
    "SEQ_LEFT", "TIME", "UPTIME_WARMUP_HEIGHTS", "NotAuthorized", "Operation", "OperationError", "OpType",
    "alive_operation", "apply_batch", "check_operation", "clock_operation", "deploy_operation",
    "endophyte_operation", "evidence_operation", "join_operation", "last_sequence", "liveness",
    "next_sequence", "observe_sequence", "profile_operation", "role_reasons", "sign_operation",
    "undeploy_operation",
]

# --------------------------------------------------------------------------- checks


def check_operation(op: Operation, prev: PrimarySpore, *, now_s: int | None) -> None:
    """Raise OperationError unless `op` may be applied on top of `prev`. `now_s` is the local clock
    (None inside the deterministic apply, which must not look at it)."""
    if not verify(op.author, op.signing_bytes(prev.network_id), op.signature, prev.network_id,
                  pq_key=_author_pq_key(op, prev)):
        raise OperationError(f"operation from {op.author[:16]} has an invalid signature")
    last = last_sequence(prev.params, op.author)
    if op.seq <= last:
        raise OperationError(f"operation sequence {op.seq} is not above {op.author[:16]}'s last applied {last} "
                             "(a replay, or an operation overtaken by a later one of the same author)")
    if now_s is not None:
        if op.time_s > now_s + MAX_OP_FUTURE_S:
            raise OperationError(f"operation is dated {op.time_s - now_s} s in the future")
        if op.time_s < now_s - MAX_OP_AGE_S:
            raise OperationError("operation is too old (a replay?)")
    RULES[op.type].check(op, prev, now_s)


def _author_pq_key(op: Operation, prev: PrimarySpore) -> bytes | None:
    """The ML-DSA key `op` must verify against (post-quantum networks): the one the Primary records
    for a member, or the one a joiner's operation carries (checked against any pin by `verify`)."""
    member = prev.members.get(op.author)
    if member is not None:
        return member.pq_key or None
    key = op.body.get("pq_key") if op.type is OpType.JOIN else None
    return key if isinstance(key, bytes) and len(key) == ML_DSA_65_PUBLIC_SIZE else None


# --------------------------------------------------------------------------- apply


def apply_batch(prev: PrimarySpore, batch: list[Any]) -> PrimarySpore:
    """The next Primary: `batch` applied in order on top of `prev`, then roles reassigned.
    Operations that fail their (clock-free) checks are skipped, identically on every validator."""
    params = dict(prev.params)
    draft = Draft(prev.network_id, prev.height + 1, dict(prev.members), dict(prev.services), list(prev.evidence),
                   params, dict(params.get(INVITES_USED, {})), params.get(TIME, 0), prev)
    seen = dict(params.get(SEEN, {}))
    seqs = dict(params.get(SEQ, {}))
    left = {n: tuple(v) for n, v in params.get(SEQ_LEFT, {}).items()}
    for raw in batch[:MAX_BATCH]:
        try:
            op = raw if isinstance(raw, Operation) else Operation.from_wire(raw)
            current = replace(prev, members=draft.members, services=draft.services, evidence=tuple(draft.evidence),
                              params={**params, INVITES_USED: draft.invites_used, SEQ: seqs,
                                      SEQ_LEFT: {n: v for n, v in left.items() if n not in seqs}})
            check_operation(op, current, now_s=None)  # refuses a sequence at or below the author's last
        except OperationError:
            continue
        seqs[op.author] = op.seq
        RULES[op.type].apply(op, draft)
        seen[op.author] = draft.now  # any operation a node authored shows it alive
    members, now = draft.members, draft.now
    for node in governance.evictions(members, params, seen, now, prev.validators()):
        governance.removed(node, members, params, prev.height + 1)  # long silence: as `remove`, a rotation
    if draft.invites_used:
        params[INVITES_USED] = draft.invites_used
    params[SEQ], params[SEQ_LEFT] = _kept_sequences(seqs, left, members, prev.height + 1)
    if not params[SEQ_LEFT]:
        del params[SEQ_LEFT]
    for node in members:
        seen.setdefault(node, now)  # first observation (the founder, a member from before clocks)
    params[SEEN] = {n: t for n, t in sorted(seen.items()) if n in members}
    dead_after = params.get(DEAD_AFTER, DEFAULT_DEAD_AFTER_S)
    alive = {n: now - params[SEEN][n] <= dead_after for n in members}
    members = _reassign_roles(members, prev.height + 1, alive,
                              governance.param(replace(prev, params=params), "max_validators"))
    placements = _place(draft.services, members, alive)
    if params.get("endophytes"):  # primary + backups on distinct live non-hypha nodes; failover (ram/leases.py)
        from mycelium.ram.leases import KEY, reconcile

        params[KEY] = reconcile(params[KEY], sorted(n for n, m in members.items() if m.role != "hypha"), alive)
    validators_changed = sorted(n for n, m in members.items() if m.role == "sclerotium") != prev.validators()
    if validators_changed:
        members = trust_rules.decayed(members, draft.evidence)  # once per epoch, toward the prior
    return replace(prev, height=prev.height + 1, epoch=prev.epoch + (1 if validators_changed else 0),
                   prev_hash=prev.hash(), members=members, services=draft.services, placements=placements,
                   params=params, evidence=tuple(draft.evidence[-MAX_EVIDENCE_KEPT:]))


# --------------------------------------------------------------------------- one rule per operation type


def _check_governance(op: Operation, prev: PrimarySpore, now_s: int | None) -> None:
    try:
        governance.check(op.type.value, op.author, op.body, prev, now_s)
    except governance.NotAdmin as exc:
        raise NotAuthorized(str(exc)) from None
    except governance.GovernanceError as exc:
        raise OperationError(str(exc)) from None


def _apply_governance(op: Operation, draft: Draft) -> None:
    governance.apply(op.type.value, op.author, op.body, draft.members, draft.params, draft.height)


RULES: dict[OpType, Rule] = {
    OpType.PROFILE: Rule(_check_profile, _apply_profile),
    OpType.JOIN: Rule(_check_join, _apply_join),
    OpType.LEAVE: Rule(_check_member, _apply_leave),
    OpType.DEPLOY: Rule(_check_deploy, _apply_deploy),
    OpType.UNDEPLOY: Rule(_check_undeploy, _apply_undeploy),
    OpType.CLOCK: Rule(_check_clock, _apply_clock),
    OpType.ALIVE: Rule(_check_member, _apply_nothing),
    OpType.EVIDENCE: Rule(_check_evidence, _apply_evidence),
    OpType.ENDOPHYTE: Rule(_check_endophyte, _apply_endophyte),
    **{t: Rule(_check_governance, _apply_governance) for t in (OpType.ADMIN, OpType.PARAMS, OpType.INVITE_REVOKE,
                                                              OpType.REMOVE, OpType.KEYS, OpType.REKEY)},
    OpType.VOLUME: Rule(_check_volume, _apply_volume),
    OpType.PARTICIPATION: Rule(trust_rules.check_participation, trust_rules.apply_participation),
    OpType.RELEASE: Rule(release_rules.check, release_rules.apply),
}
assert set(RULES) == set(OpType), "every operation type has exactly one rule"
