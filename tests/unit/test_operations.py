"""The deterministic apply function: operations in, next Primary out (mycelium.ledger.operations)."""

from dataclasses import replace

import pytest

from mycelium.consensus.messages import Precommit, sign
from mycelium.consensus.outcomes import equivocation
from mycelium.identity import Genesis, NodeKey, make_invite
from mycelium.ledger.operations import (
    DEFAULT_DEAD_AFTER_S,
    OperationError,
    alive_operation,
    apply_batch,
    check_operation,
    clock_operation,
    deploy_operation,
    evidence_operation,
    join_operation,
    liveness,
    profile_operation,
)
from mycelium.roles.profile import GIB
from mycelium.spores.primary import genesis_primary
from tests.profiles import make_profile

T0 = 1_800_000_000


def _profile(cores=4, ram=8 * GIB):
    return make_profile(cores=cores, ram_total_bytes=ram, ram_available_bytes=ram // 2, load_1m_milli=100)


def _keys(n):
    return sorted((NodeKey.from_seed(bytes([i + 1]) * 32) for i in range(n)), key=lambda k: k.node_id)


@pytest.fixture
def founded():
    founder = NodeKey.from_seed(b"\x07" * 32)
    genesis = Genesis(name="t", founder=founder.node_id, created_s=T0, params={"admins": [founder.node_id],
                                                                                 "dead_after_s": 30})
    p = genesis_primary(genesis)
    p = apply_batch(p, [clock_operation(founder, p.network_id, now_s=T0).to_wire(),
                        profile_operation(founder, p.network_id, _profile(), "sclerotium", now_s=T0).to_wire()])
    return founder, p


def _join(p, issuer, joiners, now_s, uses=None):
    inv = make_invite(issuer, p.network_id, ttl_s=3600, uses=uses or len(joiners), now_s=now_s)
    batch = [clock_operation(issuer, p.network_id, now_s=now_s).to_wire()]
    batch += [join_operation(k, p.network_id, inv, _profile(), "sclerotium", now_s=now_s).to_wire() for k in joiners]
    return apply_batch(p, batch), inv


def test_apply_is_deterministic_and_chains(founded):
    founder, p = founded
    batch = [clock_operation(founder, p.network_id, now_s=T0 + 5).to_wire()]
    a, b = apply_batch(p, batch), apply_batch(p, list(batch))
    assert a.hash() == b.hash() and a.to_bytes() == b.to_bytes()
    assert a.height == p.height + 1 and a.prev_hash == p.hash()


def test_join_uses_the_invite_once_per_use(founded):
    founder, p = founded
    joiners = _keys(3)
    p2, inv = _join(p, founder, joiners[:2], T0 + 1, uses=2)
    assert set(joiners[:2]) <= {k for k in joiners if k.node_id in p2.members}
    third = join_operation(joiners[2], p.network_id, inv, _profile(), "sclerotium", now_s=T0 + 2)
    with pytest.raises(OperationError, match="no uses left"):
        check_operation(third, p2, now_s=T0 + 2)
    assert joiners[2].node_id not in apply_batch(p2, [third.to_wire()]).members


def test_a_replayed_operation_is_applied_once(founded):
    founder, p = founded
    (k,) = _keys(1)
    p2, inv = _join(p, founder, [k], T0 + 1, uses=5)
    leave_and_rejoin = join_operation(k, p.network_id, inv, _profile(), "sclerotium", now_s=T0 + 1)
    assert apply_batch(p2, [leave_and_rejoin.to_wire()]).params["invites_used"] == p2.params["invites_used"]
    alive = alive_operation(k, p.network_id, now_s=T0 + 2).to_wire()
    p3 = apply_batch(p2, [alive])
    assert apply_batch(p3, [alive]).params["applied_ops"] == p3.params["applied_ops"]


def test_clock_rules(founded):
    founder, p = founded
    (other,) = _keys(1)
    with pytest.raises(OperationError, match="only a validator"):
        check_operation(clock_operation(other, p.network_id, now_s=T0), p, now_s=T0)
    with pytest.raises(OperationError, match="off ours"):
        check_operation(clock_operation(founder, p.network_id, now_s=T0 + 60), p, now_s=T0)
    with pytest.raises(OperationError, match="not before"):
        check_operation(clock_operation(founder, p.network_id, now_s=T0 - 5), p, now_s=T0 - 5)
    check_operation(clock_operation(founder, p.network_id, now_s=T0 + 3), p, now_s=T0)  # within skew


def test_a_silent_validator_is_dead_and_replaced_when_someone_can_take_its_seat(founded):
    founder, p = founded
    joiners = _keys(4)
    p, _ = _join(p, founder, joiners, T0 + 1)
    t = T0 + 1
    for _ in range(14):  # past the warm-up, everyone alive
        t += 2
        p = apply_batch(p, [clock_operation(founder, p.network_id, now_s=t).to_wire()] +
                        [alive_operation(k, p.network_id, now_s=t).to_wire() for k in joiners])
    validators = p.validators()
    assert len(validators) == 4
    victim = next(v for v in validators if v != founder.node_id)
    spare = next(n for n in p.members if n not in validators)
    others = [k for k in joiners if k.node_id != victim]
    assert all(liveness(p).values())
    for _ in range(3):  # the victim falls silent for longer than dead_after_s
        t += DEFAULT_DEAD_AFTER_S // 2 + 1
        p = apply_batch(p, [clock_operation(founder, p.network_id, now_s=t).to_wire()] +
                        [alive_operation(k, p.network_id, now_s=t).to_wire() for k in others])
    assert liveness(p)[victim] is False
    assert victim not in p.validators() and spare in p.validators() and len(p.validators()) == 4


def test_only_admins_deploy_and_services_are_placed(founded):
    founder, p = founded
    (k,) = _keys(1)
    p, _ = _join(p, founder, [k], T0 + 1)
    from pathlib import Path

    from mycelium.runtime.manifest import load_deployable

    example = Path(__file__).resolve().parents[2] / "examples" / "static-web.yaml"
    spec = load_deployable(example).to_wire()
    name = spec["name"]
    with pytest.raises(OperationError, match="not an admin"):
        check_operation(deploy_operation(k, p.network_id, spec, now_s=T0 + 2), p, now_s=T0 + 2)
    p2 = apply_batch(p, [deploy_operation(founder, p.network_id, spec, now_s=T0 + 2).to_wire()])
    assert name in p2.services and 1 <= len(p2.placements[name]) <= 2
    assert set(p2.placements[name]) <= set(p2.members)


def test_equivocation_evidence_slashes_the_validator(founded):
    founder, p = founded
    a = sign(Precommit(5, 0, b"\x01" * 32, founder.node_id), founder, p.network_id)
    b = sign(Precommit(5, 0, b"\x02" * 32, founder.node_id), founder, p.network_id)
    evidence = equivocation(a, b).to_wire()
    op = evidence_operation(founder, p.network_id, evidence, now_s=T0 + 1)
    p2 = apply_batch(p, [op.to_wire()])
    assert p2.members[founder.node_id].trust_ppm == 0
    assert p2.evidence and p2.evidence[-1]["validator"] == founder.node_id
    again = evidence_operation(founder, p.network_id, evidence, now_s=T0 + 2)
    with pytest.raises(OperationError, match="already recorded"):
        check_operation(again, p2, now_s=T0 + 2)
    forged = dict(evidence, b=dict(evidence["b"], sig=b"\x00" * 64))
    with pytest.raises(OperationError, match="does not prove"):
        check_operation(evidence_operation(founder, p.network_id, forged, now_s=T0 + 2), p, now_s=T0 + 2)
    same_twice = dict(evidence, b=evidence["a"])
    with pytest.raises(OperationError, match="does not prove"):
        check_operation(evidence_operation(founder, p.network_id, same_twice, now_s=T0 + 2), p, now_s=T0 + 2)


def test_tampered_operation_is_refused(founded):
    founder, p = founded
    op = deploy_operation(founder, p.network_id, {"name": "x"}, now_s=T0)
    tampered = replace(op, body={"name": "y"})
    with pytest.raises(OperationError, match="invalid signature"):
        check_operation(tampered, p, now_s=T0)
