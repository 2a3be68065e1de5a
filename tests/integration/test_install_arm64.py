"""Issue 22's acceptance: `./install.sh` on arm64 Debian bookworm (what Raspberry Pi OS 64-bit is built on)
ends with a running node, starting from python3 alone: no compiler, no python3-venv.

The arm64 root filesystem runs under user-mode QEMU (qemu-user-static via binfmt_misc), so this is the
real aarch64 CPython, real aarch64 wheels from PyPI and a real aarch64 build of fastecdsa with Debian's
arm64 gcc — but time and memory under emulation say nothing about a Pi: this test reports neither.

Slow (tens of minutes: apt, pip and gcc all emulated): run with `--slow`. Needs root, `debootstrap` and
`qemu-user-static` (apt-get install debootstrap qemu-user-static; not in scripts/apt.d because the default
suite does not need them), binfmt_misc, and the network to reach the Debian mirror and PyPI. The pristine
rootfs is cached in ~/.cache/mycelium-arm64-rootfs (MYCELIUM_ARM64_ROOTFS overrides) and never modified.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from tests.integration import foreign_rootfs
from tests.integration.daemons import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]
NODE_ENV = {"MYCELIUM__NODE__LISTEN": "/ip4/127.0.0.1/tcp/0",  # this chroot shares the host's network
            "MYCELIUM__NODE__MDNS": "false",
            # user-mode emulation on a loaded host: `import libp2p` alone takes minutes, not seconds;
            # install.sh's `up --detach` waits this long for the daemon to be ready
            "MYCELIUM_READY_TIMEOUT": "900"}
CHECKOUT = "/home/pi/mycelium"
# ELF e_machine of an aarch64 shared object, read from the built fastecdsa extension.
ELF_MACHINE_PY = ("import glob, struct, fastecdsa, os; so = glob.glob(os.path.dirname(fastecdsa.__file__) + '/*.so');"
                  "print(len(so), struct.unpack('<H', open(so[0], 'rb').read()[18:20])[0])")


def _copy_checkout(root: Path) -> None:
    junk = shutil.ignore_patterns(".git", ".venv", "__pycache__", ".pytest_cache", ".hypothesis", "build", "*.egg-info")
    shutil.copytree(REPO, root / CHECKOUT.lstrip("/"), ignore=junk)


def test_install_sh_on_arm64_bookworm_ends_with_a_running_node():
    started = time.monotonic()
    try:
        pristine = foreign_rootfs.ensure_rootfs("arm64")
    except foreign_rootfs.Unavailable as e:
        pytest.skip(f"arm64 emulation unavailable here: {e}")
    print(f"\nrootfs ready after {time.monotonic() - started:.0f} s")

    with foreign_rootfs.session(pristine) as root:
        assert foreign_rootfs.run(root, "uname -m", timeout=120).stdout.strip() == "aarch64"
        assert foreign_rootfs.run(root, "useradd -m pi", timeout=120).returncode == 0
        _copy_checkout(root)
        assert foreign_rootfs.run(root, f"chown -R pi:pi {CHECKOUT}", timeout=300).returncode == 0

        # As a user on a bare system: one command to run, and nothing half-installed.
        user = foreign_rootfs.run(root, f"cd {CHECKOUT} && ./install.sh", user="pi", env=NODE_ENV, timeout=600)
        assert user.returncode == 2, user.stdout + user.stderr
        assert "sudo apt-get install python3-venv build-essential python3-dev libgmp-dev" in user.stderr
        assert not (root / "home/pi/.local/share/mycelium-venv").exists()

        # As root: installs python3-venv and the build tools itself, builds fastecdsa, starts the node.
        t0 = time.monotonic()
        res = foreign_rootfs.run(root, f"cd {CHECKOUT} && ./install.sh", env=NODE_ENV, timeout=5400)
        print(f"install.sh as root under arm64 emulation: {time.monotonic() - t0:.0f} s\n{res.stdout}")
        assert res.returncode == 0, res.stdout + res.stderr
        assert "installing python3-venv" in res.stdout
        # the source-only dependencies for aarch64 (tests/integration/wheel_coverage.py), built with
        # the build tools install.sh installed itself
        assert "building fastecdsa==2.3.2 zfec==1.6.0.0 from source" in res.stdout, res.stdout
        assert "installing build-essential python3-dev libgmp-dev" in res.stdout

        def status():
            out = foreign_rootfs.run(root, "mycelium status --json", timeout=300)
            return json.loads(out.stdout) if out.returncode == 0 else None

        st = wait_until(lambda: (s := status()) and s["epoch"] >= 1 and s, timeout=600, interval=2,
                        what="`mycelium status` inside the arm64 rootfs to report height 1")
        assert st["role"] == "sclerotium" and st["members"] == 1

        elf = foreign_rootfs.run(root, f"/opt/mycelium/venv/bin/python -c \"{ELF_MACHINE_PY}\"", timeout=300)
        assert elf.returncode == 0, elf.stderr
        n_so, machine = map(int, elf.stdout.split())
        assert n_so >= 1 and machine == 183, elf.stdout  # EM_AARCH64: fastecdsa was compiled for arm64

        human = foreign_rootfs.run(root, "mycelium status", timeout=300)
        print(human.stdout)
        assert human.returncode == 0, human.stderr
        down = foreign_rootfs.run(root, "mycelium down", timeout=600)
        assert down.returncode == 0, down.stderr
    print(f"arm64 install test total: {time.monotonic() - started:.0f} s")
