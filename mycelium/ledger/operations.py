"""Signed operations and the deterministic function that applies a decided batch to a Primary.

Every validator runs `apply_batch(prev, batch)` independently and must get byte-identical results:
no wall clock, no randomness, no floats, every iteration over sorted keys. Checks that need the
local clock (an invite's expiry, an operation's age) live in `check_operation`, which validators
run before they accept a proposal (`validate_batch`); honest validators with sane clocks agree.

Operation types are append-only. Who may author what:
    profile  a member, about itself: its capability profile and operator cap
    join     a new node, with a member's signed invite (unexpired, uses left)
    leave    a member, about itself
    deploy   an admin (params["admins"]; the founder at genesis): a service spec, new or updated
    undeploy an admin: a service name
    clock    the proposer (a validator), first in its batch: the Primary's time. Honest validators
             refuse a batch whose clock is more than MAX_CLOCK_SKEW_S off their own or goes back,
             so a lying proposer moves the Primary's clock by at most that much.
    alive    a member, about itself: "I am up" (sent every dead_after_s / 4)
    evidence any member: proof that a validator signed two conflicting consensus messages (or a
             reveal that does not open its commitment). Every validator checks the signatures
             itself; the offender's trust drops to zero and the proof is kept in the Primary.

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

import secrets
import time
from dataclasses import dataclass, replace
from enum import Enum
from typing import Any, Callable

from mycelium.encoding import EncodingError, canonical
from mycelium.envelopes import KemKey
from mycelium.identity import Invite, NodeId, NodeKey, TokenError, is_node_id, scheme_of, verify
from mycelium.ledger import governance
from mycelium.signatures import ML_DSA_65_PUBLIC_SIZE
from mycelium.roles.assignment import Candidate, Role, RoleError, assign_roles
from mycelium.roles.profile import CapabilityProfile, ProfileError
from mycelium.spores.primary import Member, PrimarySpore

OP_DOMAIN = b"mycelium-op-v1"
MAX_BATCH = 256  # operations in one height
MAX_OP_BYTES = 64 * 1024
MAX_OP_AGE_S = 24 * 3600  # an operation older than this is refused (replays of old signed requests)
MAX_OP_FUTURE_S = 300  # clock skew tolerated on an operation's timestamp
NEW_MEMBER_TRUST_PPM = 500_000  # the neutral prior
# A member's observed uptime (for the role rule) ramps from 0 to 100% over this many heights after it
# joins: a newcomer must stay around before it can take a validator seat. Deterministic: counted in
# heights, not seconds. (Liveness verdicts from redundant execution will refine this.)
UPTIME_WARMUP_HEIGHTS = 12
INVITES_USED = "invites_used"  # Primary params key: invite id (hex) → uses consumed
TIME = "time_s"  # Primary params key: the Primary's clock (unix seconds, from the proposers' clock ops)
SEEN = "seen"  # Primary params key: node id → Primary time its last operation was applied
DEAD_AFTER = "dead_after_s"  # Primary params key (set at genesis): silence after which a member is dead
DEFAULT_DEAD_AFTER_S = 30
MAX_EVIDENCE_KEPT = 1024  # evidence records kept in the Primary (the newest)
MAX_CLOCK_SKEW_S = 10  # a proposer's clock op may differ this much from a validator's own clock
ADMINS = "admins"  # Primary params key: node ids allowed to deploy and undeploy
WORKLOAD_MEMORY_PERMILLE = 750  # share of a member's RAM offered to workloads (the rest: OS, daemon)
SEQ = "seq"  # Primary params key: member id → sequence of its last applied operation (replay guard)
SEQ_LEFT = "seq_left"  # Primary params key: departed node id → [last sequence, height it left at]
MAX_DEPARTED_SEQS = 1024  # sequences of nodes that left, kept (newest departures) beyond the members'
MAX_SEQ = 2**62  # sequences are positive and below this (canonical int range with room to spare)

_last_sequence = 0  # the highest sequence this process handed out (see next_sequence)


def next_sequence(floor: int = 0) -> int:
    """A sequence above every one this process used, above `floor` (the author's last applied, from
    the Primary), and normally the wall clock in microseconds (so restarts keep increasing)."""
    global _last_sequence
    _last_sequence = max(time.time_ns() // 1000, _last_sequence + 1, floor + 1)
    return _last_sequence


def observe_sequence(applied: int) -> None:
    """The Primary says this node's last applied sequence is `applied`: never hand out one at or below."""
    global _last_sequence
    _last_sequence = max(_last_sequence, applied)


