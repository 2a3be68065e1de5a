"""Fault plans as data: JSON round trip, validation, generation from a seed, application and undo."""

from __future__ import annotations

import json
from random import Random

import pytest

from mycelium.sim.byzantine import ByzantineHooks
from mycelium.sim.nemesis import Fault, FaultPlan, Nemesis, generate_plan
from mycelium.sim.network import FixedLatency, NetworkConfig, SimConfigError
from mycelium.sim.world import World
from tests.sim.cores import Recorder

HAND_PLAN = {"faults": [
    {"at_s": 10, "kind": "partition", "groups": [[0, 1], [1, 2]], "duration_s": 5},
    {"at_s": 11, "kind": "loss", "probability": 0.5, "duration_s": 2},
    {"at_s": 12, "kind": "duplicate", "probability": 0.1, "duration_s": 2},
    {"at_s": 13, "kind": "reorder", "probability": 0.3, "delay_s": 2.0, "duration_s": 2},
    {"at_s": 14, "kind": "crash", "node": 2, "restart_after_s": 3, "wipe": False},
    {"at_s": 15, "kind": "clock_jump", "node": 1, "delta_s": -20},
    {"at_s": 16, "kind": "slow", "node": 0, "factor": 10, "duration_s": 4},
    {"at_s": 0, "kind": "byzantine", "node": 1, "behaviour": "garbage", "options": {"probability": 1.0}},
    {"at_s": 30, "kind": "heal"},
]}


def world(n=3):
    return World([f"n{i}" for i in range(n)], lambda nid, p: Recorder(nid, p), rng=Random(3),
                 network=NetworkConfig(latency=FixedLatency(0.01)), boot_jitter_s=0.0)


def test_plan_round_trips_through_json_and_sorts_by_time(tmp_path):
    plan = FaultPlan.from_json(HAND_PLAN)
    assert plan.faults[0].kind == "byzantine"
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan.to_json()))
    assert FaultPlan.load(path) == plan
    assert FaultPlan.from_json(HAND_PLAN["faults"]) == plan  # a bare list is accepted too


@pytest.mark.parametrize("bad, message", [
    ({"at_s": 1, "kind": "meteor"}, "unknown"),
    ({"kind": "heal"}, "at_s"),
    ({"at_s": -1, "kind": "heal"}, "at_s"),
    ({"at_s": 1, "kind": "loss"}, "probability"),
    ({"at_s": 1, "kind": "loss", "probability": 2}, r"\[0, 1\]"),
    ({"at_s": 1, "kind": "crash", "node": "x"}, "wrong type"),
    ({"at_s": 1, "kind": "crash", "node": True}, "wrong type"),
    ({"at_s": 1, "kind": "crash", "node": 1, "colour": "red"}, "unknown field"),
    ({"at_s": 1, "kind": "partition", "groups": [["a"]]}, "node indices"),
])
def test_bad_fault_records_are_rejected_with_the_field(bad, message):
    with pytest.raises(SimConfigError, match=message):
        Fault.from_json(bad)


def test_load_errors_say_which_file(tmp_path):
    with pytest.raises(SimConfigError, match="cannot read"):
        FaultPlan.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(SimConfigError, match="not JSON"):
        FaultPlan.load(tmp_path / "bad.json")


def test_plan_naming_a_missing_node_or_behaviour_fails_before_the_run():
    with pytest.raises(SimConfigError, match="names node"):
        Nemesis(world(3), FaultPlan.from_json([{"at_s": 1, "kind": "crash", "node": 7}]), ByzantineHooks())
    with pytest.raises(SimConfigError, match="mutate hook"):
        Nemesis(world(3), FaultPlan.from_json([{"at_s": 0, "kind": "byzantine", "node": 0, "behaviour": "lie"}]),
                ByzantineHooks())


def test_faults_apply_and_undo_on_schedule():
    w = world()
    nemesis = Nemesis(w, FaultPlan.from_json(HAND_PLAN), ByzantineHooks())
    nemesis.install()
    w.start()
    w.run_until(14.5)
    assert not w.net.connected(0, 2) and w.net.connected(0, 1) and w.net.connected(1, 2)  # 1 bridges
    w.run_until(16.5)
    assert w.net.connected(0, 2)  # the partition's 5 s are over
    assert not w.nodes[2].up and w.nodes[1].offset == -20 and w.net.slow[0] == 10
    assert w.net.loss == 0 and w.net.duplicate == 0 and w.net.reorder == 0  # their 2 s are over
    assert w.nodes[1].tags == ["garbage"] and not w.nodes[1].honest
    w.run_until(21.0)
    assert w.nodes[2].up and w.net.slow[0] == 1.0
    assert nemesis.counts() == {"byzantine": 1, "clock_jump": 1, "crash": 1, "duplicate": 1, "loss": 1,
                                "partition": 1, "reorder": 1, "slow": 1}
    w.run_until(31.0)
    assert len(nemesis.injected) == 9


def test_generated_plans_are_reproducible_bounded_and_varied():
    hooks = ByzantineHooks(mutate=lambda a, m, r: m)
    plans = [generate_plan(Random(seed), 40, 600.0, hooks) for seed in range(20)]
    assert plans[3] == generate_plan(Random(3), 40, 600.0, hooks)
    kinds = {f.kind for p in plans for f in p.faults}
    assert kinds == {"partition", "loss", "duplicate", "reorder", "crash", "clock_jump", "slow", "byzantine"}
    for plan in plans:
        assert all(0 <= f.at_s < 600 for f in plan.faults)
        assert all(f.at_s + f.params.get("duration_s", 0) <= 600.0 + 1e-6 for f in plan.faults)
        assert len(plan.byzantine_nodes()) <= (40 - 1) // 3
        assert FaultPlan.from_json(json.loads(json.dumps(plan.to_json()))) == plan
    no_byz = generate_plan(Random(1), 40, 600.0, hooks, byzantine=False, max_clock_jump_s=5.0)
    assert not no_byz.byzantine_nodes()
    assert all(abs(f.params["delta_s"]) <= 5.0 for f in no_byz.faults if f.kind == "clock_jump")
