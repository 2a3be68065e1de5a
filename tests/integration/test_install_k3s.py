"""`install.sh --k3s`: refuses a wrong --k3s-binary before installing anything; with a (stand-in)
K3s binary it installs the k3s extra, checks every prerequisite and records [k3s] in config.toml."""

from __future__ import annotations

import os
import subprocess
import tomllib

import pytest

from tests.integration.test_install import REPO, _install, install_root  # noqa: F401 - fixture
from tests.k3s_helpers import standin_binary

pytestmark = pytest.mark.integration


def test_a_wrong_k3s_binary_is_refused_before_installing(install_root):  # noqa: F811
    res = _install(install_root, "--k3s", "--k3s-binary", str(install_root / "no-such-k3s"), "--no-start")
    assert res.returncode == 2 and "is not an executable file" in res.stderr and "k3s-io/k3s/releases" in res.stderr
    assert not (install_root / "venv").exists()


@pytest.mark.slow  # a full pip install with the kubernetes client: 5-15 min on a loaded 2-core box
def test_install_with_k3s_checks_prerequisites_and_records_the_binary(install_root):  # noqa: F811
    binary = standin_binary(install_root / "k3s-standin")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MYCELIUM", "VIRTUAL_ENV"))}
    res = subprocess.run(["bash", str(REPO / "install.sh"), "--prefix", str(install_root / "venv"), "--bin-dir",
                          str(install_root / "bin"), "--state-dir", str(install_root / "state"),
                          "--k3s", "--k3s-binary", str(binary), "--no-start"],
                         capture_output=True, text=True, timeout=1800, env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"ok       k3s binary: {binary} (v1.36.2+k3s1)" in res.stdout
    cfg = tomllib.loads((install_root / "state" / "config.toml").read_text())
    assert cfg["k3s"] == {"enabled": True, "binary": str(binary)}
    python = install_root / "venv" / "venv" / "bin" / "python"
    assert subprocess.run([str(python), "-c", "import kubernetes"], timeout=60).returncode == 0