class OpType(str, Enum):
    PROFILE = "profile"
    JOIN = "join"
    LEAVE = "leave"
    DEPLOY = "deploy"
    UNDEPLOY = "undeploy"
    CLOCK = "clock"
    ALIVE = "alive"
    EVIDENCE = "evidence"
    ENDOPHYTE = "endophyte"  # RAM-replicated workloads: deploy/undeploy/report/migrate/handover (ram/leases.py)
    ADMIN = "admin"  # governance (mycelium.ledger.governance): admins, parameters, invites, removal, rekey
    PARAMS = "params"
    INVITE_REVOKE = "invite_revoke"
    REMOVE = "remove"
    KEYS = "keys"
    REKEY = "rekey"
    VOLUME = "volume"  # storage volumes: declare (admins) / lease / release / root (storage/volumes.py)


class OperationError(ValueError):
    """An operation is malformed, forged or not allowed; the message says which."""


class NotAuthorized(OperationError):
    """The author may not do this (e.g. deploy without being an admin of the network)."""


@dataclass(frozen=True, slots=True)
class Operation:
    type: OpType
    author: NodeId
    body: dict
    time_s: int  # the author's clock when it signed; bounds replay (see MAX_OP_AGE_S)
    nonce: bytes  # 16 random bytes: two identical requests are two operations
    signature: bytes = b""
    seq: int = 1  # the author's sequence number: applied only above the author's last (see SEQ)

    def signed_part(self, network_id: str) -> dict:
        return {"net": network_id, "t": self.type.value, "author": self.author, "body": self.body,
                "time": self.time_s, "nonce": self.nonce, "seq": self.seq}

    def signing_bytes(self, network_id: str) -> bytes:
        return OP_DOMAIN + canonical(self.signed_part(network_id))

    def to_wire(self) -> dict:
        return {"t": self.type.value, "author": self.author, "body": self.body, "time": self.time_s,
                "nonce": self.nonce, "seq": self.seq, "sig": self.signature}

    @property
    def id(self) -> bytes:
        return self.nonce

    @classmethod
    def from_wire(cls, obj: Any) -> Operation:
        if not isinstance(obj, dict) or set(obj) != {"t", "author", "body", "time", "nonce", "seq", "sig"}:
            raise OperationError("an operation is a map of t, author, body, time, nonce, seq, sig")
        try:
            op_type = OpType(obj["t"])
        except ValueError:
            raise OperationError(f"unknown operation type {obj['t']!r}") from None
        author, body, time_s, nonce, sig = obj["author"], obj["body"], obj["time"], obj["nonce"], obj["sig"]
        seq = obj["seq"]
        if not isinstance(seq, int) or isinstance(seq, bool) or not 0 < seq < MAX_SEQ:
            raise OperationError(f"operation seq must be an integer in 1..{MAX_SEQ - 1}")
        if not is_node_id(author):
            raise OperationError("operation author is not a node id")
        if not isinstance(body, dict):
            raise OperationError("operation body must be a map")
        if not isinstance(time_s, int) or isinstance(time_s, bool) or time_s < 0:
            raise OperationError("operation time must be a non-negative integer")
        if not (isinstance(nonce, bytes) and len(nonce) == 16 and isinstance(sig, bytes)):
            raise OperationError("operation nonce must be 16 bytes and its signature bytes")
        try:
            if len(canonical(obj)) > MAX_OP_BYTES:
                raise OperationError(f"operation is over {MAX_OP_BYTES} bytes")
        except EncodingError as exc:
            raise OperationError(f"operation has no canonical encoding: {exc}") from exc
        return cls(op_type, author, body, time_s, nonce, sig, seq)


def sign_operation(key: NodeKey, network_id: str, op_type: OpType, body: dict, *, now_s: int,
                   seq: int | None = None) -> Operation:
    op = Operation(op_type, key.node_id, body, now_s, secrets.token_bytes(16), seq=seq or next_sequence())
    return replace(op, signature=key.sign_for(network_id, op.signing_bytes(network_id)))


def profile_operation(key: NodeKey, network_id: str, profile: CapabilityProfile, max_role: str, *, now_s: int,
                      labels: dict[str, str] | None = None) -> Operation:
    body = {"profile": profile.to_wire(), "max_role": max_role, "labels": dict(labels or {})}
    return sign_operation(key, network_id, OpType.PROFILE, body, now_s=now_s)


