"""Per-subsystem supervision (mycelium/shell/supervise.py): a failing loop is restarted on its own
with backoff and counted; a disk-full or damaged-database failure leaves; and in a real session over
the in-memory transport a consensus failure rebuilds only consensus, while the node goes on deciding
and the workloads runner is never restarted."""

from __future__ import annotations

import errno
import sqlite3
import time
from pathlib import Path

import pytest
import structlog
import trio

from mycelium.consensus.driver import ConsensusDriver
from mycelium.session import NetworkSession
from mycelium.shell.supervise import (
    RESTART_FIRST_S, RESTART_MAX_S, Failures, NodeUnusable, started, supervise, unusable,
)
from mycelium.testing.transport import MemoryNetwork
from tests.unit.test_session_memory import LOCAL, _node, _wait_until


async def test_a_failing_loop_is_restarted_with_growing_backoff_and_counted(autojump_clock):
    failures = Failures(on_restart=lambda name: restarted.append(name))
    restarted: list[str] = []
    runs: list[float] = []

    async def flaky(*, task_status=trio.TASK_STATUS_IGNORED):
        task_status.started()
        runs.append(trio.current_time())
        if len(runs) <= 4:
            raise RuntimeError(f"boom {len(runs)}")

    with structlog.testing.capture_logs() as logs:  # (and no slow console rendering of 4 tracebacks)
        await supervise("flaky", flaky, failures)  # returns once the loop returns
    assert [e["subsystem"] for e in logs if e["log_level"] == "error"] == ["flaky"] * 4
    gaps = [b - a for a, b in zip(runs, runs[1:])]
    assert gaps == pytest.approx([RESTART_FIRST_S, 2 * RESTART_FIRST_S, 4 * RESTART_FIRST_S, 8 * RESTART_FIRST_S])
    assert restarted == ["flaky"] * 4
    report = failures.report()["flaky"]
    assert report["restarts"] == 4 and report["last_error"] == "RuntimeError: boom 4"


async def test_backoff_is_capped(autojump_clock):
    failures = Failures()
    runs: list[float] = []

    async def always_failing():
        runs.append(trio.current_time())
        raise ValueError("again")

    with trio.move_on_after(8 * RESTART_MAX_S), structlog.testing.capture_logs():
        await supervise("stuck", started(always_failing), failures)
    gaps = [b - a for a, b in zip(runs, runs[1:])]
    assert max(gaps) == pytest.approx(RESTART_MAX_S) and gaps[-1] == pytest.approx(RESTART_MAX_S)


async def test_failing_before_the_first_start_is_the_sessions_failure():
    async def broken(*, task_status=trio.TASK_STATUS_IGNORED):
        raise KeyError("no config")

    with pytest.raises(KeyError):
        await supervise("broken", broken, Failures())


@pytest.mark.parametrize("error, reason", [
    (OSError(errno.ENOSPC, "No space left on device"), "disk holding the state directory is full"),
    (sqlite3.OperationalError("database or disk is full"), "disk holding the state directory is full"),
    (sqlite3.DatabaseError("database disk image is malformed"), "database is damaged"),
])
async def test_an_unusable_node_leaves_instead_of_restarting(autojump_clock, error, reason):
    failures = Failures()

    async def writer():
        await trio.sleep(1)
        raise error

    with pytest.raises(NodeUnusable, match=reason) as caught:
        await supervise("ledger", started(writer), failures)
    assert caught.value.fix  # and says what to do
    assert failures.report() == {}  # not counted as a restart: nothing was restarted


def test_unusable_looks_inside_exception_groups_and_ignores_ordinary_errors():
    group = ExceptionGroup("session", [ValueError("x"), OSError(errno.ENOSPC, "full")])
    assert unusable(group) is not None
    assert unusable(ExceptionGroup("session", [ValueError("x")])) is None
    assert unusable(OSError(errno.ECONNRESET, "reset")) is None
    assert unusable(sqlite3.OperationalError("database is locked")) is None


async def test_a_consensus_failure_rebuilds_consensus_only(tmp_path: Path, monkeypatch):
    node = _node(tmp_path / "solo")
    node.create_named_network("supervised")
    real_run = ConsensusDriver.run
    calls = {"n": 0}

    async def crashing_once(self):
        calls["n"] += 1
        if calls["n"] == 1:
            await trio.sleep(0.5)
            raise RuntimeError("a bug in consensus")
        await real_run(self)

    monkeypatch.setattr(ConsensusDriver, "run", crashing_once)
    workload_runs = {"n": 0}
    from mycelium.runtime.runner import WorkloadRunner

    real_workloads = WorkloadRunner.run

    async def counted(self, **kwargs):
        workload_runs["n"] += 1
        await real_workloads(self, **kwargs)

    monkeypatch.setattr(WorkloadRunner, "run", counted)
    net = MemoryNetwork()
    try:
        async with trio.open_nursery() as nursery:
            session = NetworkSession(node, net.transport(node.key.node_id), LOCAL)
            await nursery.start(session.run)
            await _wait_until(lambda: session.failures.report().get("consensus", {}).get("restarts") == 1,
                              "consensus to fail and be restarted")
            height = node.ledger.height
            await _wait_until(lambda: node.ledger.height >= height + 3, "the rebuilt consensus to decide again")
            assert calls["n"] >= 2 and workload_runs["n"] == 1  # replicas' runner never restarted
            assert "a bug in consensus" in session.failures.report()["consensus"]["last_error"]
            assert session.failures.report()["consensus"]["last_failed_at"] <= time.time()
            nursery.cancel_scope.cancel()
    finally:
        node.close()
