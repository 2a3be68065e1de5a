"""Governance as consensus operations: admins, network parameters, invite revocation, removal of a
member, key-agreement keys, and rotation of the network secret (rekey). Pure and deterministic.

    admin          an admin: {"action": "add"|"remove", "node": id}; the last admin cannot be removed
    params         an admin: {"set": {key: int, …}}; each key known and within its bounds (PARAMS)
    invite_revoke  an admin: {"id": 32 hex}; a join with that invite is refused from then on
    remove         an admin: {"node": id}; the member is dropped and the secret rotates
    keys           a member, about itself: {"kem": its key-agreement public key (envelopes)}
    rekey          a validator, while a rotation is due: {"gen", "hash", "env": {member: envelope},
                   "past": the earlier secrets sealed under the new one (storage.keyring; optional)}

Eviction: with `evict_after_s` set (0, the default, never evicts), a member silent that long in
Primary time is removed at the next height exactly as by `remove` (`evictions`), so the secret
rotates. Being *dead* (silent for `dead_after_s`) is not a removal: a dead node keeps its membership
and comes back with its secret (a laptop asleep, a link down), as DESIGN's liveness says.

Rekey: a `leave`, a `remove`, an eviction or a slashing (evidence, membership_rules) marks a rotation due (params["rekey_due"]). A validator (the one
`rekeyer(primary)` names; any validator's valid `rekey` is accepted, the first in a batch wins)
draws a fresh secret and submits one envelope per remaining member with a key, plus the secret's
hash. Apply records {gen, hash, height} and the envelopes (latest rotation only: bounded). The
secret itself is never in the Primary; members open their envelope and check it against the hash.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from mycelium.config import DEAD_AFTER_S, HEARTBEAT_S, READ_ONLY_AFTER_S
from mycelium.envelopes import envelope_size, kem_public_size
from mycelium.identity import is_node_id, scheme_of
from mycelium.spores.primary import Member, PrimarySpore

ADMINS = "admins"
REVOKED = "invites_revoked"  # invite id (hex) → Primary time of the revocation
MAX_REVOKED = 1024  # revocations kept; an older one is dropped once its invite has surely expired
REVOCATION_KEPT_S = 30 * 24 * 3600  # = the longest invite TTL (api.routes.MAX_INVITE_TTL_S)
MAX_ADMINS = 64
SECRET = "secret"  # {"gen": int, "hash": bytes, "h": height it took effect}
REKEY_DUE = "rekey_due"  # {"gen": the generation owed, "since_h": height it became due, "removed": [ids]}
ENVELOPES = "envelopes"  # member → envelope of the latest rotation
REKEYER_TURN_HEIGHTS = 4  # if the named rekeyer has not rekeyed after this many heights, the next one is named


@dataclass(frozen=True, slots=True)
class Param:
    low: int
    high: int
    default: int
    doc: str


# Tunable network parameters. Keys are Primary params keys; values are integers.
PARAMS: dict[str, Param] = {
    "heartbeat_s": Param(1, 3600, HEARTBEAT_S, "an (empty) height is decided at least this often"),
    "dead_after_s": Param(5, 7 * 86400, DEAD_AFTER_S, "silence after which a member counts as dead (role rule, placement)"),
    "read_only_after_s": Param(5, 86400, READ_ONLY_AFTER_S, "no quorum of validators reachable this long → read-only mode"),
    "max_validators": Param(1, 31, 7, "upper bound on the validator set (the largest 3f+1 ≤ this)"),
    "history_kept": Param(16, 1_000_000, 4096, "certified Primaries each node keeps in its database"),
    "evict_after_s": Param(0, 10 * 365 * 86400, 0, "silence after which a member is removed as by `remove` and "
                           "the secret rotates (0: never)"),
}


class GovernanceError(ValueError):
    """A governance operation is not allowed; the message says why and what to do."""


class NotAdmin(GovernanceError):
    """The author is not an admin of the network."""


def param(primary: PrimarySpore | None, key: str) -> int:
    """The effective value of a tunable parameter (its default when never set)."""
    value = primary.params.get(key) if primary is not None else None
    return value if isinstance(value, int) and not isinstance(value, bool) else PARAMS[key].default


def effective_params(primary: PrimarySpore | None) -> dict[str, int]:
    return {k: param(primary, k) for k in PARAMS}


def check_params_change(changes: Any, current: dict[str, int]) -> dict[str, int]:
    """The parameters after `changes`; GovernanceError naming the bad key and its bounds otherwise."""
    if not isinstance(changes, dict) or not changes:
        raise GovernanceError("network set needs at least one KEY=VALUE")
    after = dict(current)
    for key, value in changes.items():
        spec = PARAMS.get(key) if isinstance(key, str) else None
        if spec is None:
            raise GovernanceError(f"unknown network parameter {key!r}; known: {', '.join(sorted(PARAMS))}")
        if not isinstance(value, int) or isinstance(value, bool) or not spec.low <= value <= spec.high:
            raise GovernanceError(f"{key} must be an integer in [{spec.low}, {spec.high}], got {value!r}")
        after[key] = value
    if after["dead_after_s"] < 2 * after["heartbeat_s"]:
        raise GovernanceError(
            f"dead_after_s ({after['dead_after_s']}) must be at least twice heartbeat_s ({after['heartbeat_s']}), "
            "or every member would look dead between heartbeats")
    if after["evict_after_s"] and after["evict_after_s"] < after["dead_after_s"]:
        raise GovernanceError(
            f"evict_after_s ({after['evict_after_s']}) must be 0 (never) or at least dead_after_s "
            f"({after['dead_after_s']}): a member is removed only after it has been dead")
    return after


def evictions(members: dict[str, Member], params: dict, seen: dict[str, int], now: int,
              validators: list[str]) -> list[str]:
    """Members silent longer than `evict_after_s` (Primary time), in id order — never the last admin,
    the only validator or the last member, whom nobody could replace, nor a member never seen on the
    Primary's clock (seen at time 0, before the first `clock`: its silence is unknown)."""
    limit = params.get("evict_after_s", 0)
    if not isinstance(limit, int) or isinstance(limit, bool) or limit <= 0:
        return []
    out: list[str] = []
    admins = set(params.get(ADMINS, ()))
    for node in sorted(members):
        last = seen.get(node, now)
        if last <= 0 or now - last <= limit or len(members) - len(out) <= 1:
            continue
        if (node in admins and not admins - {node} - set(out)) or validators == [node]:
            continue
        out.append(node)
    return out