def clock_operation(key: NodeKey, network_id: str, *, now_s: int, seq: int | None = None) -> Operation:
    """The proposer's clock. Its batch puts it first, so the proposer passes `seq` = its last applied
    + 1: below any operation of its own still waiting in the pool, which then stays applicable."""
    return sign_operation(key, network_id, OpType.CLOCK, {"time_s": now_s}, now_s=now_s, seq=seq)


def alive_operation(key: NodeKey, network_id: str, *, now_s: int) -> Operation:
    return sign_operation(key, network_id, OpType.ALIVE, {}, now_s=now_s)


def evidence_operation(key: NodeKey, network_id: str, evidence_wire: dict, *, now_s: int) -> Operation:
    return sign_operation(key, network_id, OpType.EVIDENCE, {"evidence": evidence_wire}, now_s=now_s)


def _evidence(body: dict, network_id: str) -> tuple[str, dict]:
    """(offender, record for the Primary) if the body carries valid evidence; OperationError otherwise."""
    from mycelium.consensus.outcomes import Evidence, EvidenceKind, verify_evidence
    from mycelium.encoding import hash_value

    raw = body.get("evidence")
    try:
        ev = Evidence(EvidenceKind(raw["kind"]), raw["from"], raw["h"], raw["r"], raw["a"], raw["b"])
    except (TypeError, KeyError, ValueError):
        raise OperationError("evidence is malformed") from None
    if not verify_evidence(ev, network_id):
        raise OperationError("evidence does not prove misbehaviour (signatures or messages do not check out)")
    record = {"id": hash_value(raw, person=b"myc-evidence"), "kind": ev.kind.value, "validator": ev.validator,
              "h": ev.height, "r": ev.round}
    return ev.validator, record


def deploy_operation(key: NodeKey, network_id: str, spec_wire: dict, *, now_s: int) -> Operation:
    return sign_operation(key, network_id, OpType.DEPLOY, {"spec": spec_wire}, now_s=now_s)


def endophyte_operation(key: NodeKey, network_id: str, body: dict, *, now_s: int) -> Operation:
    return sign_operation(key, network_id, OpType.ENDOPHYTE, body, now_s=now_s)


def undeploy_operation(key: NodeKey, network_id: str, name: str, *, now_s: int) -> Operation:
    return sign_operation(key, network_id, OpType.UNDEPLOY, {"name": name}, now_s=now_s)


def join_operation(key: NodeKey, network_id: str, invite: Invite, profile: CapabilityProfile, max_role: str,
                   *, now_s: int) -> Operation:
    body = {"invite": invite.to_wire(), "profile": profile.to_wire(), "max_role": max_role}
    pq = scheme_of(network_id).post_quantum
    body["kem"] = KemKey(key.seed()).public(pq)  # so the next secret rotation reaches this node
    if pq:
        body["pq_key"] = key.pq_public  # members verify this joiner's hybrid signatures against it
    return sign_operation(key, network_id, OpType.JOIN, body, now_s=now_s)


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


def _join_kem(body: dict, network_id: str) -> dict:
    """The joiner's key-agreement key, if its join carries a well-formed one (for rekey envelopes)."""
    try:
        governance._check_kem(body.get("kem"), network_id)
    except governance.GovernanceError:
        return {}
    return {"kem": body["kem"]}


def _role_config(max_validators: int):
    from mycelium.roles.fitness import DEFAULT_ROLE_CONFIG

    if max_validators == DEFAULT_ROLE_CONFIG.max_validators:
        return DEFAULT_ROLE_CONFIG
    return replace(DEFAULT_ROLE_CONFIG, max_validators=max_validators)


# --------------------------------------------------------------------------- apply


@dataclass(slots=True)
class _Draft:
    """The next Primary while a batch is applied (mutable; only apply_batch holds one)."""

    network_id: str
    height: int  # of the Primary being built
    members: dict[NodeId, Member]
    services: dict[str, dict]
    evidence: list[dict]
    params: dict[str, Any]
    invites_used: dict[str, int]
    now: int


def apply_batch(prev: PrimarySpore, batch: list[Any]) -> PrimarySpore:
    """The next Primary: `batch` applied in order on top of `prev`, then roles reassigned.
    Operations that fail their (clock-free) checks are skipped, identically on every validator."""
    params = dict(prev.params)
    draft = _Draft(prev.network_id, prev.height + 1, dict(prev.members), dict(prev.services), list(prev.evidence),
                   params, dict(params.get(INVITES_USED, {})), params.get(TIME, 0))
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
    return replace(prev, height=prev.height + 1, epoch=prev.epoch + (1 if validators_changed else 0),
                   prev_hash=prev.hash(), members=members, services=draft.services, placements=placements,
                   params=params, evidence=tuple(draft.evidence[-MAX_EVIDENCE_KEPT:]))


