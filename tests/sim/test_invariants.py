"""Invariant checkers and the Monitor; a stateful test drives a world by hand through faults and
asserts that replicas converge after every heal."""

from __future__ import annotations

from random import Random

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from mycelium.sim.invariants import LIVENESS, Converged, EveryHonestNode, InvariantViolation, Monitor
from mycelium.sim.network import FixedLatency, NetworkConfig, UniformLatency
from mycelium.sim.register import RegisterConfig, RegisterGossip, own_write_kept
from mycelium.sim.world import World
from tests.sim.cores import Recorder


def recorders(states):
    w = World([f"n{i}" for i in range(len(states))], lambda nid, p: Recorder(nid), rng=Random(1),
              network=NetworkConfig(latency=FixedLatency(0.1)), boot_jitter_s=0.0)
    w.start()
    for node, state in zip(w.nodes, states):
        node.core.state = state
    return w


def test_converged_reports_groups_largest_first():
    inv = Converged(lambda core: core.state)
    assert inv.check(recorders([1, 1, 1])) is None
    problem = inv.check(recorders([1, 2, 2]))
    assert problem.startswith("2 distinct states") and "2 like n1, 1 like n0" in problem


def test_converged_ignores_byzantine_and_crashed_nodes():
    w = recorders([1, 2, 3])
    w.add_wrapper(1, lambda core: core, "withhold")
    w.crash(2)
    assert Converged(lambda core: core.state).check(w) is None


def test_every_honest_node_names_the_node():
    inv = EveryHonestNode(lambda core: "negative" if core.state < 0 else None, name="non-negative")
    assert inv.check(recorders([0, 1])) is None
    assert inv.check(recorders([0, -1])) == "node n1: negative"


def test_monitor_counts_checks_and_raises_with_time_and_event():
    w = recorders([1, 2])
    monitor = Monitor([EveryHonestNode(lambda c: None, name="fine"), Converged(lambda c: c.state)])
    monitor.safety(w)
    assert monitor.results() == [
        {"name": "fine", "kind": "safety", "checks": 1, "status": "ok"},
        {"name": "converged", "kind": LIVENESS, "checks": 0, "status": "unchecked"},
    ]
    with pytest.raises(InvariantViolation) as info:
        monitor.liveness(w)
    assert info.value.invariant == "converged" and info.value.events == w.stats.events
    assert "liveness invariant 'converged' violated at t=" in str(info.value)
    assert monitor.results()[1]["status"] == "violated"
    with pytest.raises(ValueError, match="distinct"):
        Monitor([Converged(lambda c: 1), Converged(lambda c: 2)])


class RegisterReplicas(RuleBasedStateMachine):
    """N register replicas under arbitrary partitions, crashes, loss and clock jumps; after every
    `heal_and_settle` all live replicas hold the same register (parsec-cloud's sync rule)."""

    @initialize(n=st.integers(2, 6), seed=st.integers(0, 2**16))
    def setup(self, n, seed):
        ids = [f"n{i}" for i in range(n)]
        config = RegisterConfig(interval_s=1.0, fanout=1, write_every_rounds=2)
        self.world = World(ids, lambda nid, p: RegisterGossip(nid, [x for x in ids if x != nid], config, p),
                           rng=Random(seed), network=NetworkConfig(latency=UniformLatency(0.01, 0.5)))
        self.world.start()
        self.n = n
        self.backward_s = 0.0

    @rule(seconds=st.floats(0.1, 20))
    def advance(self, seconds):
        self.world.run_until(self.world.now + seconds)

    @rule(data=st.data())
    def partition(self, data):
        side = data.draw(st.lists(st.integers(0, self.n - 1), unique=True))
        self.world.net.partition([side, [i for i in range(self.n) if i not in side]])

    @rule(i=st.integers(0, 5), wipe=st.booleans())
    def crash_restart(self, i, wipe):
        i %= self.n
        if self.world.nodes[i].up:
            self.world.crash(i)
        else:
            self.world.restart(i, wipe=wipe)

    @rule(loss=st.floats(0, 0.9))
    def lossy(self, loss):
        self.world.net.loss = loss

    @rule(i=st.integers(0, 5), delta=st.floats(-100, 100))
    def clock_jump(self, i, delta):
        self.world.jump_clock(i % self.n, delta)
        # A backward jump pushes that node's pending gossip timer (set on its local clock) later in
        # virtual time by as much: the settle below waits that long on top of its gossip budget.
        self.backward_s += max(0.0, -delta)

    @precondition(lambda self: hasattr(self, "world"))
    @invariant()
    def no_write_lost(self):
        for node in self.world.honest_nodes():
            assert own_write_kept(node.core) is None

    @rule()
    def heal_and_settle(self):
        w = self.world
        w.net.heal()
        for node in w.nodes:
            if not node.up:
                w.restart(node.index)
        for node in w.nodes:  # stop writing, then give gossip time to spread the maximum
            node.core.config = RegisterConfig(interval_s=1.0, fanout=1, write_every_rounds=2, write_until_s=-1e9)
        w.run_until(w.now + 30 * self.n + self.backward_s)
        self.backward_s = 0.0
        assert Converged(lambda core: core.register).check(w) is None
        for node in w.nodes:
            node.core.config = RegisterConfig(interval_s=1.0, fanout=1, write_every_rounds=2)


TestRegisterReplicas = RegisterReplicas.TestCase
TestRegisterReplicas.settings = settings(max_examples=60, stateful_step_count=20, deadline=None)
