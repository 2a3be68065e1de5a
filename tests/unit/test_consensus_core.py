"""The consensus core driven by hand: one validator under test, the others scripted."""

from __future__ import annotations

import pytest

from mycelium.shell.effects import Broadcast, SetTimer
from mycelium.encoding import canonical, decode
from mycelium.spores.certificate import QuorumCertificate
from mycelium.consensus.config import ConsensusConfig
from mycelium.consensus.core import ConsensusCore, Step
from mycelium.testing.localnet import GENESIS_HASH, LedgerApp, LocalNet, localnet_key
from mycelium.consensus.messages import (
    NIL, Commitment, Decision, Precommit, Proposal, Reveal, commit_nonce, commitment_hash, parse_message, sign,
)
from mycelium.consensus.outcomes import Decided, Evidence, EvidenceKind, PersistLock, verify_evidence
from mycelium.consensus.persist import ConsensusStateError

NET = "test-net"
CONFIG = ConsensusConfig.local()
KEYS = sorted((localnet_key(42, i) for i in range(5)), key=lambda k: k.node_id)
IDS = [k.node_id for k in KEYS[:4]]  # four validators; KEYS[4] is an outsider


def app(pending=()):
    return LedgerApp({0: list(IDS)}, pending=list(pending))


def core_for(i, pending=(), **kw):
    return ConsensusCore(KEYS[i], NET, app(pending), CONFIG, height=1, prev_hash=GENESIS_HASH, **kw)


def candidate(batch, height=1, prev=GENESIS_HASH):
    return app().execute(height, list(batch), prev)


# helpers to sign peers' messages
def proposal(round_, batch=(), vr=-1, height=1, key=None):
    key = key or KEYS[IDS.index(IDS[(height + round_) % 4])]
    return sign(Proposal(height, round_, tuple(batch), GENESIS_HASH, vr, key.node_id), key, NET).to_wire()


def commit_and_reveal(i, round_, cand, height=1):
    key = KEYS[i]
    nonce = commit_nonce(key, NET, height, round_, cand)
    c = sign(Commitment(height, round_, commitment_hash(cand, nonce, key.node_id, height, round_), key.node_id), key, NET)
    r = sign(Reveal(height, round_, cand, nonce, key.node_id), key, NET)
    return c.to_wire(), r.to_wire()


def precommit(i, round_, value, height=1):
    return sign(Precommit(height, round_, value, KEYS[i].node_id), KEYS[i], NET).to_wire()


def feed(core, messages, now=0.0):
    out = []
    for m in messages:
        out += core.on_message(IDS[0], m, now)
    return out


def own(effects, kind):
    return [parse_message(e.message) for e in effects if isinstance(e, Broadcast)
            and isinstance(parse_message(e.message), kind)]


def test_single_validator_waits_for_the_heartbeat_then_decides_an_empty_height():
    core = ConsensusCore(KEYS[0], NET, LedgerApp({0: [IDS[0]]}), CONFIG, height=1, prev_hash=GENESIS_HASH)
    first = core.start(0.0)
    assert not own(first, Proposal), "nothing to propose: wait for the heartbeat"
    assert SetTimer("heartbeat", CONFIG.batch_poll_interval_s) in first
    out = []
    t = 0.0
    while not any(isinstance(e, Decided) for e in out):
        t += CONFIG.batch_poll_interval_s
        out += core.on_tick(t)
    decided = next(e for e in out if isinstance(e, Decided))
    assert t >= CONFIG.heartbeat_interval_s and decided.batch == () and decided.height == 1
    decided.certificate.verify(NET, [IDS[0]], expect_value=candidate(()))
    assert core.height == 2 and core.prev_hash == decided.value


def test_operations_are_proposed_at_once_and_every_signature_is_persisted_before_it_is_sent():
    core = ConsensusCore(KEYS[0], NET, LedgerApp({0: [IDS[0]]}, pending=["op-1"]), CONFIG, height=1,
                         prev_hash=GENESIS_HASH)
    out = core.start(0.0)
    decided = [e for e in out if isinstance(e, Decided)]
    assert decided and decided[0].batch == ("op-1",)
    persisted: set[bytes] = set()
    for e in out:
        if isinstance(e, PersistLock):
            persisted |= {canonical(w) for slots in e.state["own"].values() for k, w in slots.items() if k != "cand"}
        elif isinstance(e, Broadcast):
            assert canonical(e.message) in persisted, "sent before it was persisted"