# --------------------------------------------------------------------------- one rule per operation type


@dataclass(frozen=True, slots=True)
class Rule:
    """What one operation type requires (`check`, may read the local clock when given) and what it
    changes (`apply`, deterministic, only ever called on an operation that passed `check`)."""

    check: Callable[[Operation, PrimarySpore, int | None], None]
    apply: Callable[[Operation, _Draft], None]


def _require_member(op: Operation, prev: PrimarySpore) -> None:
    if op.author not in prev.members:
        raise OperationError(f"{op.author[:16]} is not a member")


def _require_profile(op: Operation) -> None:
    try:
        CapabilityProfile.from_wire(op.body.get("profile"))
    except ProfileError as exc:
        raise OperationError(f"operation carries a bad profile: {exc}") from exc
    if op.body.get("max_role") not in ("sclerotium", "rhizomorph", "hypha"):
        raise OperationError("operation max_role must be sclerotium, rhizomorph or hypha")


def _require_admin(op: Operation, prev: PrimarySpore) -> None:
    if op.author not in prev.params.get(ADMINS, ()):
        raise NotAuthorized(f"{op.author[:16]} is not an admin of this network, so it cannot deploy; "
                            "ask an admin, or deploy on your own (personal) network")


def _check_member(op: Operation, prev: PrimarySpore, now_s: int | None) -> None:
    _require_member(op, prev)


def _apply_nothing(op: Operation, draft: _Draft) -> None:
    return None  # the operation only shows its author alive


def _check_profile(op: Operation, prev: PrimarySpore, now_s: int | None) -> None:
    _require_profile(op)
    _require_member(op, prev)


def _apply_profile(op: Operation, draft: _Draft) -> None:
    m = draft.members[op.author]
    caps = {"max_role": op.body["max_role"], "labels": _labels(op.body.get("labels")),
            **({"kem": m.caps["kem"]} if "kem" in m.caps else {})}  # the key-agreement key stays
    draft.members[op.author] = replace(m, profile=op.body["profile"], caps=caps)


def _check_join(op: Operation, prev: PrimarySpore, now_s: int | None) -> None:
    _require_profile(op)
    if op.author in prev.members:
        raise OperationError(f"{op.author[:16]} is already a member")
    try:
        invite = Invite.from_wire(op.body.get("invite"))
    except TokenError as exc:
        raise OperationError(f"join carries a malformed invite: {exc}") from exc
    if invite.network_id != prev.network_id or not invite.verify_signature():
        raise OperationError("join carries an invite that is forged or for another network")
    if invite.issuer not in prev.members:
        raise OperationError("join carries an invite from a node that is not a member")
    used = prev.params.get(INVITES_USED, {}).get(invite.invite_id.hex(), 0)
    if used >= invite.uses:
        raise OperationError("the invite has no uses left")
    if invite.invite_id.hex() in prev.params.get(governance.REVOKED, {}):
        raise OperationError("the invite was revoked by an admin; ask for a new one (`mycelium invite`)")
    if now_s is not None and invite.expires_s <= now_s:
        raise OperationError("the invite has expired")
    if invite.expires_s <= prev.params.get(TIME, 0):
        raise OperationError("the invite had expired by the Primary's clock")


def _apply_join(op: Operation, draft: _Draft) -> None:
    invite = Invite.from_wire(op.body["invite"])
    draft.invites_used[invite.invite_id.hex()] = draft.invites_used.get(invite.invite_id.hex(), 0) + 1
    caps = {"max_role": op.body["max_role"], **_join_kem(op.body, draft.network_id)}
    pq_key = op.body.get("pq_key") if isinstance(op.body.get("pq_key"), bytes) else b""
    draft.members[op.author] = Member("hypha", NEW_MEMBER_TRUST_PPM, caps, draft.height, op.body["profile"],
                                      pq_key if len(pq_key) == ML_DSA_65_PUBLIC_SIZE else b"")


def _apply_leave(op: Operation, draft: _Draft) -> None:
    governance.removed(op.author, draft.members, draft.params, draft.height)  # a rotation becomes due


