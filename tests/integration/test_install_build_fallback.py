"""install.sh when a dependency has no wheel for this machine and there is nothing to build it with.

A throwaway checkout holds the real install.sh and a tiny project whose two dependencies exist only as
source distributions in a local find-links folder: one pure Python, one C extension (the shape of
python-baseconv and fastecdsa). "No compiler" is real: CC points at a compiler that does not (yet) exist,
which both install.sh's check and setuptools' build obey.

- as a user: install.sh names the dependency that must be built (only the C one), prints the one command
  to run, exits 2, and leaves no virtualenv behind;
- as root: install.sh runs `apt-get install build-essential python3-dev libgmp-dev` (a recording stand-in
  for apt-get that makes the compiler appear, so the host's packages are not touched), then builds and
  installs. The real apt-get path runs in the arm64 rootfs test (test_install_arm64.py, --slow).
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
SYSTEM_PYTHON = "/usr/bin/python3"  # readable by an unprivileged user, unlike a python under /root
BUILD_PKGS = "build-essential python3-dev libgmp-dev"

PROJECT = """\
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"
[project]
name = "mycelium-installer-probe"
version = "0.0.0"
dependencies = ["myc-probe-ext", "myc-probe-pure"]
[project.scripts]
mycelium = "mycelium_installer_probe:main"
[tool.setuptools]
py-modules = ["mycelium_installer_probe"]
"""


def _sdist(folder: Path, name: str, files: dict[str, str]) -> None:
    base, dist = f"{name}-1.0", name.replace("_", "-")
    files = {"PKG-INFO": f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n",
             "pyproject.toml": '[build-system]\nrequires = ["setuptools>=61"]\nbuild-backend = "setuptools.build_meta"\n'
                               f'[project]\nname = "{dist}"\nversion = "1.0"\n',
             **files}
    with tarfile.open(folder / f"{base}.tar.gz", "w:gz") as tf:
        for rel, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"{base}/{rel}")
            info.size, info.mode = len(data), 0o644
            tf.addfile(info, io.BytesIO(data))


@pytest.fixture
def probe():
    if not (os.access(SYSTEM_PYTHON, os.X_OK) and subprocess.run(
            [SYSTEM_PYTHON, "-c", "import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))"]).returncode == 0):
        pytest.skip(f"needs {SYSTEM_PYTHON} >= 3.11 with venv (apt-get install python3 python3-venv)")
    root = Path(tempfile.mkdtemp(prefix="myc-fallback-", dir="/tmp"))
    try:
        checkout, index = root / "checkout", root / "index"
        checkout.mkdir()
        index.mkdir()
        shutil.copy(REPO / "install.sh", checkout / "install.sh")
        (checkout / "pyproject.toml").write_text(PROJECT)
        (checkout / "mycelium_installer_probe.py").write_text(
            "def main():\n    import myc_probe_ext, myc_probe_pure\n"
            "    print('probe', myc_probe_ext.answer(), myc_probe_pure.ANSWER)\n")
        _sdist(index, "myc_probe_pure", {"myc_probe_pure.py": "ANSWER = 42\n",
                                         "setup.py": "from setuptools import setup\nsetup(py_modules=['myc_probe_pure'])\n"})
        _sdist(index, "myc_probe_ext", {
            "probe.c": '#include <Python.h>\n#include <gmp.h>\n'
                       'static PyObject *answer(PyObject *s, PyObject *a) { mpz_t z; mpz_init_set_ui(z, 6);'
                       ' mpz_mul_ui(z, z, 7); long v = mpz_get_si(z); mpz_clear(z); return PyLong_FromLong(v); }\n'
                       'static PyMethodDef m[] = {{"answer", answer, METH_NOARGS, 0}, {0}};\n'
                       'static struct PyModuleDef d = {PyModuleDef_HEAD_INIT, "myc_probe_ext", 0, -1, m};\n'
                       'PyMODINIT_FUNC PyInit_myc_probe_ext(void) { return PyModule_Create(&d); }\n',
            "setup.py": "from setuptools import setup, Extension\n"
                        "setup(ext_modules=[Extension('myc_probe_ext', ['probe.c'], libraries=['gmp'])])\n"})
        for d in (root, checkout, index):
            os.chmod(d, 0o755)
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _env(root: Path, home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MYCELIUM", "VIRTUAL_ENV", "PYENV"))}
    env.update(HOME=str(home), PYTHON=SYSTEM_PYTHON,
               PIP_FIND_LINKS=" ".join(filter(None, [os.environ.get("PIP_FIND_LINKS"), str(root / "index")])), **extra)
    return env


def _install(root: Path, env: dict[str, str], as_user: str | None = None) -> subprocess.CompletedProcess:
    cmd = ["bash", str(root / "checkout" / "install.sh"), "--no-start",
           "--prefix", str(root / "venv"), "--bin-dir", str(root / "bin"), "--state-dir", str(root / "state")]
    if as_user:
        cmd = ["setpriv", f"--reuid={as_user}", f"--regid={as_user}", "--clear-groups", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)


def test_as_a_user_it_stops_with_the_one_command_and_installs_nothing(probe):
    home = probe / "home"
    home.mkdir()
    if os.geteuid() == 0:  # run it as an unprivileged user who owns their clone, as on a Pi
        for d, _, files in os.walk(probe):
            for path in [d, *(os.path.join(d, f) for f in files)]:
                os.chown(path, 65534, 65534)
    cache = Path("/tmp/mycelium-install-test-pip-cache")  # kept between runs: setuptools for each build
    cache.mkdir(exist_ok=True)
    if os.geteuid() == 0:
        os.chown(cache, 65534, 65534)
    env = _env(probe, home, CC=str(probe / "no-compiler-here" / "cc"), PIP_CACHE_DIR=str(cache))
    res = _install(probe, env, as_user="65534" if os.geteuid() == 0 else None)
    out = res.stdout + res.stderr
    assert res.returncode == 2, out
    assert "checking whether a dependency must be built" in res.stdout
    assert "myc-probe-ext==1.0 must be built from source" in res.stderr, out
    assert "myc-probe-pure" not in res.stderr  # pure Python builds without a compiler: not asked for
    assert f"hint: sudo apt-get install {BUILD_PKGS}" in res.stderr
    assert not (probe / "venv").exists(), "a half-made virtualenv was left behind"
    assert not (probe / "bin" / "mycelium").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="install.sh installs build tools itself only as root")
def test_as_root_it_installs_the_build_tools_then_builds(probe):
    real_cc = shutil.which("cc") or shutil.which("gcc")
    if not real_cc or subprocess.run([real_cc, "-E", "-x", "c", "-"], input="#include <gmp.h>\n",
                                     capture_output=True, text=True).returncode != 0:
        pytest.skip(f"the build after 'installing' needs a real compiler and GMP here: apt-get install {BUILD_PKGS}")
    shims = probe / "shims"
    shims.mkdir()
    installed, log = probe / "build-tools-installed", probe / "apt-get.log"
    # The compiler exists only once apt-get has "installed" it.
    (shims / "cc").write_text(f'#!/bin/sh\n[ -e {installed} ] || {{ echo "cc: not installed" >&2; exit 127; }}\n'
                              f'exec {real_cc} "$@"\n')
    (shims / "apt-get").write_text(f'#!/bin/sh\necho "$@" >> {log}\ntouch {installed}\n')
    for f in ("cc", "apt-get"):
        os.chmod(shims / f, 0o755)
    env = _env(probe, Path(os.environ.get("HOME", "/root")), CC=str(shims / "cc"),
               PATH=f"{shims}:{os.environ['PATH']}")
    res = _install(probe, env)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    assert f"building myc-probe-ext==1.0 from source (no wheel for {os.uname().machine}): installing {BUILD_PKGS}" \
        in res.stdout, out
    assert log.read_text().split() == ["install", "-y", "-q", "--no-install-recommends", *BUILD_PKGS.split()]
    ran = subprocess.run([str(probe / "bin" / "mycelium")], capture_output=True, text=True, timeout=60)
    assert ran.stdout.strip() == "probe 42 42", ran.stdout + ran.stderr  # the C extension was built and works
