"""VM Endophytes with real daemons: `deploy` boots the test guest on the primary and replicates it in
epochs (RAM pages + device state) to 1 backup; `mycelium migrate` resumes it on the backup from the
final epoch; kill -9 of that node fails over through consensus to the other replica, which resumes
the last whole epoch it holds. After every move the guest's own integrity check (a full pass over the
pages its memory writer keeps) must pass and the console must show no panic."""

from __future__ import annotations

import shutil
import signal
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from mycelium.ram.leases import _rank
from mycelium.ram.qemu import GuestImage, request
from tests.integration.daemons import wait_moving, wait_until
from tests.integration.test_ram_daemons import endophytes, three_nodes
from tests.integration.test_workloads import fast_network, ok  # noqa: F401

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None,
                                 reason="qemu-system-x86_64 not installed (scripts/apt.d/ram.txt)")]
PANIC = ("Kernel panic", "BUG:", "Oops")  # what QemuVM.panicked looks for


def qemus(root: Path, under: Path | None = None) -> list[psutil.Process]:
    """QEMUs whose command line names a path under `under` (default: this test's daemons)."""
    where = str(under or root)
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        cmd = proc.info["cmdline"] or []
        if cmd and "qemu-system" in cmd[0] and any(where in part for part in cmd) \
                and proc.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(proc)
    return found


def test_vm_endophyte_deploy_replicate_migrate_and_failover(daemons, tmp_path):
    GuestImage.test_guest()  # built (or cached) before the daemons need it
    try:
        _run(daemons, tmp_path)
    finally:
        for proc in qemus(daemons.root):
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass


def guest_row(d, name: str, generation: int) -> dict | None:
    row = endophytes(d).get(name)
    local = (row or {}).get("local") or {}
    return local if row and row["generation"] == generation and "vm" in local else None


def answered(d, name: str, generation: int) -> str | None:
    local = guest_row(d, name, generation)
    return request("127.0.0.1", local["vm"]["probe_port"], b"ping", 1.0) if local else None


def integrity(d, name: str, generation: int) -> str:
    local = guest_row(d, name, generation)
    assert local is not None
    console = Path(local["vm"]["workdir"]) / "serial.log"
    text = console.read_text(errors="replace") if console.exists() else ""
    assert not any(p in text for p in PANIC), text[-1500:]
    check = request("127.0.0.1", local["vm"]["probe_port"], b"check", 60.0)
    assert check is not None and check.startswith("check ok"), (check, text[-800:])
    return check


def _run(daemons, tmp_path):
    first, ids, founder_id = three_nodes(daemons)
    # the founder is the only validator and must outlive the kill -9 below: pick a name whose lease
    # (rendezvous order: primary, then its 1 backup) leaves the founder out
    name = next(f"vm{i}" for i in range(100) if _rank(f"vm{i}", sorted(ids))[-1] == founder_id)
    manifest = tmp_path / "vm.yaml"
    manifest.write_text(textwrap.dedent(f"""\
        apiVersion: mycelium/v1
        kind: Endophyte
        name: {name}
        spec:
          vm: {{image: testvm, memory: 128Mi}}
          backups: 1
          emergency: {{mode: pause}}
        """))
    ok(first.cli("deploy", str(manifest)))
    row = wait_until(lambda: (r := endophytes(first).get(name)) and r["primary"] and len(r["backups"]) == 1 and r,
                     timeout=60, interval=0.5, what="the lease placed")
    assert row["generation"] == 1 and founder_id not in (row["primary"], *row["backups"])
    primary, backup_id = ids[row["primary"]], row["backups"][0]

    # the guest boots (slow under TCG on a loaded box) while its epochs already flow to the backup
    def progress():
        r = endophytes(first).get(name) or {}
        return (r.get("reports", {}).get(backup_id, -1), bool(answered(primary, name, 1)))
    wait_moving(progress, lambda v: v[1] and v[0] >= 3, stall_s=90, what="the guest booted and replicated")
    first_check = integrity(primary, name, 1)
    local = guest_row(primary, name, 1)
    assert local["backups"][backup_id]["connected"] and local["throttle"] and local["epoch"] >= 3
    human = ok(primary.cli("services"))
    assert name in human and "throttle" in human

    # planned migration to the backup: converge, stop, final epoch, handover, resume there
    t0 = time.monotonic()
    ok(first.cli("migrate", name, "--to", backup_id[-8:]))
    moved = wait_until(lambda: (r := endophytes(first).get(name)) and r["primary"] == backup_id and r,
                       timeout=90, interval=0.2, what="the migration's new lease")
    target = ids[backup_id]
    wait_moving(lambda: answered(target, name, moved["generation"]), bool, stall_s=60,
                what="the guest answering on the target")
    took = time.monotonic() - t0
    after_move = integrity(target, name, moved["generation"])
    wait_until(lambda: not qemus(daemons.root, primary.state_dir), timeout=60, interval=0.3,
               what="the source's QEMU stopped")
    print(f"VM planned migration through consensus: {took:.2f} s from `migrate` to the guest answering on "
          f"the target; checks {first_check!r} -> {after_move!r}")

    # the target's machine dies: its daemon and its QEMU go at once; the old primary (now the backup)
    # resumes the last whole epoch it holds
    wait_until(lambda: endophytes(first)[name]["reports"].get(row["primary"], -1) >= 1, timeout=120, interval=0.3,
               what="the old primary reporting epochs as the new backup")
    victims = qemus(daemons.root, target.state_dir)
    assert len(victims) == 1
    target.kill(signal.SIGKILL)
    victims[0].kill()
    t1 = time.monotonic()
    failed_over = wait_until(lambda: (r := endophytes(first).get(name)) and r["primary"] != backup_id and r,
                             timeout=90, interval=0.3, what="the failover lease")
    survivor = ids[failed_over["primary"]]
    assert survivor is primary
    wait_moving(lambda: answered(survivor, name, failed_over["generation"]), bool, stall_s=60,
                what="the guest answering on the survivor")
    resumed = integrity(survivor, name, failed_over["generation"])
    print(f"VM failover: {time.monotonic() - t1:.2f} s from kill -9 to the guest answering again; "
          f"lost {failed_over['lost_epochs']} epochs; check {resumed!r}")

    ok(first.cli("undeploy", name))
    wait_until(lambda: not qemus(daemons.root), timeout=60, interval=0.3, what="no QEMU left")
