"""Process Endophytes with real daemons: deploy places primary + 2 backups, `mycelium migrate` moves the
primary (no epoch lost), kill -9 of the primary's node fails over through consensus to a backup that
resumes its last acknowledged epoch; `services` shows leases, lag and throttle; undeploy stops it."""

from __future__ import annotations

import signal
import sys
import textwrap
import time
import uuid
from pathlib import Path

import psutil
import pytest

from mycelium.api import protocol
from tests.integration.daemons import wait_until
from tests.integration.test_workloads import fast_network, founder_with, ok, processes  # noqa: F401

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def endophytes(d) -> dict[str, dict]:
    return {r["name"]: r for r in d.api(protocol.SERVICES).get("endophytes", [])}  # what `services --json` prints


def start_line(d, name: str, generation: int) -> str:
    out = d.state_dir / "endophytes" / name / f"g{generation}" / "stdout.log"
    text = out.read_text() if out.exists() else ""
    return next((line for line in text.splitlines() if line.startswith("start ")), "")


def test_process_endophyte_deploy_migrate_and_failover(daemons, tmp_path):
    marker = f"myc{uuid.uuid4().hex[:10]}"
    try:
        _run(daemons, tmp_path, marker)
    finally:
        for proc in processes(marker):
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass


def three_nodes(daemons):
    """A founder (the only validator) and two rhizomorphs: (founder, {node id: daemon}, founder's id)."""
    first, others = founder_with(daemons, 2)
    wait_until(lambda: all(d.status()["role"] == "rhizomorph" for d in others) and first.status()["members"] == 3,
               timeout=60, interval=0.5, what="both joined nodes to be rhizomorphs")
    return first, {d.status()["node_id"]: d for d in (first, *others)}, first.status()["node_id"]


def _run(daemons, tmp_path, marker):
    first, ids, founder_id = three_nodes(daemons)
    manifest = tmp_path / "counter.yaml"
    manifest.write_text(textwrap.dedent(f"""\
        apiVersion: mycelium/v1
        kind: Endophyte
        name: counter
        spec:
          process:
            command: [{sys.executable}, {REPO / 'examples' / 'endophyte_counter.py'}, {marker}]
            env: {{PYTHONPATH: "{REPO}"}}
          backups: 2
          resources: {{memory: 256Ki}}
          emergency: {{mode: pause}}
        """))
    ok(first.cli("deploy", str(manifest)))

    def replicated():
        row = endophytes(first).get("counter")
        if row and row["primary"] and len(row["backups"]) == 2 and all(row["reports"].get(b, -1) >= 2 for b in row["backups"]):
            return row
        return None
    row = wait_until(replicated, timeout=60, interval=0.5, what="the lease placed and both backups reporting epochs")
    assert row["generation"] == 1 and row["primary"] not in row["backups"]
    primary = ids[row["primary"]]
    assert start_line(primary, "counter", 1) == "start counter=0 fresh integrity=ok"
    local = endophytes(primary)["counter"]["local"]
    assert set(local["backups"]) == set(row["backups"]) and "throttle_pct" in local
    human = ok(primary.cli("services"))
    assert "counter" in human and "throttle" in human

    # planned migration to a backup that is not the founder (the founder is the only validator: it must
    # survive the failover below)
    target_id = next(b for b in row["backups"] if b != founder_id)
    t0 = time.monotonic()
    ok(first.cli("migrate", "counter", "--to", target_id[-8:]))
    moved = wait_until(lambda: (r := endophytes(first).get("counter")) and r["primary"] == target_id and r,
                       timeout=60, interval=0.2, what="the migration's new lease")
    target = ids[target_id]
    wait_until(lambda: start_line(target, "counter", moved["generation"]), timeout=30, interval=0.1,
               what="the program running on the target")
    took = time.monotonic() - t0
    line = start_line(target, "counter", moved["generation"])
    assert line.endswith("resumed integrity=ok") and not line.startswith("start counter=0 "), line
    wait_until(lambda: len(processes(marker)) == 1, timeout=30, interval=0.2, what="the source program stopped")
    print(f"planned migration through consensus: {took:.2f} s from `migrate` to the program on the target")

    # the target's machine dies: its daemon and its program go at once
    wait_until(lambda: all(endophytes(first)["counter"]["reports"].get(b, -1) >= 0
                           for b in endophytes(first)["counter"]["backups"]), timeout=30, interval=0.3,
               what="the backups reporting under the new lease")
    victims = [p for p in processes(marker) if str(p.cwd()).startswith(str(target.state_dir))]
    assert len(victims) == 1
    target.kill(signal.SIGKILL)
    victims[0].kill()
    t1 = time.monotonic()
    failed_over = wait_until(lambda: (r := endophytes(first).get("counter")) and r["primary"] != target_id and r,
                             timeout=60, interval=0.3, what="the failover lease")
    survivor = ids[failed_over["primary"]]
    wait_until(lambda: start_line(survivor, "counter", failed_over["generation"]), timeout=30, interval=0.1,
               what="the program resumed on the survivor")
    line = start_line(survivor, "counter", failed_over["generation"])
    assert line.endswith("resumed integrity=ok"), line
    print(f"failover: {time.monotonic() - t1:.2f} s from kill -9 to the resumed program; lease {failed_over}")

    ok(first.cli("undeploy", "counter"))
    wait_until(lambda: not processes(marker), timeout=30, interval=0.3, what="no Endophyte program left")
