"""Trust in the Primary: participation, withheld reveals, decay, evidence (mycelium.ledger.trust_rules)."""

from dataclasses import replace
from types import SimpleNamespace

import pytest

from mycelium.consensus.outcomes import Participation
from mycelium.consensus.trust import TrustConfig
from mycelium.identity import Genesis, NodeKey
from mycelium.ledger.operations import OperationError, apply_batch, check_operation, clock_operation
from mycelium.ledger.trust_rules import (
    TRUST_HEIGHT, ParticipationWitness, contradicted_by, decayed, participation_operation,
)
from mycelium.spores.certificate import QuorumCertificate, precommit_signing_bytes
from mycelium.spores.primary import Member, genesis_primary
from tests.profiles import make_profile

T0 = 1_800_000_000
CFG = TrustConfig()


def keys(n):
    return sorted((NodeKey.from_seed(bytes([i + 1]) * 32) for i in range(n)), key=lambda k: k.node_id)


def network(n=4, trust=CFG.prior_ppm):
    """A Primary whose n members are all validators (fully warmed up), at the prior trust."""
    ks = keys(n)
    p = genesis_primary(Genesis(name="t", founder=ks[0].node_id, created_s=T0, params={"dead_after_s": 10**6}))
    profile = make_profile(cores=4, ram_total_bytes=8 << 30, ram_available_bytes=4 << 30, load_1m_milli=100)
    members = {k.node_id: Member("sclerotium", trust, {"max_role": "sclerotium"}, 0, profile.to_wire())
               for k in ks}
    p = replace(p, members=members, params={**p.params, "time_s": T0})
    return ks, p


def certificate(p, signers, round_=0):
    msg = precommit_signing_bytes(p.network_id, p.height, round_, p.hash())
    return QuorumCertificate(p.height, round_, p.hash(), {k.node_id: k.sign_for(p.network_id, msg) for k in signers})


def step(p, proposer, signers, withheld=(), t=1):
    """One height: the proposer's clock and its participation report for `p`."""
    clock = clock_operation(proposer, p.network_id, now_s=T0 + t, seq=10 * t)
    report = participation_operation(proposer, p.network_id, certificate(p, signers), list(withheld),
                                     now_s=T0 + t, seq=10 * t + 1)
    return apply_batch(p, [clock.to_wire(), report.to_wire()]), report


def test_precommitters_gain_and_absentees_keep_their_trust():
    ks, p = network()
    nxt, _ = step(p, ks[0], ks[:3])
    for k in ks[:3]:
        assert nxt.members[k.node_id].trust_ppm == CFG.prior_ppm + CFG.agree_gain_ppm
    assert nxt.members[ks[3].node_id].trust_ppm == CFG.prior_ppm  # absence proves nothing: no gain, no cut
    assert nxt.params[TRUST_HEIGHT] == p.height


def test_withheld_reveal_cuts():
    ks, p = network()
    nxt, _ = step(p, ks[0], ks[:3], withheld=[ks[3].node_id])
    assert nxt.members[ks[3].node_id].trust_ppm == CFG.prior_ppm * CFG.withheld_keep_ppm // 1_000_000


def test_one_report_per_height_and_only_from_a_validator():
    ks, p = network()
    nxt, report = step(p, ks[0], ks[:3])
    again = participation_operation(ks[1], p.network_id, certificate(p, ks), [], now_s=T0 + 1, seq=99)
    applied_twice = apply_batch(p, [report.to_wire(), again.to_wire()])
    assert applied_twice.members[ks[0].node_id].trust_ppm == CFG.prior_ppm + CFG.agree_gain_ppm
    outsider = NodeKey.from_seed(b"\x55" * 32)
    with pytest.raises(OperationError, match="only a validator"):
        check_operation(participation_operation(outsider, p.network_id, certificate(p, ks), [], now_s=T0),
                        p, now_s=T0)


