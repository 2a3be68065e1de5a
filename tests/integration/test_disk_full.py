"""Issue 14: "only a state that makes the node unusable (disk full, damaged database) stops the
session, and `mycelium status` says which and what to do". A real daemon whose state directory is a
small tmpfs that we fill: status names the full disk and the fix; once space is freed the node
resumes by itself and decides again."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.integration.daemons import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def small_disk(daemons):
    """A 48 MiB tmpfs as one daemon's state dir (unmounted after the daemon is killed)."""
    d = daemons.new("full")
    d.state_dir.mkdir(parents=True)
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m,mode=0700", "tmpfs", str(d.state_dir)],
                         capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {res.stderr.strip()}")
    try:
        yield d
    finally:
        d.kill()
        subprocess.run(["umount", "-l", str(d.state_dir)], capture_output=True)


def ok(res):
    assert res.returncode == 0, f"exit {res.returncode}\nstdout: {res.stdout}\nstderr: {res.stderr}"
    return res.stdout


def _fill(path):
    """Write zeros until the filesystem is full (ENOSPC): nothing is left for the node."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (1 << 20, 4096, 512):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                pass
    finally:
        os.close(fd)


def test_a_full_disk_is_named_in_status_and_the_node_resumes_when_space_is_freed(small_disk, monkeypatch):
    monkeypatch.setenv("MYCELIUM__NODE__HEARTBEAT_S", "1")  # a Primary written every second
    d = small_disk
    ok(d.up())
    wait_until(lambda: d.status()["epoch"] >= 2, timeout=60, what="the first heights")
    ballast = d.state_dir / "ballast"
    _fill(ballast)

    def named():
        st = d.status()
        return st if st.get("unusable") else None
    st = wait_until(named, timeout=180, interval=0.5, what="status to say the node cannot run (disk full)")
    assert "disk holding the state directory is full" in st["unusable"]["reason"], st
    assert "free space" in st["unusable"]["fix"]
    human = d.cli("status")
    assert human.returncode == 0 and "not running its network" in human.stdout and "free space" in human.stdout
    assert d.pid() is not None  # the daemon itself stays up, answering status

    stuck_at = st["epoch"]
    os.unlink(ballast)
    seen = {}

    def resumed():
        seen["status"] = s = d.status()
        return s["unusable"] is None and s["epoch"] > stuck_at + 1
    try:
        wait_until(resumed, timeout=120, interval=0.5, what="the node to resume and decide again after space was freed")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last status {seen.get('status')}; log tail:\n{d.log()[-3000:]}") from None
    ok(d.cli("down"))
