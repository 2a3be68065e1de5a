"""Rules of membership: profile, join, leave, alive, the proposer's clock and evidence (pure)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from mycelium.identity import Invite, TokenError
from mycelium.ledger import governance
from mycelium.ledger.operation import (
    INVITES_USED, MAX_CLOCK_SKEW_S, NEW_MEMBER_TRUST_PPM, TIME, Operation, OperationError, _evidence,
)
from mycelium.ledger.rule import Draft, require_member, require_profile
from mycelium.signatures import ML_DSA_65_PUBLIC_SIZE
from mycelium.spores.primary import VALIDATOR_ROLE, Member, PrimarySpore


def _check_member(op: Operation, prev: PrimarySpore, now_s: int | None) -> None:
    require_member(op, prev)


def _apply_nothing(op: Operation, draft: Draft) -> None:
    return None  # the operation only shows its author alive


def _check_profile(op: Operation, prev: PrimarySpore, now_s: int | None) -> None:
    require_profile(op)
    require_member(op, prev)


def _apply_profile(op: Operation, draft: Draft) -> None:
    m = draft.members[op.author]
    caps = {"max_role": op.body["max_role"], "labels": _labels(op.body.get("labels")),
            **({"kem": m.caps["kem"]} if "kem" in m.caps else {})}  # the key-agreement key stays
    draft.members[op.author] = replace(m, profile=op.body["profile"], caps=caps)


def _check_join(op: Operation, prev: PrimarySpore, now_s: int | None) -> None:
    require_profile(op)
    if op.author in prev.members:
        raise OperationError(f"{op.author[:16]} is already a member")
    if any(e.get("validator") == op.author for e in prev.evidence):
        raise OperationError(f"{op.author[:16]} was slashed for misbehaviour (its evidence is in the Primary) and "
                             "cannot rejoin; a replacement device needs its own node key and a new invite")
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


def _apply_join(op: Operation, draft: Draft) -> None:
    invite = Invite.from_wire(op.body["invite"])
    draft.invites_used[invite.invite_id.hex()] = draft.invites_used.get(invite.invite_id.hex(), 0) + 1
    caps = {"max_role": op.body["max_role"], **_join_kem(op.body, draft.network_id)}
    pq_key = op.body.get("pq_key") if isinstance(op.body.get("pq_key"), bytes) else b""
    draft.members[op.author] = Member("hypha", NEW_MEMBER_TRUST_PPM, caps, draft.height, op.body["profile"],
                                      pq_key if len(pq_key) == ML_DSA_65_PUBLIC_SIZE else b"")


def _apply_leave(op: Operation, draft: Draft) -> None:
    governance.removed(op.author, draft.members, draft.params, draft.height)  # a rotation becomes due


def _check_clock(op: Operation, prev: PrimarySpore, now_s: int | None) -> None:
    t = op.body.get("time_s")
    if op.author not in prev.validators():
        raise OperationError("only a validator may set the Primary's clock")
    if not isinstance(t, int) or isinstance(t, bool) or t < prev.params.get(TIME, 0):
        raise OperationError("a clock operation must carry a time not before the Primary's")
    if now_s is not None and abs(t - now_s) > MAX_CLOCK_SKEW_S:
        raise OperationError(f"the proposer's clock is {t - now_s:+d} s off ours (limit ±{MAX_CLOCK_SKEW_S} s)")


def _apply_clock(op: Operation, draft: Draft) -> None:
    draft.now = max(draft.now, op.body["time_s"])
    draft.params[TIME] = draft.now


def _check_evidence(op: Operation, prev: PrimarySpore, now_s: int | None) -> None:
    require_member(op, prev)
    offender, record = _evidence(op.body, prev.network_id)
    if offender not in prev.members:
        raise OperationError("evidence is about a node that is not a member")
    if any(e.get("id") == record["id"] for e in prev.evidence):
        raise OperationError("this evidence is already recorded")


def _apply_evidence(op: Operation, draft: Draft) -> None:
    """Slashing: the proof is kept and the offender is removed exactly as by `remove` (its admin right
    goes, a secret rotation becomes due), so it holds only a dead secret and cannot rejoin (_check_join).
    The one exception is a network it is the only validator of: removing it would leave no one to
    decide the next height, so it stays, at trust 0, until the role rule can replace it."""
    offender, record = _evidence(op.body, draft.network_id)
    draft.evidence.append(record)
    if any(m.role == VALIDATOR_ROLE for n, m in draft.members.items() if n != offender):
        governance.removed(offender, draft.members, draft.params, draft.height)
    else:
        draft.members[offender] = replace(draft.members[offender], trust_ppm=0)


def _join_kem(body: dict, network_id: str) -> dict:
    """The joiner's key-agreement key, if its join carries a well-formed one (for rekey envelopes)."""
    try:
        governance._check_kem(body.get("kem"), network_id)
    except governance.GovernanceError:
        return {}
    return {"kem": body["kem"]}


def _labels(raw: Any) -> dict:
    if not isinstance(raw, dict):
        return {}
    return {k: v for k, v in list(raw.items())[:32] if isinstance(k, str) and isinstance(v, str) and len(k) + len(v) < 128}