def is_admin(primary: PrimarySpore, node: str) -> bool:
    return node in primary.params.get(ADMINS, ())


def rekeyer(primary: PrimarySpore) -> str | None:
    """The validator whose turn it is to rotate the secret (None when no rotation is due)."""
    due = primary.params.get(REKEY_DUE)
    validators = primary.validators()
    if not isinstance(due, dict) or not validators:
        return None
    turn = due["gen"] + max(0, primary.height - due["since_h"]) // REKEYER_TURN_HEIGHTS
    return validators[turn % len(validators)]


def secret_generation(primary: PrimarySpore | None) -> int:
    record = primary.params.get(SECRET) if primary is not None else None
    return record["gen"] if isinstance(record, dict) else 0


def envelope_recipients(primary: PrimarySpore) -> list[str]:
    """Members a rotation must reach: every member that registered a key-agreement key."""
    return sorted(n for n, m in primary.members.items() if m.caps.get("kem"))


# --------------------------------------------------------------------------- checks (raise GovernanceError)


def check(op_type: str, author: str, body: dict, prev: PrimarySpore, now_s: int | None) -> None:
    if op_type == "keys":
        _check_kem(body.get("kem"), prev.network_id)
        if author not in prev.members:
            raise GovernanceError(f"{author[:16]} is not a member")
        return
    if op_type == "rekey":
        _check_rekey(author, body, prev)
        return
    if not is_admin(prev, author):
        raise NotAdmin(f"{author[:16]} is not an admin of this network; ask an admin "
                              "(`mycelium network show` lists them)")
    if op_type == "admin":
        action, node = body.get("action"), body.get("node")
        admins = list(prev.params.get(ADMINS, ()))
        if action not in ("add", "remove") or not is_node_id(node):
            raise GovernanceError("admin needs action add or remove and a node id")
        if action == "add":
            if node not in prev.members:
                raise GovernanceError(f"{node[:16]} is not a member; only members can become admins")
            if node in admins:
                raise GovernanceError(f"{node[:16]} is already an admin")
            if len(admins) >= MAX_ADMINS:
                raise GovernanceError(f"a network has at most {MAX_ADMINS} admins")
        else:
            if node not in admins:
                raise GovernanceError(f"{node[:16]} is not an admin")
            if admins == [node]:
                raise GovernanceError("the last admin cannot be removed; add another admin first")
    elif op_type == "params":
        check_params_change(body.get("set"), effective_params(prev))
    elif op_type == "invite_revoke":
        raw = body.get("id")
        if not (isinstance(raw, str) and len(raw) == 32 and all(c in "0123456789abcdef" for c in raw)):
            raise GovernanceError("invite revoke needs a 32-hex-digit invite id (see `mycelium invite list`)")
        revoked = prev.params.get(REVOKED, {})
        if raw in revoked:
            raise GovernanceError(f"invite {raw} is already revoked")
        if len(_live_revocations(revoked, prev)) >= MAX_REVOKED:
            raise GovernanceError(f"{MAX_REVOKED} revocations are pending; wait for old invites to expire")
    elif op_type == "remove":
        node = body.get("node")
        if not is_node_id(node) or node not in prev.members:
            raise GovernanceError(f"{str(node)[:16]} is not a member")
        if len(prev.members) == 1:
            raise GovernanceError("the only member cannot be removed")
        if prev.validators() == [node]:
            raise GovernanceError("the only validator cannot be removed; wait until another member holds a seat")
    else:
        raise GovernanceError(f"unknown governance operation {op_type!r}")


