"""Issue 9: a full disk under a running node. Its state dir is a small tmpfs; we fill it. The daemon
must keep running and answering (no crash, no half-written Primary), decide nothing it cannot store,
and after space returns and a restart, hold every Primary it had committed and decide on."""

from __future__ import annotations

import signal
import tempfile
from pathlib import Path

import pytest

from tests.testnet.cluster import FAST_ENV, NetDaemon, wait_seconds
from tests.testnet.faults import fill_disk, small_tmpfs, tmpfs_unavailable_reason
from tests.testnet.history import History, read_chain, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def small_disk():
    """A daemon (not started) whose state dir is an 8 MiB tmpfs; killed and unmounted after."""
    reason = tmpfs_unavailable_reason()
    if reason:
        pytest.skip(reason)
    mount = Path(tempfile.mkdtemp(prefix="mycdisk-", dir="/tmp"))
    with small_tmpfs(mount, size_kib=8192):
        d = NetDaemon(mount / "s", "disk", [], "127.0.0.1", dict(FAST_ENV))
        try:
            yield mount, d
        finally:
            d.kill(signal.SIGKILL)
    mount.rmdir()  # unmounted (and empty) again


def test_full_disk_keeps_the_daemon_up_and_loses_nothing(small_disk):
    mount, d = small_disk
    history = History()
    assert d.up().returncode == 0, d.log()
    st = wait_for(lambda: (s := d.status_or_none()) and s["epoch"] >= 3 and s, timeout=30,
                  what="a few heights")
    history.record("disk", st["epoch"], st["primary_hash"])
    filler = fill_disk(mount)
    wait_seconds(3)  # a height a second normally: each one now fails to be stored
    full = d.status()  # still answering
    assert d.pid() is not None, "the daemon died of a full disk:\n" + d.log()[-2000:]
    history.record("disk", full["epoch"], full["primary_hash"])
    stuck = full["epoch"]
    wait_seconds(2)
    assert d.status()["epoch"] <= stuck + 1, "heights decided but not storable on a full disk"
    stored = read_chain(d.state_dir / "state.db")
    assert stored and stored[-1][0] >= st["epoch"], stored[-3:]
    for h, x in stored:
        history.record("disk", h, x, from_head=False)

    filler.unlink()  # space is back; a restart must not need any repair
    assert d.cli("down").returncode == 0
    assert d.up().returncode == 0, d.log()[-2000:]
    after = wait_for(lambda: (s := d.status_or_none()) and s["epoch"] > stuck + 1 and s, timeout=40,
                     what="new heights after space returned")
    history.record("disk", after["epoch"], after["primary_hash"])
    for h, x in read_chain(d.state_dir / "state.db"):
        history.record("disk", h, x, from_head=False)
    history.assert_no_fork()
    history.assert_nothing_lost()
    heights = [h for h, _ in read_chain(d.state_dir / "state.db")]
    assert heights == list(range(heights[0], heights[-1] + 1)), "a gap in the stored chain"


def test_a_full_disk_is_named_in_status_and_the_node_resumes_by_itself(small_disk):
    """Issue 14: "only a state that makes the node unusable (disk full, damaged database) stops the
    session, and `mycelium status` says which and what to do" — and once space is back the node
    resumes without a restart."""
    mount, d = small_disk
    assert d.up().returncode == 0, d.log()
    wait_for(lambda: (s := d.status_or_none()) and s["epoch"] >= 2 and s, timeout=30, what="the first heights")
    filler = fill_disk(mount)
    st = wait_for(lambda: (s := d.status_or_none()) and s.get("unusable") and s, timeout=120,
                  what="status to say the node cannot run (disk full)")
    assert "disk holding the state directory is full" in st["unusable"]["reason"], st
    assert "free space" in st["unusable"]["fix"]
    human = d.cli("status")
    assert human.returncode == 0 and "not running its network" in human.stdout, human.stdout
    assert d.pid() is not None  # the daemon itself stays up, answering

    filler.unlink()  # no restart: the daemon retries on its own
    stuck = st["epoch"]
    wait_for(lambda: (s := d.status_or_none()) and s["unusable"] is None and s["epoch"] > stuck + 1 and s,
             timeout=120, what="the node to resume and decide again after space was freed")
