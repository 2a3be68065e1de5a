"""`install.sh --k3s`: refuses a wrong --k3s-binary before installing anything; with a (stand-in)
K3s binary it installs the k3s extra, checks every prerequisite and records [k3s] in config.toml."""

from __future__ import annotations

import subprocess
import tomllib

import pytest

from tests.integration.test_install import _install, install_root  # noqa: F401 - fixture
from tests.k3s_helpers import standin_binary

pytestmark = pytest.mark.integration


def test_a_wrong_k3s_binary_is_refused_before_installing(install_root):  # noqa: F811
    res = _install(install_root, "--k3s", "--k3s-binary", str(install_root / "no-such-k3s"), "--no-start")
    assert res.returncode == 2 and "is not an executable file" in res.stderr and "k3s-io/k3s/releases" in res.stderr
    assert not (install_root / "venv").exists()


def test_install_with_k3s_checks_prerequisites_and_records_the_binary(install_root):  # noqa: F811
    binary = standin_binary(install_root)
    res = _install(install_root, "--k3s", "--k3s-binary", str(binary), "--no-start")
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"ok       k3s binary: {binary} (v1.36.2+k3s1)" in res.stdout
    cfg = tomllib.loads((install_root / "state" / "config.toml").read_text())
    assert cfg["k3s"] == {"enabled": True, "binary": str(binary)}
    python = install_root / "venv" / "venv" / "bin" / "python"
    assert subprocess.run([str(python), "-c", "import kubernetes"], timeout=60).returncode == 0
