"""Issue 2's acceptance: `./install.sh` ends with a running node (sclerotium, epoch ≥ 1, one member),
`mycelium down` stops it, and re-running install.sh upgrades in place keeping identity and state."""

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.integration.daemons import wait_until

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def install_root():
    root = Path(tempfile.mkdtemp(prefix="myc-inst-", dir="/tmp"))
    try:
        yield root
    finally:
        mycelium = root / "bin" / "mycelium"
        if mycelium.exists():
            subprocess.run([str(mycelium), "--state-dir", str(root / "state"), "down"], capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


def _install(root: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MYCELIUM", "VIRTUAL_ENV"))}
    env["MYCELIUM__NODE__LISTEN"] = "/ip4/127.0.0.1/tcp/0"  # never the default port in tests
    env["MYCELIUM__NODE__MDNS"] = "false"  # no multicast onto the LAN from tests
    return subprocess.run(
        ["bash", str(REPO / "install.sh"), "--prefix", str(root / "venv"), "--bin-dir", str(root / "bin"),
         "--state-dir", str(root / "state"), *extra],
        capture_output=True, text=True, timeout=600, env=env,
    )


def test_install_runs_a_node_and_upgrades_in_place(install_root):
    res = _install(install_root)
    assert res.returncode == 0, res.stdout + res.stderr
    mycelium = str(install_root / "bin" / "mycelium")
    assert os.path.islink(mycelium)

    def status():
        out = subprocess.run([mycelium, "--state-dir", str(install_root / "state"), "status", "--json"],
                             capture_output=True, text=True, timeout=30)
        return json.loads(out.stdout) if out.returncode == 0 else None

    st = wait_until(lambda: (s := status()) and s["epoch"] >= 1 and s, timeout=30, what="height 1")
    assert st["role"] == "sclerotium" and st["members"] == 1

    again = _install(install_root)  # upgrade in place: stops, reinstalls, starts, same identity
    assert again.returncode == 0, again.stdout + again.stderr
    assert "stopping the running node" in again.stdout
    st2 = wait_until(lambda: (s := status()) and s["epoch"] >= st["epoch"] and s, timeout=30, what="the node back")
    assert (st2["node_id"], st2["network_id"]) == (st["node_id"], st["network_id"])

    down = subprocess.run([mycelium, "--state-dir", str(install_root / "state"), "down"], capture_output=True,
                          text=True, timeout=60)
    assert down.returncode == 0, down.stderr
    assert status() is None


def test_install_refuses_unknown_options(install_root):
    res = _install(install_root, "--frobnicate")
    assert res.returncode == 2 and "unknown option" in res.stderr