def test_poke_makes_a_waiting_proposer_propose():
    core = ConsensusCore(KEYS[0], NET, LedgerApp({0: [IDS[0]]}), CONFIG, height=1, prev_hash=GENESIS_HASH)
    core.start(0.0)
    core.app.pending.append("op-late")
    out = core.poke(0.1)
    assert any(isinstance(e, Decided) and e.batch == ("op-late",) for e in out)


def test_proposer_rotates_over_the_sorted_validator_set():
    core = core_for(0)
    assert [core.proposer(1, r) for r in range(4)] == [IDS[1], IDS[2], IDS[3], IDS[0]]
    assert core.proposer(2, 0) == IDS[2]


def test_timeouts_grow_with_the_round():
    c = CONFIG
    for timeout in (c.propose_timeout, c.commit_timeout, c.reveal_timeout, c.precommit_timeout):
        assert timeout(0) < timeout(1) < timeout(5)


def drive_to_lock_on_a(core):
    """Round 0: proposal A, 3 of 4 reveal A → the core locks on A and precommits it; then 3 nil
    precommits end the round."""
    a = candidate(("op-a",))
    out = feed(core, [proposal(0, ("op-a",))])
    for i in (1, 2):
        c, r = commit_and_reveal(i, 0, a)
        out += feed(core, [c, r])
    return a, out


def test_locks_before_precommitting_and_honours_the_lock_in_later_rounds():
    core = core_for(0)
    core.start(0.0)
    a, out = drive_to_lock_on_a(core)
    precommits = own(out, Precommit)
    assert [p.value for p in precommits] == [a]
    i_lock = next(i for i, e in enumerate(out) if isinstance(e, PersistLock) and e.state["locked"] == [0, a])
    i_send = next(i for i, e in enumerate(out) if isinstance(e, Broadcast) and parse_message(e.message) == precommits[0])
    assert i_lock < i_send, "the lock is persisted before the precommit is sent"
    # round 0 ends without a decision
    out = feed(core, [precommit(i, 0, NIL) for i in (1, 2, 3)], now=1.0)
    out += core.on_tick(10.0)
    assert core.round == 1 and core.locked_value == a
    # round 1: a different value B without proof → the locked core commits nil
    out = feed(core, [proposal(1, ("op-b",))], now=10.0)
    commitments = own(out, Commitment)
    assert len(commitments) == 1
    nil_seal = commitment_hash(NIL, commit_nonce(KEYS[0], NET, 1, 1, NIL), IDS[0], 1, 1)
    assert commitments[0].commitment == nil_seal
    # round 2: A re-proposed with valid_round 0 (2f+1 reveals seen there) → commits A again
    out = feed(core, [precommit(i, 1, NIL) for i in (1, 2, 3)], now=11.0) + core.on_tick(30.0)
    assert core.round == 2
    out = feed(core, [proposal(2, ("op-a",), vr=0)], now=30.0)
    seal = commitment_hash(a, commit_nonce(KEYS[0], NET, 1, 2, a), IDS[0], 1, 2)
    assert [c.commitment for c in own(out, Commitment)] == [seal]


def test_decides_on_a_quorum_of_precommits_with_a_valid_certificate():
    core = core_for(0)
    core.start(0.0)
    a, _ = drive_to_lock_on_a(core)
    out = feed(core, [precommit(1, 0, a), precommit(2, 0, a)])
    decided = [e for e in out if isinstance(e, Decided)]
    assert len(decided) == 1 and decided[0].value == a and decided[0].batch == ("op-a",)
    decided[0].certificate.verify(NET, IDS, expect_value=a)
    assert core.height == 2


def test_restarted_core_refuses_to_sign_differently():
    core = core_for(0)
    core.start(0.0)
    a, out = drive_to_lock_on_a(core)
    state = [e.state for e in out if isinstance(e, PersistLock)][-1]
    stored = decode(canonical(state))  # what the shell writes and reads back
    rebuilt = ConsensusCore.restore(KEYS[0], NET, app(), CONFIG, height=1, prev_hash=GENESIS_HASH, state=stored)
    resumed = rebuilt.start(100.0)
    assert rebuilt.round == 0 and rebuilt.step is Step.PRECOMMIT and rebuilt.locked_value == a
    assert [p.value for p in own(resumed, Precommit)] == [a], "it resends what it signed before"
    # the round-0 proposer equivocates: the rebuilt core must not commit to B in round 0
    liar = sign(Proposal(1, 0, ("op-b",), GENESIS_HASH, -1, IDS[1]), KEYS[1], NET).to_wire()
    out = feed(rebuilt, [liar], now=100.0)
    assert not own(out, Commitment)
    assert rebuilt.locked_value == a


