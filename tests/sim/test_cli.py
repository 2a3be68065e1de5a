"""`python -m mycelium.sim`: byte-identical output per seed, failures print a replay command that
reproduces them in a fresh process, clear exit codes."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def sim(*args: str, hash_seed: str = "0") -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONHASHSEED=hash_seed)  # different str hashing must not change results
    return subprocess.run([sys.executable, "-m", "mycelium.sim", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def test_same_seed_twice_gives_byte_identical_output():
    args = ["--nodes", "30", "--seed", "7", "--duration", "200", "--no-timing"]
    a, b = sim(*args, hash_seed="1"), sim(*args, hash_seed="2")
    assert a.returncode == 0, a.stdout + a.stderr
    assert a.stdout == b.stdout and a.stdout.endswith("result: ok\n")
    assert "real seconds" not in a.stdout
    other = sim("--nodes", "30", "--seed", "8", "--duration", "200", "--no-timing")
    assert other.stdout != a.stdout


def test_json_output_is_deterministic_and_timing_is_a_separate_field():
    args = ["--protocol", "latent", "--nodes", "6", "--seed", "3", "--duration", "60", "--tail", "40", "--json"]
    a, b = sim(*args, "--no-timing", hash_seed="1"), sim(*args, hash_seed="3")
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    timed = json.loads(b.stdout)
    assert timed.pop("real_s") >= 0
    assert json.loads(a.stdout) == timed
    assert timed["result"] == "ok" and timed["events"] > 0


def test_timing_is_only_on_the_last_line():
    args = ["--nodes", "10", "--seed", "1", "--duration", "60"]
    a, b = sim(*args), sim(*args)
    assert a.stdout.splitlines()[:-1] == b.stdout.splitlines()[:-1]
    assert a.stdout.splitlines()[-1].startswith("real seconds: ")


def test_broken_merge_failure_prints_seed_and_a_replay_that_reproduces_it():
    first = sim("--protocol", "tests.sim.broken:tie_flip", "--nodes", "20", "--seed", "3",
                "--duration", "120", "--tail", "60", "--no-timing")
    assert first.returncode == 1
    assert "result: VIOLATED (seed 3)" in first.stdout and "'converged'" in first.stdout
    replay_line = next(line for line in first.stderr.splitlines() if line.startswith("replay: "))
    command = shlex.split(replay_line.removeprefix("replay: "))
    assert command[:3] == ["python", "-m", "mycelium.sim"] and "--seed" in command
    again = sim(*command[3:], "--no-timing", hash_seed="5")
    assert again.returncode == 1 and again.stdout == first.stdout


def test_plan_can_be_printed_edited_and_loaded(tmp_path):
    printed = sim("--nodes", "12", "--seed", "4", "--duration", "100", "--print-plan")
    assert printed.returncode == 0
    plan = json.loads(printed.stdout)
    assert plan["faults"]
    path = tmp_path / "plan.json"
    path.write_text(printed.stdout)
    generated = sim("--nodes", "12", "--seed", "4", "--duration", "100", "--no-timing", "--json")
    loaded = sim("--nodes", "12", "--seed", "4", "--duration", "100", "--no-timing", "--json", "--faults", str(path))
    g, l = json.loads(generated.stdout), json.loads(loaded.stdout)
    assert g["faults"] == l["faults"] and g["byzantine"] == l["byzantine"]
    assert l["replay"]["cli"].endswith(f"--faults {path}")


def test_bad_arguments_exit_2_with_a_message():
    bad_plan = sim("--faults", "/nonexistent/plan.json")
    assert bad_plan.returncode == 2 and "cannot read fault plan" in bad_plan.stderr
    unknown = sim("--protocol", "paxos")
    assert unknown.returncode == 2 and "unknown protocol 'paxos'" in unknown.stderr
    stray = sim("--nodes", "3", "extra")
    assert stray.returncode == 2 and "unrecognized arguments" in stray.stderr
    zero = sim("--nodes", "0")
    assert zero.returncode == 2 and "--nodes must be at least 1" in zero.stderr