def _check_governance(op: Operation, prev: PrimarySpore, now_s: int | None) -> None:
    try:
        governance.check(op.type.value, op.author, op.body, prev, now_s)
    except governance.NotAdmin as exc:
        raise NotAuthorized(str(exc)) from None
    except governance.GovernanceError as exc:
        raise OperationError(str(exc)) from None


def _apply_governance(op: Operation, draft: _Draft) -> None:
    governance.apply(op.type.value, op.author, op.body, draft.members, draft.params, draft.height)


def _check_deploy(op: Operation, prev: PrimarySpore, now_s: int | None) -> None:
    from mycelium.runtime.spec import ServiceSpec, SpecError

    _require_admin(op, prev)
    try:
        ServiceSpec.from_wire(op.body.get("spec"))
    except SpecError as exc:
        raise OperationError(f"deploy carries an invalid service spec: {exc}") from exc


def _apply_deploy(op: Operation, draft: _Draft) -> None:
    spec = op.body["spec"]
    draft.services[spec["name"]] = spec


def _check_undeploy(op: Operation, prev: PrimarySpore, now_s: int | None) -> None:
    _require_admin(op, prev)
    if op.body.get("name") not in prev.services:
        raise OperationError(f"no service named {op.body.get('name')!r} is deployed")


def _apply_undeploy(op: Operation, draft: _Draft) -> None:
    draft.services.pop(op.body["name"], None)


def _check_clock(op: Operation, prev: PrimarySpore, now_s: int | None) -> None:
    t = op.body.get("time_s")
    if op.author not in prev.validators():
        raise OperationError("only a validator may set the Primary's clock")
    if not isinstance(t, int) or isinstance(t, bool) or t < prev.params.get(TIME, 0):
        raise OperationError("a clock operation must carry a time not before the Primary's")
    if now_s is not None and abs(t - now_s) > MAX_CLOCK_SKEW_S:
        raise OperationError(f"the proposer's clock is {t - now_s:+d} s off ours (limit ±{MAX_CLOCK_SKEW_S} s)")


def _apply_clock(op: Operation, draft: _Draft) -> None:
    draft.now = max(draft.now, op.body["time_s"])
    draft.params[TIME] = draft.now


def _check_evidence(op: Operation, prev: PrimarySpore, now_s: int | None) -> None:
    _require_member(op, prev)
    offender, record = _evidence(op.body, prev.network_id)
    if offender not in prev.members:
        raise OperationError("evidence is about a node that is not a member")
    if any(e.get("id") == record["id"] for e in prev.evidence):
        raise OperationError("this evidence is already recorded")


def _apply_evidence(op: Operation, draft: _Draft) -> None:
    offender, record = _evidence(op.body, draft.network_id)
    draft.members[offender] = replace(draft.members[offender], trust_ppm=0)  # slashed: replaced as soon as possible
    draft.evidence.append(record)


def _check_endophyte(op: Operation, prev: PrimarySpore, now_s: int | None) -> None:
    from mycelium.ram.leases import KEY, LeaseError, check_action

    _require_member(op, prev)
    try:
        check_action(prev.params.get(KEY, {}), op.author, op.body, admin=op.author in prev.params.get(ADMINS, ()))
    except LeaseError as exc:
        if "not an admin" in str(exc):
            raise NotAuthorized(f"endophyte operation refused: {exc}") from exc
        raise OperationError(f"endophyte operation refused: {exc}") from exc


def _apply_endophyte(op: Operation, draft: _Draft) -> None:
    from mycelium.ram.leases import KEY, apply_action

    draft.params[KEY] = apply_action(draft.params.get(KEY, {}), op.author, op.body)


def _check_volume(op: Operation, prev: PrimarySpore, now_s: int | None) -> None:
    from mycelium.storage import volumes

    try:
        volumes.check(op.author, op.body, prev.params.get(volumes.VOLUMES, {}), admins=prev.params.get(ADMINS, []),
                      members=prev.members, now_s=prev.params.get(TIME, 0))
    except volumes.VolumeOpError as exc:
        raise OperationError(str(exc)) from exc


def _apply_volume(op: Operation, draft: _Draft) -> None:
    from mycelium.storage import volumes

    draft.params[volumes.VOLUMES] = volumes.apply(op.author, op.body, draft.params.get(volumes.VOLUMES, {}),
                                                  now_s=draft.now)


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
}
assert set(RULES) == set(OpType), "every operation type has exactly one rule"


