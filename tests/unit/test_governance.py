"""Governance operations (admins, parameters, invite revocation, removal, keys, rekey): each checked
and applied deterministically; wrong ones are refused with a reason and change nothing."""

from __future__ import annotations

import pytest

from mycelium.envelopes import KemKey, seal, secret_hash
from mycelium.identity import Genesis, make_invite
from mycelium.ledger import governance
from mycelium.ledger.operations import OperationError, OpType, apply_batch, check_operation, sign_operation
from mycelium.spores.primary import Member, genesis_primary
from mycelium.testing.spores import node_key

NOW = 1_700_000_000
A, B, C = node_key(10), node_key(11), node_key(12)
GENESIS = Genesis(name="gov", founder=A.node_id, created_s=NOW, params={"admins": [A.node_id], "dead_after_s": 30})
NET = GENESIS.network_id


def _primary():
    p = genesis_primary(GENESIS)
    members = {**p.members, B.node_id: Member("hypha", 500_000, {}, 0), C.node_id: Member("hypha", 500_000, {}, 0)}
    from dataclasses import replace

    return replace(p, members=members)


def op(key, t, body):
    return sign_operation(key, NET, t, body, now_s=NOW)


def refused(o, prev, match):
    with pytest.raises(OperationError, match=match):
        check_operation(o, prev, now_s=NOW)
    after = apply_batch(prev, [o.to_wire()])
    assert after.members == prev.members and {k: v for k, v in after.params.items() if k not in ("seen", "applied_ops", "seq", "seq_left")} \
        == {k: v for k, v in prev.params.items() if k not in ("seen", "applied_ops", "seq", "seq_left")}


def test_admin_add_and_remove():
    p = _primary()
    p1 = apply_batch(p, [op(A, OpType.ADMIN, {"action": "add", "node": B.node_id}).to_wire()])
    assert p1.params["admins"] == sorted([A.node_id, B.node_id])
    p2 = apply_batch(p1, [op(B, OpType.ADMIN, {"action": "remove", "node": A.node_id}).to_wire()])
    assert p2.params["admins"] == [B.node_id]
    refused(op(B, OpType.ADMIN, {"action": "remove", "node": B.node_id}), p2, "last admin")
    refused(op(C, OpType.ADMIN, {"action": "add", "node": C.node_id}), p2, "not an admin")
    refused(op(B, OpType.ADMIN, {"action": "promote", "node": C.node_id}), p2, "add or remove")
    refused(op(B, OpType.ADMIN, {"action": "add", "node": node_key(99).node_id}), p2, "not a member")


def test_params_bounds_and_consistency():
    p = _primary()
    p1 = apply_batch(p, [op(A, OpType.PARAMS, {"set": {"heartbeat_s": 5, "max_validators": 4}}).to_wire()])
    assert governance.effective_params(p1)["heartbeat_s"] == 5 and p1.params["max_validators"] == 4
    refused(op(A, OpType.PARAMS, {"set": {"heartbeat_s": 0}}), p, r"heartbeat_s must be an integer in \[1, 3600\]")
    refused(op(A, OpType.PARAMS, {"set": {"colour": 3}}), p, "unknown network parameter")
    refused(op(A, OpType.PARAMS, {"set": {"dead_after_s": 10, "heartbeat_s": 6}}), p, "at least twice")
    refused(op(A, OpType.PARAMS, {"set": {}}), p, "at least one")
    refused(op(B, OpType.PARAMS, {"set": {"heartbeat_s": 5}}), p, "not an admin")


def test_a_revoked_invite_cannot_join():
    p = _primary()
    inv = make_invite(A, NET, ttl_s=3600, uses=1, now_s=NOW)
    p1 = apply_batch(p, [op(A, OpType.INVITE_REVOKE, {"id": inv.invite_id.hex()}).to_wire()])
    assert inv.invite_id.hex() in p1.params[governance.REVOKED]
    from mycelium.ledger.operations import join_operation
    from mycelium.roles.profile import CapabilityProfile  # noqa: F401  (the join needs a profile)
    from tests.profiles import make_profile as profile

    joiner = node_key(13)
    j = join_operation(joiner, NET, inv, profile(), "hypha", now_s=NOW)
    with pytest.raises(OperationError, match="revoked"):
        check_operation(j, p1, now_s=NOW)
    check_operation(j, p, now_s=NOW)  # the same join was fine before the revocation
    refused(op(A, OpType.INVITE_REVOKE, {"id": inv.invite_id.hex()}), p1, "already revoked")
    refused(op(A, OpType.INVITE_REVOKE, {"id": "xyz"}), p, "32-hex-digit")


