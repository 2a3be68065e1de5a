"""Consensus under mycelium.sim: generated fault plans (partitions, loss, duplication, reordering,
crashes and restarts, clock jumps, slow nodes, up to f Byzantine nodes), messages on the wire as
bytes. Replay a failure with the printed `--sim-seed` or `python -m mycelium.sim` command."""

from __future__ import annotations

import json

import pytest

from mycelium.sim.run import RunConfig, run

PROTOCOL = "mycelium.sim.consensus:scenario"


def test_generated_faults_keep_agreement_and_progress(sim_seed):
    result = run(RunConfig(protocol=PROTOCOL, nodes=4, seed=sim_seed, duration_s=30, tail_s=30, wire=True))
    assert result.ok, result.failure
    assert result.summary["stats"]["outputs"].get("Decided", 0) >= 4 * 20


@pytest.mark.parametrize("behaviour", ["equivocate", "copy", "withhold", "lie", "garbage"])
def test_a_byzantine_validator_of_four_is_tolerated_and_liars_are_caught(behaviour, tmp_path):
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"faults": [
        {"at_s": 0, "kind": "byzantine", "node": 2, "behaviour": behaviour},
        {"at_s": 5, "kind": "loss", "probability": 0.2, "duration_s": 10},
        {"at_s": 12, "kind": "crash", "node": 0, "restart_after_s": 4},
    ]}))
    result = run(RunConfig(protocol=PROTOCOL, nodes=4, seed=11, duration_s=25, tail_s=30, faults=str(plan), wire=True))
    assert result.ok, result.failure
    if behaviour in ("equivocate", "copy"):  # both sign what they did not (or cannot) stand by
        assert result.summary["stats"]["outputs"].get("Evidence", 0) > 0, f"the {behaviour} node was not caught"


def test_two_byzantine_validators_of_seven(tmp_path):
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"faults": [
        {"at_s": 0, "kind": "byzantine", "node": 1, "behaviour": "equivocate"},
        {"at_s": 0, "kind": "byzantine", "node": 5, "behaviour": "lie", "options": {"probability": 0.5}},
        {"at_s": 5, "kind": "partition", "groups": [[0, 1, 2], [3, 4, 5, 6]], "duration_s": 6},
    ]}))
    result = run(RunConfig(protocol=PROTOCOL, nodes=7, seed=3, duration_s=15, tail_s=20, faults=str(plan), wire=True))
    assert result.ok, result.failure


def test_regression_seed_110_clock_jump_back_with_a_silent_validator():
    """A withholding validator and another whose clock jumped back 179 s: its stalled timers left
    the honest three one reveal short until pending timers followed the clock back."""
    result = run(RunConfig(protocol=PROTOCOL, nodes=4, seed=110, duration_s=60, tail_s=60, wire=True))
    assert result.ok, result.failure