def last_sequence(params: dict, node: NodeId) -> int:
    """The sequence of `node`'s last applied operation (0: none, or forgotten long after it left)."""
    if node in params.get(SEQ, {}):
        return params[SEQ][node]
    return params.get(SEQ_LEFT, {}).get(node, (0, 0))[0]


def _kept_sequences(seqs: dict[NodeId, int], left: dict[NodeId, tuple], members: dict[NodeId, Member], height: int
                    ) -> tuple[dict[NodeId, int], dict[NodeId, list[int]]]:
    """(members' sequences, departed nodes' [sequence, height they left]) — the newest
    MAX_DEPARTED_SEQS departures kept, chosen by (height, id) so every validator drops the same."""
    for node in seqs:
        if node not in members:
            left[node] = (seqs[node], height)  # left (or never became a member) at this height
    kept = {n: seqs[n] for n in sorted(seqs) if n in members}
    departed = sorted((n for n in left if n not in members), key=lambda n: (left[n][1], n))[-MAX_DEPARTED_SEQS:]
    return kept, {n: list(left[n]) for n in sorted(departed)}


def _labels(raw: Any) -> dict:
    if not isinstance(raw, dict):
        return {}
    return {k: v for k, v in list(raw.items())[:32] if isinstance(k, str) and isinstance(v, str) and len(k) + len(v) < 128}


def _place(services: dict[str, dict], members: dict[NodeId, Member], alive: dict[NodeId, bool]) -> dict[str, list[NodeId]]:
    """Where every service runs: rendezvous hashing weighted by what members offer (pure)."""
    if not services:
        return {}
    from mycelium.runtime.placement import NodeCapacity, place

    nodes = {}
    for node, m in members.items():
        try:
            profile = CapabilityProfile.from_wire(m.profile)
        except ProfileError:
            continue  # no profile yet: nothing is placed on it
        labels = m.caps.get("labels") if isinstance(m.caps.get("labels"), dict) else {}
        nodes[node] = NodeCapacity(role=m.role, labels=labels, cpu_millicores=profile.cores * 1000,
                                   memory_bytes=profile.ram_total_bytes * WORKLOAD_MEMORY_PERMILLE // 1000,
                                   alive=alive.get(node, True))
    placed = place(services, nodes)
    return {name: sorted(placed.get(name, [])) for name in sorted(services)}


def liveness(primary: PrimarySpore) -> dict[NodeId, bool]:
    """Which members the Primary considers alive (see the module docstring)."""
    now = primary.params.get(TIME, 0)
    seen = primary.params.get(SEEN, {})
    dead_after = primary.params.get(DEAD_AFTER, DEFAULT_DEAD_AFTER_S)
    return {n: now - seen.get(n, now) <= dead_after for n in primary.members}


def _candidates(members: dict[NodeId, Member], height: int, alive: dict[NodeId, bool] | None = None
                ) -> dict[NodeId, Candidate]:
    out: dict[NodeId, Candidate] = {}
    for node, m in members.items():
        try:
            profile = CapabilityProfile.from_wire(m.profile)
            cap = Role(m.caps.get("max_role", "sclerotium"))
            age = max(0, height - m.joined_at_height)
            uptime = 1000 if m.joined_at_height == 0 else min(1000, 1000 * age // UPTIME_WARMUP_HEIGHTS)
            out[node] = Candidate(profile=profile, trust=m.trust_ppm // 1000, cap=cap, uptime_permille=uptime,
                                  alive=True if alive is None else alive.get(node, True))
        except (ProfileError, RoleError, ValueError):
            continue  # no usable profile yet: keeps its role until it publishes one
    return out


def _reassign_roles(members: dict[NodeId, Member], height: int, alive: dict[NodeId, bool],
                    max_validators: int = governance.PARAMS["max_validators"].default) -> dict[NodeId, Member]:
    candidates = _candidates(members, height, alive)
    if not candidates:
        return members
    current = {n: Role(m.role) for n, m in members.items()}
    assignment = assign_roles(candidates, current, _role_config(max_validators))
    return {n: (replace(m, role=assignment.roles[n].value) if n in assignment.roles else m)
            for n, m in sorted(members.items())}


def role_reasons(primary: PrimarySpore) -> dict[NodeId, tuple[str, ...]]:
    """The role rule's deciding facts for each member (for `mycelium status`)."""
    members = primary.members
    candidates = _candidates(members, primary.height, liveness(primary))
    if not candidates:
        return {}
    prior = {n: Role(m.role) for n, m in members.items()}
    return assign_roles(candidates, prior).reasons