def test_revocations_are_bounded():
    from dataclasses import replace

    p = _primary()

    full = replace(p, params={**p.params, governance.REVOKED: {f"{i:032x}": 0 for i in range(governance.MAX_REVOKED)}})
    refused(op(A, OpType.INVITE_REVOKE, {"id": "f" * 32}), full, "revocations are pending")
    # revocations older than the longest invite TTL no longer count against the bound, and are dropped
    later = replace(full, params={**full.params, "time_s": governance.REVOCATION_KEPT_S + 1})
    after = apply_batch(later, [op(A, OpType.INVITE_REVOKE, {"id": "f" * 32}).to_wire()])
    assert after.params[governance.REVOKED] == {"f" * 32: governance.REVOCATION_KEPT_S + 1}


def _with_kems(p):
    from dataclasses import replace

    members = {n: replace(m, caps={**m.caps, "kem": KemKey(k.seed()).public(False)})
               for (n, m), k in zip(sorted(p.members.items()), sorted([A, B, C], key=lambda k: k.node_id))}
    return replace(p, members=members)


def test_remove_makes_a_rotation_due_and_rekey_hands_the_secret_to_the_rest():
    p = _with_kems(_primary())
    p1 = apply_batch(p, [op(A, OpType.REMOVE, {"node": C.node_id}).to_wire()])
    assert C.node_id not in p1.members
    due = p1.params[governance.REKEY_DUE]
    assert due["gen"] == 1 and due["removed"] == [C.node_id]
    assert governance.rekeyer(p1) in p1.validators()
    secret = bytes(range(32))
    env = {n: seal(secret, p1.members[n].caps["kem"], network_id=NET, generation=1, node_id=n, pq=False)
           for n in governance.envelope_recipients(p1)}
    assert sorted(env) == sorted([A.node_id, B.node_id])
    rk = op(A, OpType.REKEY, {"gen": 1, "hash": secret_hash(secret, NET, 1), "env": env})
    check_operation(rk, p1, now_s=NOW)
    p2 = apply_batch(p1, [rk.to_wire()])
    assert governance.secret_generation(p2) == 1 and governance.REKEY_DUE not in p2.params
    opened = KemKey(B.seed()).open(p2.params[governance.ENVELOPES][B.node_id], network_id=NET, generation=1,
                                   node_id=B.node_id, pq=False)
    assert opened == secret
    with pytest.raises(Exception, match="does not open"):
        KemKey(C.seed()).open(env[B.node_id], network_id=NET, generation=1, node_id=B.node_id, pq=False)
    refused(rk, p2, "not above")  # the same operation again is a replay
    again = op(A, OpType.REKEY, {"gen": 1, "hash": secret_hash(secret, NET, 1), "env": env})
    refused(again, p2, "no secret rotation is due")
    # an envelope set that leaves out a member is refused
    short = op(A, OpType.REKEY, {"gen": 1, "hash": secret_hash(secret, NET, 1), "env": {A.node_id: env[A.node_id]}})
    refused(short, p1, "exactly one envelope per member")
    refused(op(B, OpType.REKEY, {"gen": 1, "hash": b"x" * 32, "env": env}), p1, "only a validator")


def test_a_rekey_carries_the_sealed_past_secrets_into_the_primary_bounded():
    from mycelium.storage import keyring

    p = _with_kems(_primary())
    p1 = apply_batch(p, [op(A, OpType.REMOVE, {"node": C.node_id}).to_wire()])
    s0, s1 = bytes(32), bytes(range(32))
    env = {n: seal(s1, p1.members[n].caps["kem"], network_id=NET, generation=1, node_id=n, pq=False)
           for n in governance.envelope_recipients(p1)}
    body = {"gen": 1, "hash": secret_hash(s1, NET, 1), "env": env}
    too_big = op(A, OpType.REKEY, {**body, "past": b"x" * (keyring.MAX_PAST_BYTES + 1)})
    refused(too_big, p1, "sealed past secrets are at most")
    refused(op(A, OpType.REKEY, {**body, "past": "not bytes"}), p1, "sealed past secrets")
    past = keyring.seal_past({0: s0}, s1, NET, 1)
    p2 = apply_batch(p1, [op(A, OpType.REKEY, {**body, "past": past}).to_wire()])
    assert p2.params[keyring.PARAM] == past and keyring.open_past(past, s1, NET, 1) == {0: s0}
    # a later rekey without a past drops the old one (it is sealed under a secret the new one replaced)
    p3 = apply_batch(p2, [op(A, OpType.REMOVE, {"node": B.node_id}).to_wire()])
    env2 = {n: seal(s0, p3.members[n].caps["kem"], network_id=NET, generation=2, node_id=n, pq=False)
            for n in governance.envelope_recipients(p3)}
    p4 = apply_batch(p3, [op(A, OpType.REKEY, {"gen": 2, "hash": secret_hash(s0, NET, 2), "env": env2}).to_wire()])
    assert governance.secret_generation(p4) == 2 and keyring.PARAM not in p4.params