def test_signing_guard_holds_even_if_the_step_was_lost():
    core = core_for(0)
    core.start(0.0)
    a, out = drive_to_lock_on_a(core)
    state = next(dict(e.state) for e in out if isinstance(e, PersistLock) and e.state["step"] == "commit")
    state["step"] = "propose"  # as if the step had not been recorded
    rebuilt = ConsensusCore.restore(KEYS[0], NET, app(), CONFIG, height=1, prev_hash=GENESIS_HASH, state=state)
    rebuilt.start(5.0)
    liar = sign(Proposal(1, 0, ("op-b",), GENESIS_HASH, -1, IDS[1]), KEYS[1], NET).to_wire()
    out = feed(rebuilt, [liar], now=5.0)
    original = parse_message(state["own"][0]["commit"])
    assert own(out, Commitment) == [original], "the earlier commitment is resent, no new one is signed"
    assert rebuilt.errors["refused_double_sign"] == 1


def test_restore_refuses_unusable_state():
    core = core_for(0)
    out = core.start(0.0) + drive_to_lock_on_a(core)[1]
    state = [e.state for e in out if isinstance(e, PersistLock)][-1]
    with pytest.raises(ConsensusStateError, match="height"):
        ConsensusCore.restore(KEYS[0], NET, app(), CONFIG, height=0, prev_hash=GENESIS_HASH, state=state)
    with pytest.raises(ConsensusStateError, match="another key"):
        ConsensusCore.restore(KEYS[1], NET, app(), CONFIG, height=1, prev_hash=GENESIS_HASH, state=state)
    with pytest.raises(ConsensusStateError, match="version"):
        ConsensusCore.restore(KEYS[0], NET, app(), CONFIG, height=1, prev_hash=GENESIS_HASH, state={"v": 9})
    old = ConsensusCore.restore(KEYS[0], NET, app(), CONFIG, height=2, prev_hash=b"\x01" * 32, state=state)
    old.start(0.0)
    assert old.height == 2 and old.round == 0, "state of an already decided height is ignored"


def test_equivocation_and_reveal_mismatch_produce_verifiable_evidence():
    core = core_for(0)
    core.start(0.0)
    feed(core, [proposal(0, ("op-a",))])
    c1, _ = commit_and_reveal(2, 0, candidate(("op-a",)))
    c2, _ = commit_and_reveal(2, 0, candidate(("op-x",)))
    out = feed(core, [c1, c2])
    evidence = [e for e in out if isinstance(e, Evidence)]
    assert [e.kind for e in evidence] == [EvidenceKind.EQUIVOCATION] and verify_evidence(evidence[0], NET)
    c3, _ = commit_and_reveal(3, 0, candidate(("op-a",)))
    _, lie = commit_and_reveal(3, 0, candidate(("op-y",)))
    out = feed(core, [c3, lie])
    evidence = [e for e in out if isinstance(e, Evidence)]
    assert [e.kind for e in evidence] == [EvidenceKind.REVEAL_MISMATCH] and verify_evidence(evidence[0], NET)
    assert IDS[3] not in core.votes[0].opened(), "a mismatched reveal is not counted"


def test_bad_input_is_counted_not_raised():
    core = core_for(0)
    core.start(0.0)
    outsider = KEYS[4]
    c_out, _ = commit_and_reveal(4, 0, NIL)
    forged = {**commit_and_reveal(1, 0, NIL)[0], "sig": b"\0" * 64}
    not_proposer = sign(Proposal(1, 0, (), GENESIS_HASH, -1, IDS[3]), KEYS[3], NET).to_wire()
    old = sign(Commitment(0, 0, b"\1" * 32, IDS[1]), KEYS[1], NET).to_wire()
    far = sign(Commitment(3, 0, b"\1" * 32, IDS[1]), KEYS[1], NET).to_wire()
    feed(core, [b"\xff\x00", {"v": 1}, c_out, forged, not_proposer, old, far, 17, None])
    assert outsider.node_id not in core.vset
    assert core.errors == {"malformed": 4, "not_validator": 1, "bad_signature": 1, "not_proposer": 1,
                           "old_height": 1, "future_dropped": 1}