def _check_kem(kem: Any, network_id: str) -> None:
    size = kem_public_size(scheme_of(network_id).post_quantum)
    if not isinstance(kem, bytes) or len(kem) != size:
        raise GovernanceError(f"a key-agreement public key has {size} bytes in this network")


def _check_rekey(author: str, body: dict, prev: PrimarySpore) -> None:
    due = prev.params.get(REKEY_DUE)
    if not isinstance(due, dict):
        raise GovernanceError("no secret rotation is due")
    if author not in prev.validators():
        raise GovernanceError("only a validator may rotate the network secret")
    gen, digest_, env = body.get("gen"), body.get("hash"), body.get("env")
    if gen != due["gen"] or not (isinstance(digest_, bytes) and len(digest_) == 32):
        raise GovernanceError(f"a rekey must carry generation {due['gen']} and a 32-byte secret hash")
    size = envelope_size(scheme_of(prev.network_id).post_quantum)
    if not isinstance(env, dict) or sorted(env) != envelope_recipients(prev):
        raise GovernanceError("a rekey must carry exactly one envelope per member with a key-agreement key")
    if not all(isinstance(e, bytes) and len(e) == size for e in env.values()):
        raise GovernanceError(f"every envelope has {size} bytes in this network")
    from mycelium.storage import keyring  # the sealed past is storage's (lazy, like the volume rules)

    past = body.get("past")
    if past is not None and not (isinstance(past, bytes) and len(past) <= keyring.MAX_PAST_BYTES):
        raise GovernanceError(f"a rekey's sealed past secrets are at most {keyring.MAX_PAST_BYTES} bytes")


def _live_revocations(revoked: dict, prev: PrimarySpore) -> dict:
    now = prev.params.get("time_s", 0)
    return {k: t for k, t in revoked.items() if now - t <= REVOCATION_KEPT_S}


# --------------------------------------------------------------------------- apply (after check passed)


def apply(op_type: str, author: str, body: dict, members: dict[str, Member], params: dict, height: int) -> None:
    """Apply a checked governance operation to the next Primary's members and params in place.
    `height` is the height being built."""
    if op_type == "admin":
        admins = [a for a in params.get(ADMINS, []) if a != body["node"]]
        params[ADMINS] = sorted(admins + [body["node"]]) if body["action"] == "add" else admins
    elif op_type == "params":
        params.update(body["set"])
    elif op_type == "invite_revoke":
        now = params.get("time_s", 0)
        revoked = {k: t for k, t in params.get(REVOKED, {}).items() if now - t <= REVOCATION_KEPT_S}
        revoked[body["id"]] = now
        params[REVOKED] = dict(sorted(revoked.items()))
    elif op_type == "remove":
        removed(body["node"], members, params, height)
    elif op_type == "keys":
        m = members[author]
        members[author] = replace(m, caps={**m.caps, "kem": body["kem"]})
    elif op_type == "rekey":
        params[SECRET] = {"gen": body["gen"], "hash": body["hash"], "h": height}
        params[ENVELOPES] = dict(sorted(body["env"].items()))
        params.pop(REKEY_DUE, None)
        from mycelium.storage import keyring

        params.pop(keyring.PARAM, None)  # sealed under the outgoing secret: useless to the new one
        if body.get("past"):
            params[keyring.PARAM] = body["past"]


def removed(node: str, members: dict[str, Member], params: dict, height: int) -> None:
    """`node` leaves the membership (leave, remove, slashed): drop it, its admin right, and make a rotation due."""
    members.pop(node, None)
    if node in params.get(ADMINS, ()):
        params[ADMINS] = [a for a in params[ADMINS] if a != node]
    due = params.get(REKEY_DUE)
    gen = (params[SECRET]["gen"] if isinstance(params.get(SECRET), dict) else 0) + 1
    if isinstance(due, dict):  # one rotation covers every removal since it became due
        params[REKEY_DUE] = {**due, "removed": sorted(set(due["removed"]) | {node})[-256:]}
    else:
        params[REKEY_DUE] = {"gen": gen, "since_h": height, "removed": [node]}
    envelopes = params.get(ENVELOPES)
    if isinstance(envelopes, dict) and node in envelopes:
        params[ENVELOPES] = {k: v for k, v in envelopes.items() if k != node}