def test_leave_also_makes_a_rotation_due():
    p = _primary()
    p1 = apply_batch(p, [op(B, OpType.LEAVE, {}).to_wire()])
    assert B.node_id not in p1.members and p1.params[governance.REKEY_DUE]["removed"] == [B.node_id]


def _evidence_against(key, height=5, network_id=NET):
    from mycelium.consensus.messages import Precommit, sign
    from mycelium.consensus.outcomes import equivocation

    a = sign(Precommit(height, 0, b"\x01" * 32, key.node_id), key, network_id)
    b = sign(Precommit(height, 0, b"\x02" * 32, key.node_id), key, network_id)
    return equivocation(a, b).to_wire()


def test_slashing_removes_the_member_like_remove_and_the_secret_rotates_without_it():
    from mycelium.ledger.operations import evidence_operation, join_operation
    from tests.profiles import make_profile

    p = _with_kems(_primary())
    p = apply_batch(p, [op(A, OpType.ADMIN, {"action": "add", "node": C.node_id}).to_wire()])
    inv = make_invite(C, NET, ttl_s=3600, uses=5, now_s=NOW)  # an invite the offender issued earlier
    p1 = apply_batch(p, [evidence_operation(B, NET, _evidence_against(C), now_s=NOW).to_wire()])
    assert C.node_id not in p1.members and C.node_id not in p1.params["admins"]
    assert p1.evidence[-1]["validator"] == C.node_id
    assert p1.params[governance.REKEY_DUE] == {"gen": 1, "since_h": p1.height, "removed": [C.node_id]}
    assert governance.envelope_recipients(p1) == sorted([A.node_id, B.node_id])
    # the rotation leaves it out: an envelope set that includes it is refused
    secret = bytes(range(32))
    env = {n: seal(secret, KemKey(k.seed()).public(False), network_id=NET, generation=1, node_id=n, pq=False)
           for n, k in ((A.node_id, A), (B.node_id, B), (C.node_id, C))}
    refused(op(A, OpType.REKEY, {"gen": 1, "hash": secret_hash(secret, NET, 1), "env": env}), p1,
            "exactly one envelope per member")
    kept = {n: e for n, e in env.items() if n != C.node_id}
    p2 = apply_batch(p1, [op(A, OpType.REKEY, {"gen": 1, "hash": secret_hash(secret, NET, 1), "env": kept}).to_wire()])
    assert governance.secret_generation(p2) == 1 and C.node_id not in p2.params[governance.ENVELOPES]
    # its invites die with its membership, it cannot rejoin with a member's fresh one, and the same
    # or new evidence about it changes nothing more
    rejoin = join_operation(C, NET, make_invite(A, NET, ttl_s=3600, uses=1, now_s=NOW), make_profile(), "hypha",
                            now_s=NOW)
    refused(rejoin, p2, "was slashed for misbehaviour")
    friend = join_operation(node_key(13), NET, inv, make_profile(), "hypha", now_s=NOW)
    refused(friend, p2, "not a member")
    refused(evidence_operation(A, NET, _evidence_against(C, height=6), now_s=NOW), p2, "not a member")


def test_the_only_validator_slashed_stays_at_zero_trust_and_nothing_rotates():
    from mycelium.ledger.operations import evidence_operation

    p = _with_kems(_primary())
    assert p.validators() == [A.node_id]
    p1 = apply_batch(p, [evidence_operation(B, NET, _evidence_against(A), now_s=NOW).to_wire()])
    assert p1.members[A.node_id].trust_ppm == 0 and p1.evidence[-1]["validator"] == A.node_id
    assert governance.REKEY_DUE not in p1.params and p1.validators() == [A.node_id]