def test_f_plus_one_higher_rounds_make_a_validator_skip_ahead():
    core = core_for(0)
    core.start(0.0)
    feed(core, [commit_and_reveal(1, 7, NIL)[0]])
    assert core.round == 0, "one validator (possibly Byzantine) cannot move us"
    feed(core, [commit_and_reveal(2, 5, NIL)[0]])
    assert core.round == 5, "f+1 = 2 validators at round ≥ 5: one of them is honest"


def test_lagging_validator_catches_up_from_a_decision():
    net = LocalNet(4, seed=5)
    net.run(4.0)
    decisions = [net.cores[1].decisions[h][0] for h in (1, 2)]
    late = ConsensusCore(net.keys[0], net.network_id, LedgerApp(net.apps[0].schedule), net.config, height=1,
                         prev_hash=GENESIS_HASH)
    late.start(0.0)
    bogus = Decision(1, ("op-z",), GENESIS_HASH, QuorumCertificate(1, 0, decisions[0].certificate.value,
                                                                   decisions[0].certificate.signatures))
    late.on_message(net.ids[1], bogus.to_wire(), 1.0)
    assert late.errors["bad_decision"] == 1 and late.height == 1
    out = late.on_message(net.ids[1], decisions[1].to_wire(), 1.0)  # ahead: kept for later
    out += late.on_message(net.ids[1], decisions[0].to_wire(), 1.0)
    assert [e.height for e in out if isinstance(e, Decided)] == [1, 2] and late.height == 3


def test_rebroadcast_resends_the_locked_rounds_votes():
    """Regression (sim seed 11, a liar among four, a restart): a validator that forgot round 0's
    reveals could never accept the re-proposal of the value locked there, unless the validators
    that revealed it in round 0 resend those reveals in later rounds."""
    core = core_for(0)
    core.start(0.0)
    a, _ = drive_to_lock_on_a(core)
    feed(core, [precommit(i, 0, NIL) for i in (1, 2, 3)], now=1.0)
    core.on_tick(10.0)
    assert core.round == 1 and core.locked_round == 0
    out = core.on_tick(20.0)  # the rebroadcast timer fires
    resent = own(out, Reveal)
    assert any(r.round == 0 and r.candidate == a for r in resent)


def test_a_clock_that_goes_back_moves_pending_timers_back():
    """Regression (sim seed 110: a validator's clock jumped back 179 s and its timers stalled it)."""
    core = core_for(0)
    first = core.start(1000.0)
    propose_at = next(e.at for e in first if isinstance(e, SetTimer) and e.name == "propose")
    out = core.on_message(IDS[1], b"junk", 900.0)  # the clock jumped back 100 s
    moved = {e.name: e.at for e in out if isinstance(e, SetTimer)}
    assert moved["propose"] == pytest.approx(propose_at - 100.0)
    out = core.on_tick(propose_at - 100.0)
    assert own(out, Commitment), "the propose timeout fires on the new clock"


class LapsingApp(LedgerApp):
    """validate_batch as the real ledger's: a local judgement that lapses with time (its clock check
    refuses a batch whose clock operation is over 10 s old). `lapsed` stands for "10 s went by"."""

    lapsed = False

    def validate_batch(self, height, batch):
        return not self.lapsed and super().validate_batch(height, batch)


def test_a_locked_value_reproposed_after_its_local_validity_lapsed_is_accepted():
    """Regression (rollout test under load: the chain stopped for good, every validator voting). A
    value that got 2f+1 reveals in round 0 but no decision is re-proposed in later rounds; by then
    its clock operation was too old for the ledger's validate_batch, every validator committed nil
    to it, and the locked ones could accept nothing else: no height ever again."""
    core = ConsensusCore(KEYS[0], NET, LapsingApp({0: list(IDS)}), CONFIG, height=1, prev_hash=GENESIS_HASH)
    core.start(0.0)
    a, _ = drive_to_lock_on_a(core)
    feed(core, [precommit(i, 0, NIL) for i in (1, 2, 3)], now=1.0)
    core.on_tick(10.0)
    assert core.round == 1 and core.locked_value == a
    core.app.lapsed = True
    out = feed(core, [proposal(1, ("op-a",), vr=0)], now=15.0)
    seal = commitment_hash(a, commit_nonce(KEYS[0], NET, 1, 1, a), IDS[0], 1, 1)
    assert [c.commitment for c in own(out, Commitment)] == [seal], "2f+1 revealed A in round 0: A is valid"
    out = feed(core, [m for i in (1, 2) for m in commit_and_reveal(i, 1, a)], now=15.5)
    assert [p.value for p in own(out, Precommit) if p.round == 1] == [a], "2f+1 reveals of A in round 1"
    out = feed(core, [precommit(i, 1, a) for i in (1, 2)], now=16.0)
    assert [e.value for e in out if isinstance(e, Decided)] == [a] and core.height == 2


