"""An Endophyte's process (an arena program or a QEMU, each in its own session) outlives a daemon
killed with -9; the restarted daemon's Endophyte runner kills what is left of every recorded group
before it starts anything, and leaves unrelated processes alone."""

from __future__ import annotations

import subprocess
import sys
import time

import psutil
import trio

from mycelium.ram.process import ArenaProcess
from mycelium.ram.runner import _record_run, reap_leftovers
from mycelium.runtime.leftovers import RUN_FILE

SLEEPER = [sys.executable, "-c", "import time; time.sleep(600)"]


def _alive(proc: subprocess.Popen) -> bool:
    return proc.poll() is None


def test_a_recorded_endophyte_process_is_killed_at_the_next_start_and_a_stranger_is_not(tmp_path):
    workdir = tmp_path / "endophytes" / "counter" / "g3"
    workdir.mkdir(parents=True)
    leftover = subprocess.Popen(SLEEPER, start_new_session=True)
    stranger = subprocess.Popen(SLEEPER, start_new_session=True)
    try:
        _record_run(workdir, "counter", ArenaProcess("counter", SLEEPER, 4096, workdir, proc=leftover))
        assert (workdir / RUN_FILE).exists()
        (tmp_path / "endophytes" / "broken" / "g1").mkdir(parents=True)
        (tmp_path / "endophytes" / "broken" / "g1" / RUN_FILE).write_text("{not json")

        found = trio.run(reap_leftovers, tmp_path, 2.0)

        assert leftover.wait(timeout=30) is not None  # killed (and reaped here: it is our child)
        assert _alive(stranger)
        assert any("counter" in line and "killed 1 leftover" in line for line in found), found
        assert any("unreadable run record" in line for line in found), found
        assert not (workdir / RUN_FILE).exists()
        assert trio.run(reap_leftovers, tmp_path, 2.0) == []  # nothing recorded any more
    finally:
        for proc in (leftover, stranger):
            if _alive(proc):
                proc.kill()
            proc.wait()


def test_a_record_of_a_process_that_already_ended_kills_nothing(tmp_path):
    workdir = tmp_path / "endophytes" / "vm1" / "g1"
    workdir.mkdir(parents=True)
    ended = subprocess.Popen([sys.executable, "-c", "pass"], start_new_session=True)
    _record_run(workdir, "vm1", ArenaProcess("vm1", SLEEPER, 4096, workdir, proc=ended))
    ended.wait()
    deadline = time.monotonic() + 30
    while psutil.pid_exists(ended.pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert trio.run(reap_leftovers, tmp_path, 2.0) == []
    assert not (workdir / RUN_FILE).exists()


def test_no_endophytes_dir_is_fine(tmp_path):
    assert trio.run(reap_leftovers, tmp_path, 2.0) == []


def test_workdirs_keep_the_newest_generations_and_go_with_an_undeployed_name(tmp_path):
    """One workdir per generation run here, a new one with every move: bounded by KEEP_GENERATIONS,
    and an Endophyte no longer leased (nor running) leaves nothing on disk."""
    from mycelium.ram.runner import KEEP_GENERATIONS, prune_undeployed, prune_workdirs

    root = tmp_path / "endophytes"
    for g in range(1, 8):
        (root / "vm1" / f"g{g}").mkdir(parents=True)
        (root / "vm1" / f"g{g}" / "serial.log").write_text("x")
    (root / "vm1" / "notes.txt").write_text("not a generation: left alone")
    (root / "gone" / "g3").mkdir(parents=True)
    prune_workdirs(root / "vm1", keep_from=7 - KEEP_GENERATIONS + 1)
    assert sorted(p.name for p in (root / "vm1").iterdir()) == ["g6", "g7", "notes.txt"]
    removed = prune_undeployed(root, {"vm1"})
    assert removed == [root / "gone"] and sorted(p.name for p in root.iterdir()) == ["vm1"]
    assert prune_workdirs(tmp_path / "missing", keep_from=3) == [] and prune_undeployed(tmp_path / "missing", set()) == []
