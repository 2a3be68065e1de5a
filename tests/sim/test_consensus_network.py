"""Consensus on a seeded in-process network: agreement, safety under Byzantine validators, liveness
after faults stop, crash and restart. Every failure message names its seed."""

from __future__ import annotations

from random import Random

import pytest

from mycelium.consensus.outcomes import Evidence, verify_evidence
from mycelium.spores.certificate import fault_tolerance
from mycelium.testing.localnet import LocalNet

# --------------------------------------------------------------------------- Byzantine behaviours

# mycelium.sim.byzantine's wrappers, made consensus-aware by mycelium.sim.consensus.consensus_hooks
BEHAVIOURS = {
    "equivocate": ("equivocate", {}),  # every signed message in two versions, to random halves of the peers
    "equivocating_proposer": ("equivocate", {"types": ["PROPOSAL"]}),  # two batches for one round
    "withhold_reveals": ("withhold", {"types": ["REVEAL"]}),  # commits but never reveals
    # behaves, and sends consensus-shaped junk after half its messages: random bytes, broken maps,
    # bad signatures, signed far-future rounds, reveals that open nothing
    "garbage": ("garbage", {"keep": True}),
}

# --------------------------------------------------------------------------- checks


def check_safety(net: LocalNet, seed) -> None:
    """No two different values certified at one height; every certificate verifies; only Byzantine
    validators are accused, and every accusation is valid evidence."""
    by_height: dict[int, set[bytes]] = {}
    for i in net.honest():
        app = net.apps[i]
        for height, decided in net.decisions(i).items():
            by_height.setdefault(height, set()).add(decided.value)
            decided.certificate.verify(net.network_id, app.validators(height), expect_value=decided.value)
        for e in net.outputs[i]:
            if isinstance(e, Evidence):
                assert net.ids.index(e.validator) in net.byzantine, f"seed {seed}: honest node accused: {e.kind}"
                assert verify_evidence(e, net.network_id), f"seed {seed}: unverifiable evidence"
    forks = {h: v for h, v in by_height.items() if len(v) > 1}
    assert not forks, f"seed {seed}: different values certified at heights {sorted(forks)}"


def honest_heights(net: LocalNet) -> int:
    return net.min_height()


# --------------------------------------------------------------------------- tests


@pytest.mark.parametrize("n", [1, 4, 7])
@pytest.mark.parametrize("seed", range(3))
def test_all_validators_decide_identical_values(n, seed):
    net = LocalNet(n, seed=seed)
    for i, app in enumerate(net.apps):
        app.pending.extend([f"op-{seed}-{k}" for k in range(3)])  # every node knows the same operations
    net.run(12.0)
    check_safety(net, seed)
    assert honest_heights(net) >= 8, f"seed {seed}: only {honest_heights(net)} heights in 12 s"
    first = net.decisions(0)
    assert first[1].batch == tuple(f"op-{seed}-{k}" for k in range(3)), "operations are decided at the first height"
    assert all(first[h].batch == () for h in range(2, 6)), "later heights are empty heartbeats"
    for i in range(n):
        assert {h: d.value for h, d in net.decisions(i).items() if h <= 8} == {h: d.value for h, d in first.items() if h <= 8}


@pytest.mark.parametrize("behaviour", BEHAVIOURS)
@pytest.mark.parametrize("n,seed", [(4, 10), (4, 11), (7, 12), (7, 13)])
def test_safety_and_liveness_with_f_byzantine(behaviour, n, seed):
    f = fault_tolerance(n)
    rng = Random(seed)
    byzantine = {i: BEHAVIOURS[behaviour] for i in rng.sample(range(n), f)}
    net = LocalNet(n, seed=seed, byzantine=byzantine, drop_rate=0.3, lossy_until=8.0, max_delay_s=0.2)
    net.run(8.0)
    check_safety(net, seed)
    before = honest_heights(net)
    net.run(20.0)  # faults (losses) stopped at 8 s; the Byzantine nodes keep misbehaving
    check_safety(net, seed)
    assert honest_heights(net) >= before + 3, f"seed {seed}: no progress after faults stopped"
    late = [d.certificate.round for i in net.honest() for h, d in net.decisions(i).items() if h > before + 1]
    assert max(late) <= f + 1, f"seed {seed}: a height took {max(late) + 1} rounds after faults stopped"
    if behaviour == "equivocate":
        accused = {e.validator for i in net.honest() for e in net.outputs[i] if isinstance(e, Evidence)}
        assert accused == {net.ids[i] for i in byzantine}, f"seed {seed}: equivocator not caught"