def test_a_fresh_proposal_is_still_judged_by_the_application():
    core = ConsensusCore(KEYS[0], NET, LapsingApp({0: list(IDS)}), CONFIG, height=1, prev_hash=GENESIS_HASH)
    core.start(0.0)
    core.app.lapsed = True
    out = feed(core, [proposal(0, ("op-a",))])
    nil_seal = commitment_hash(NIL, commit_nonce(KEYS[0], NET, 1, 0, NIL), IDS[0], 1, 0)
    assert [c.commitment for c in own(out, Commitment)] == [nil_seal]


def test_a_reproposal_nobody_vouched_for_waits_for_its_round_quorum_then_times_out_to_nil():
    core = ConsensusCore(KEYS[0], NET, LapsingApp({0: list(IDS)}), CONFIG, height=1, prev_hash=GENESIS_HASH)
    core.start(0.0)
    feed(core, [commit_and_reveal(i, 1, NIL)[0] for i in (1, 2)])  # f+1 at round 1: skip there
    assert core.round == 1
    core.app.lapsed = True
    a = candidate(("op-a",))
    out = feed(core, [proposal(1, ("op-a",), vr=0)], now=1.0)
    assert not own(out, Commitment), "its round-0 reveals may still be on their way"
    out = feed(core, [m for i in (1, 2) for m in commit_and_reveal(i, 0, a)], now=1.5)
    seal = commitment_hash(a, commit_nonce(KEYS[0], NET, 1, 1, a), IDS[0], 1, 1)
    assert not own(out, Commitment), "two reveals are not a quorum"
    out = core.on_tick(100.0)
    nil_seal = commitment_hash(NIL, commit_nonce(KEYS[0], NET, 1, 1, NIL), IDS[0], 1, 1)
    assert [c.commitment for c in own(out, Commitment)] == [nil_seal] != [seal]


def test_a_quorum_of_precommits_decides_a_value_whose_local_validity_lapsed():
    """A validator that receives round 0's proposal and precommits late (loaded box, restart) still
    decides: 2f+1 precommits vouch for the value; only the certificate and our execution must hold."""
    core = ConsensusCore(KEYS[0], NET, LapsingApp({0: list(IDS)}), CONFIG, height=1, prev_hash=GENESIS_HASH)
    core.start(0.0)
    core.app.lapsed = True
    a = candidate(("op-a",))
    out = feed(core, [proposal(0, ("op-a",))] + [precommit(i, 0, a) for i in (1, 2, 3)], now=12.0)
    assert [e.value for e in out if isinstance(e, Decided)] == [a] and core.height == 2


def test_a_certified_decision_is_adopted_though_its_local_validity_lapsed():
    """Regression: a node more than 10 s behind refused every catch-up Decision ("bad_decision") and
    had to state-sync ("behind the decision window" / "caught up" in the logs)."""
    net = LocalNet(4, seed=5)
    net.run(4.0)
    decision = net.cores[1].decisions[1][0]
    late = ConsensusCore(net.keys[0], net.network_id, LapsingApp(net.apps[0].schedule), net.config, height=1,
                         prev_hash=GENESIS_HASH)
    late.start(0.0)
    late.app.lapsed = True
    out = late.on_message(net.ids[1], decision.to_wire(), 30.0)
    assert [e.height for e in out if isinstance(e, Decided)] == [1] and late.errors["bad_decision"] == 0


def test_describe_says_where_a_core_stands_and_what_it_heard():
    core = core_for(0)
    core.start(0.0)
    a, _ = drive_to_lock_on_a(core)
    seen = core.describe()
    assert (seen["height"], seen["round"], seen["step"], seen["locked_round"], seen["valid_round"]) == (1, 0, "precommit", 0, 0)
    assert seen["heard"]["proposal"] and seen["heard"]["reveals"] == {a.hex()[:8]: 3}
    assert seen["heard"]["precommits"] == {a.hex()[:8]: 1} and seen["refused_rounds"] == []