def test_forged_or_foreign_certificates_are_refused():
    ks, p = network()
    cert = certificate(p, ks[:3])
    forged = replace(cert, signatures={**cert.signatures, ks[3].node_id: cert.signatures[ks[0].node_id]})
    with pytest.raises(OperationError, match="invalid signature"):
        check_operation(participation_operation(ks[0], p.network_id, forged, [], now_s=T0), p, now_s=T0)
    other = replace(p, params={**p.params, "x": 1})
    with pytest.raises(OperationError, match="not for the previous Primary"):
        check_operation(participation_operation(ks[0], p.network_id, certificate(other, ks), [], now_s=T0),
                        p, now_s=T0)
    # inside apply_batch too: a certificate for another Primary credits nothing
    nxt = apply_batch(p, [participation_operation(ks[0], p.network_id, certificate(other, ks), [],
                                                  now_s=T0).to_wire()])
    assert all(m.trust_ppm == CFG.prior_ppm for m in nxt.members.values())


def test_a_validator_cannot_be_both_precommitted_and_withheld():
    ks, p = network()
    op = participation_operation(ks[0], p.network_id, certificate(p, ks[:3]), [], now_s=T0)
    op = replace(op, body={**op.body, "withheld": [ks[1].node_id]})
    with pytest.raises(OperationError):
        check_operation(op, p, now_s=T0)


def test_slashed_validators_stay_at_zero():
    ks, p = network()
    p = replace(p, members={**p.members, ks[3].node_id: replace(p.members[ks[3].node_id], trust_ppm=0)},
                evidence=({"id": b"e" * 32, "kind": "equivocation", "validator": ks[3].node_id, "h": 0, "r": 0},))
    nxt, _ = step(p, ks[0], ks)
    assert nxt.members[ks[3].node_id].trust_ppm == 0
    assert decayed(nxt.members, list(nxt.evidence))[ks[3].node_id].trust_ppm == 0


def test_decay_pulls_toward_the_prior_once_per_epoch():
    ks, p = network(trust=CFG.prior_ppm + 100_000)
    unchanged, _ = step(p, ks[0], [])  # same validator set: no decay
    assert unchanged.members[ks[0].node_id].trust_ppm == CFG.prior_ppm + 100_000
    d = decayed(p.members, [])
    assert d[ks[0].node_id].trust_ppm == CFG.prior_ppm + 100_000 - 100_000 * CFG.decay_ppm // 1_000_000


def test_a_validator_that_keeps_withholding_is_replaced():
    ks, p = network(5)  # 5 capable nodes, 4 seats: a replacement exists
    p = replace(p, members={**p.members, ks[4].node_id: replace(p.members[ks[4].node_id], role="rhizomorph")})
    slacker = ks[3]
    assert slacker.node_id in p.validators()
    for t in range(1, 40):
        honest = [k for k in ks if k.node_id in p.validators() and k != slacker]
        p, _ = step(p, honest[0], honest, withheld=[slacker.node_id] if slacker.node_id in p.validators() else [],
                    t=t)
        if slacker.node_id not in p.validators():
            break
    assert slacker.node_id not in p.validators()
    assert p.members[slacker.node_id].trust_ppm < CFG.replace_below_ppm
    assert ks[4].node_id in p.validators()


def test_the_witness_objects_to_a_lie_and_is_bounded():
    ks, p = network()
    w = ParticipationWitness()
    w.observe(Participation(p.height, 0, frozenset({ks[0].node_id, ks[3].node_id}), frozenset(),
                            frozenset({ks[2].node_id})))
    assert w.withheld(p.height) == [ks[2].node_id]
    lie = participation_operation(ks[0], p.network_id, certificate(p, ks[:2]), [ks[3].node_id], now_s=T0)
    truth = participation_operation(ks[0], p.network_id, certificate(p, ks[:2]), [ks[2].node_id], now_s=T0)
    assert contradicted_by(lie, w.opened(p.height)) and not contradicted_by(truth, w.opened(p.height))
    assert not contradicted_by(lie, w.opened(p.height + 1))  # no view of that height: no objection
    for h in range(100):
        w.observe(SimpleNamespace(height=h, agreed=(), dissented=(), withheld=()))
    assert len(w) == ParticipationWitness.KEPT
