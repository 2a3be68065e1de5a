"""Signed operations: their types, wire form, signatures, sequences and constructors (pure).

What each type may do and how it changes the Primary: mycelium.ledger.operations (the rule table)
and the rule modules beside it; why: see that module's docstring.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, replace
from enum import Enum
from typing import Any

from mycelium.config import DEAD_AFTER_S
from mycelium.encoding import EncodingError, canonical
from mycelium.envelopes import KemKey
from mycelium.identity import Invite, NodeId, NodeKey, is_node_id, scheme_of
from mycelium.roles.profile import CapabilityProfile

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
DEFAULT_DEAD_AFTER_S = DEAD_AFTER_S
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
    PARTICIPATION = "participation"  # the proposer: who precommitted / withheld at the previous height (trust)
    RELEASE = "release"  # self-upgrade: publish a release (admins) / report on itself (mycelium.release.rules)


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