@pytest.mark.parametrize("seed", range(4))
def test_mixed_byzantine_on_seven_validators(seed):
    """Two different behaviours at once; liveness is counted from when the losses stop (5 s): a
    height may need a round per Byzantine proposer, each round's timeouts longer than the last."""
    rng = Random(seed)
    chosen = rng.sample(range(7), 2)
    kinds = rng.sample(sorted(BEHAVIOURS), 2)
    net = LocalNet(7, seed=100 + seed, byzantine={i: BEHAVIOURS[k] for i, k in zip(chosen, kinds)},
                   drop_rate=0.2, lossy_until=5.0)
    net.run(5.0)
    before = honest_heights(net)
    net.run(25.0)
    check_safety(net, seed)
    assert honest_heights(net) >= before + 5, f"seed {seed} ({kinds} at {chosen}): {honest_heights(net) - before} heights after the losses stopped"
    late = [d.certificate.round for i in net.honest() for h, d in net.decisions(i).items() if h > before + 1]
    assert max(late) <= 3, f"seed {seed} ({kinds} at {chosen}): a height took {max(late) + 1} rounds after faults stopped"


def test_more_than_f_crashed_stops_progress_without_divergence_then_resumes():
    net = LocalNet(4, seed=7)
    net.run(3.0)
    net.crash(3)
    before = honest_heights(net)
    net.run(9.0)
    assert honest_heights(net) >= before + 3, "one crashed validator of four must not stop progress"
    net.crash(2)
    net.run(10.0)
    stalled = max(len(net.decisions(i)) for i in (0, 1))
    net.run(18.0)
    assert max(len(net.decisions(i)) for i in (0, 1)) <= stalled + 1, "two of four down: no quorum, no progress"
    net.restart(2)
    net.restart(3)
    net.run(33.0)
    check_safety(net, 7)
    assert net.min_height(list(range(4))) >= stalled + 5, "progress resumes and restarted nodes catch up"


@pytest.mark.parametrize("seed", range(3))
def test_liveness_returns_though_the_validity_of_a_batch_lapses_with_time(seed):
    """Regression (the rollout test on a loaded box: the chain stopped for good, all validators
    voting and connected, after "behind the decision window" / "caught up" lines). The ledger
    refuses a batch whose clock operation is over 10 s off its own clock; slow, lossy links let a
    value get 2f+1 reveals but no decision, and every later re-proposal of it, every late quorum of
    precommits and every catch-up decision for it were refused as too old. Here the skew limit is
    2 s and 40 % of messages are lost for 30 s: before the fix no validator decided one more height
    in the 30 s after the losses stopped (all 3 seeds: e.g. heights [2, 0, 1, 2] stayed so, three
    validators locked at one height, the others refusing its decision); now they all keep deciding."""
    net = LocalNet(4, seed=seed, max_delay_s=0.3, drop_rate=0.4, lossy_until=30.0)
    for i, app in enumerate(net.apps):
        app.clock, app.max_skew_s = (lambda i=i: net.world.local_now(i)), 2.0
        app.pending = [f"op-{k}" for k in range(40)]
    net.run(30.0)
    before = [len(net.decisions(i)) for i in range(4)]
    net.run(60.0)
    check_safety(net, seed)
    after = [len(net.decisions(i)) for i in range(4)]
    assert all(a >= max(before) + 10 for a in after), f"seed {seed}: heights {before} -> {after}"
    assert all(not app.pending for app in net.apps), f"seed {seed}: operations left undecided"


@pytest.mark.parametrize("seed", range(3))
def test_crash_and_restart_mid_round_never_double_signs(seed):
    rng = Random(seed)
    net = LocalNet(4, seed=seed, max_delay_s=0.3)
    t = 0.0
    for _ in range(6):
        t += rng.uniform(0.5, 2.0)
        net.run(t)
        victim = rng.randrange(4)
        net.crash(victim)
        t += rng.uniform(0.0, 1.5)
        net.run(t)
        net.restart(victim)
    net.run(t + 15.0)
    check_safety(net, seed)
    for i in range(4):  # nobody ever signed two different messages for one step
        seen: dict[tuple, dict] = {}
        for e in net.outputs[i]:
            if hasattr(e, "state"):
                for r, slots in e.state["own"].items():
                    for slot, wire in slots.items():
                        key = (e.state["h"], r, slot)
                        assert seen.setdefault(key, wire) == wire, f"seed {seed}: node {i} re-signed {key}"
    assert net.min_height(list(range(4))) >= 5


def test_validator_set_change_takes_effect_at_the_scheduled_height():
    # validators 0-3 up to height 3, then 1-4 (node 4 joins, node 0 leaves)
    net = LocalNet(4, seed=3, schedule={0: [0, 1, 2, 3], 4: [1, 2, 3, 4]}, extra_keys=1)
    net.run(15.0)
    check_safety(net, 3)
    for h, d in net.decisions(1).items():
        signers = set(d.certificate.signatures)
        expected = set(net.apps[1].validators(h))
        assert signers <= expected
    assert all(net.ids[0] not in net.decisions(1)[h].certificate.signatures for h in range(4, 7)), "node 0 left"
    assert any(net.ids[4] in net.decisions(1)[h].certificate.signatures for h in range(4, 9)), "node 4 votes"
    assert len(net.decisions(4)) >= 6, "the joining validator decides too"
    assert net.cores[0].is_validator is False and net.cores[4].is_validator is True