def test_remove_refusals():
    p = _primary()
    refused(op(A, OpType.REMOVE, {"node": node_key(55).node_id}), p, "not a member")
    refused(op(B, OpType.REMOVE, {"node": C.node_id}), p, "not an admin")
    refused(op(A, OpType.REMOVE, {"node": A.node_id}), p, "only validator")


@pytest.mark.parametrize("pq", [False, True])
def test_envelopes_open_only_for_their_member(pq):
    secret = bytes(32)
    env = seal(secret, KemKey(A.seed()).public(pq), network_id=NET, generation=3, node_id=A.node_id, pq=pq)
    assert KemKey(A.seed()).open(env, network_id=NET, generation=3, node_id=A.node_id, pq=pq) == secret
    for gen, who in ((4, A.node_id), (3, B.node_id)):
        with pytest.raises(Exception, match="does not open"):
            KemKey(A.seed()).open(env, network_id=NET, generation=gen, node_id=who, pq=pq)


def test_admins_are_bounded():
    from dataclasses import replace

    p = _primary()
    many = [node_key(100 + i).node_id for i in range(governance.MAX_ADMINS - 1)] + [A.node_id]
    full = replace(p, params={**p.params, "admins": sorted(many)})
    refused(op(A, OpType.ADMIN, {"action": "add", "node": B.node_id}), full, f"at most {governance.MAX_ADMINS} admins")


def _clock(t):
    return sign_operation(A, NET, OpType.CLOCK, {"time_s": t}, now_s=NOW)


def test_a_member_silent_beyond_evict_after_is_removed_and_the_secret_rotates():
    for evict in (0, 3600):  # 0 (the default): a dead member stays a member, nothing rotates
        p = _primary()
        if evict:
            p = apply_batch(p, [op(A, OpType.PARAMS, {"set": {"evict_after_s": evict}}).to_wire()])
        p1 = apply_batch(p, [_clock(NOW).to_wire(), op(B, OpType.ALIVE, {}).to_wire(), op(C, OpType.ALIVE, {}).to_wire()])
        assert len(p1.members) == 3  # seen at time 0 (before the first clock) is no silence
        p2 = apply_batch(p1, [_clock(NOW + 3000).to_wire(), op(C, OpType.ALIVE, {}).to_wire()])
        late = _clock(NOW + 3700).to_wire()
        p3 = apply_batch(p2, [late])  # B silent 3 700 s, C 700 s
        assert C.node_id in p3.members and A.node_id in p3.members
        if evict:
            assert B.node_id not in p3.members and B.node_id not in p3.params["seen"]
            assert p3.params[governance.REKEY_DUE]["removed"] == [B.node_id]
        else:
            assert B.node_id in p3.members and governance.REKEY_DUE not in p3.params
        assert apply_batch(p2, [late]) == p3  # deterministic


def test_eviction_spares_the_last_admin_the_only_validator_and_the_last_member():
    members = {n: Member("hypha", 500_000, {}, 0) for n in ("a", "b", "c")}
    old = {"a": 1, "b": 1, "c": 1}
    params = {"evict_after_s": 100, "admins": ["a"]}
    assert governance.evictions(members, params, old, 1000, ["b"]) == ["c"]  # a: last admin, b: only validator
    assert governance.evictions(members, {**params, "admins": ["a", "c"]}, old, 1000, ["b"]) == ["a"]
    assert governance.evictions(members, params, old, 1000, ["a", "b", "c", "d"]) == ["b", "c"]
    assert governance.evictions({"c": members["c"]}, params, old, 1000, []) == []  # the last member stays
    assert governance.evictions(members, params, {**old, "c": 950}, 1000, ["b"]) == []
    assert governance.evictions(members, {"evict_after_s": 0}, old, 10**9, []) == []
    assert governance.evictions(members, params, {"a": 0, "b": 0, "c": 0}, 10**9, ["b"]) == []  # never on the clock


def test_evict_after_must_be_zero_or_at_least_dead_after():
    p = _primary()
    refused(op(A, OpType.PARAMS, {"set": {"evict_after_s": 10}}), p, "at least dead_after_s")
    refused(op(A, OpType.PARAMS, {"set": {"evict_after_s": -1}}), p, r"evict_after_s must be an integer")
    p1 = apply_batch(p, [op(A, OpType.PARAMS, {"set": {"evict_after_s": 30}}).to_wire()])
    assert governance.effective_params(p1)["evict_after_s"] == 30
