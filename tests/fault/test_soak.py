"""Issue 9, long variants (run with --slow): a seeded chaos soak over the shared testnet, and a crash
during a deploy. Every perturbation is undone before the next; the history checker runs throughout."""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import pytest

from tests.testnet.cluster import wait_seconds
from tests.testnet.history import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ALL = [0, 1, 2, 3]
SOAK_ROUNDS = int(os.environ.get("MYCELIUM_SOAK_ROUNDS", "12"))
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_chaos_soak(testnet):
    seed = int(os.environ.get("MYCELIUM_SOAK_SEED", random.SystemRandom().randrange(1, 2**31)))
    rng = random.Random(seed)
    log: list[str] = []
    try:
        for _ in range(SOAK_ROUNDS):
            victim = rng.choice(ALL)
            fault = rng.choice(["kill", "pause", "down"] + (["cut", "throttle"] if testnet.net else []))
            log.append(f"{fault} n{victim}")
            others = [j for j in ALL if j != victim]
            before = max(testnet.heights(others).values())
            if fault == "kill":
                testnet.kill(victim)
            elif fault == "down":
                testnet.stop_gracefully(victim)
            elif fault == "pause":
                testnet.pause(victim)
            elif fault == "cut":
                testnet.partition(others, [victim])
            else:
                testnet.net.throttle(victim, rate_kbit=rng.choice([64, 256, 1024]))
            testnet.wait_progress(others, beyond=before + 2, timeout_s=60)
            wait_seconds(rng.uniform(0, 3))
            if fault in ("kill", "down"):
                testnet.restart(victim)
            elif fault == "pause":
                testnet.resume(victim)
            elif fault == "cut":
                testnet.heal()
            else:
                testnet.net.unthrottle(victim)
            testnet.wait_progress([victim], beyond=max(testnet.heights(others).values()), timeout_s=90)
            testnet.history.check()
    except AssertionError as exc:
        raise AssertionError(f"soak seed {seed} (MYCELIUM_SOAK_SEED={seed} replays it) after {log}: {exc}") from exc
    testnet.wait_converged(timeout_s=90)
    testnet.history.check()


def test_crash_during_deploy_reconverges(testnet, tmp_path):
    for name in ("echo.yaml", "echo_server.py"):
        shutil.copy(EXAMPLES / name, tmp_path / name)
    res = testnet.nodes[0].cli("deploy", str(tmp_path / "echo.yaml"))
    assert res.returncode == 0, res.stderr
    testnet.kill(1)  # mid-deploy: the operation may or may not be decided yet
    testnet.restart(1)

    def running() -> bool:
        res = testnet.nodes[0].cli("services", "--json")
        rows = {r["name"]: r for r in json.loads(res.stdout)["services"]} if res.returncode == 0 else {}
        row = rows.get("echo")
        return bool(row and row["desired"] and row["running"] >= row["desired"])

    wait_for(running, timeout=120, interval=1, what="the echo service to run all its replicas again")
    testnet.wait_converged()
    testnet.history.check()
    assert testnet.nodes[0].cli("undeploy", "echo").returncode == 0
