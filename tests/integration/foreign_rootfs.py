"""A Debian bookworm root filesystem for another CPU (arm64: a Raspberry Pi), run under user-mode QEMU.

Built once with Debian's `debootstrap` from the mirror this machine's apt already uses, cached outside the
repository (~/.cache/mycelium-<arch>-rootfs), and never modified afterwards: each test runs in a fresh
overlay on top of it (`session`), so every run starts from the same pristine image — python3 only, no
compiler, no python3-venv, like Raspberry Pi OS Lite.

Needs root (debootstrap, chroot, mounts), `debootstrap` and `qemu-user-static` from Debian, and the
kernel's binfmt_misc with the qemu handler registered (done here if it is not). Each check that fails
says what is missing via `Unavailable`, which the test turns into a skip with that reason.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator

SUITE = "bookworm"
QEMU = {"arm64": "qemu-aarch64", "armhf": "qemu-arm"}
ELF_MACHINE = {"arm64": "aarch64", "armhf": "arm"}
# debootstrap's minbase plus the one thing Raspberry Pi OS Lite certainly has: python3 (3.11 in bookworm).
INCLUDE = "python3,ca-certificates"
HOST_CA = "/etc/mycelium-test-host-ca.crt"


class Unavailable(Exception):
    """This machine cannot run the foreign rootfs; the message says what is missing."""


def debian_mirror(sources: tuple[str, ...] = ("/etc/apt/sources.list", "/etc/apt/sources.list.d")) -> str:
    """The Debian mirror apt already uses here (the only registry this machine may reach)."""
    files: list[Path] = []
    for s in sources:
        p = Path(s)
        files += sorted(p.glob("*.sources")) + sorted(p.glob("*.list")) if p.is_dir() else [p] if p.exists() else []
    for f in files:
        text = f.read_text(errors="replace")
        for stanza in re.split(r"\n\s*\n", text):  # deb822: URIs: … / Suites: …
            uris = re.search(r"^URIs:\s*(\S+)", stanza, re.M)
            suites = re.search(r"^Suites:\s*(.+)$", stanza, re.M)
            if uris and suites and SUITE in suites.group(1).split():
                return uris.group(1).rstrip("/")
        for line in text.splitlines():  # one-line form: deb [opts] URI suite comps
            m = re.match(r"^\s*deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+(\S+)", line)
            if m and m.group(2) == SUITE:
                return m.group(1).rstrip("/")
    raise Unavailable(f"no Debian {SUITE} mirror in /etc/apt/sources.list* to debootstrap from")


def ensure_binfmt(arch: str) -> None:
    """Make the kernel run `arch` ELF binaries through qemu-user-static (mounting and registering if needed)."""
    if os.geteuid() != 0:
        raise Unavailable("needs root (debootstrap, chroot and binfmt_misc registration)")
    for tool in ("debootstrap", f"{QEMU[arch]}-static", "chroot"):
        if not shutil.which(tool) and not Path(f"/usr/sbin/{tool}").exists():
            raise Unavailable(f"{tool} is not installed: apt-get install debootstrap qemu-user-static")
    binfmt = Path("/proc/sys/fs/binfmt_misc")
    if not (binfmt / "status").exists():
        r = subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(binfmt)], capture_output=True, text=True)
        if r.returncode != 0:
            raise Unavailable(f"binfmt_misc cannot be mounted here: {r.stderr.strip()}")
    handler = binfmt / QEMU[arch]
    if not handler.exists() and shutil.which("update-binfmts"):
        subprocess.run(["update-binfmts", "--enable", QEMU[arch]], capture_output=True)
    if not handler.exists() or "enabled" not in handler.read_text():
        raise Unavailable(f"the {QEMU[arch]} binfmt handler is not registered (update-binfmts --enable {QEMU[arch]})")
    if "F" not in re.search(r"^flags:\s*(\S*)", handler.read_text(), re.M).group(1):
        raise Unavailable(f"the {QEMU[arch]} binfmt handler lacks the F flag, so it cannot run inside a chroot")


def cache_dir(arch: str) -> Path:
    return Path(os.environ.get(f"MYCELIUM_{arch.upper()}_ROOTFS", Path.home() / ".cache" / f"mycelium-{arch}-rootfs"))


def ensure_rootfs(arch: str, log=print) -> Path:
    """The cached pristine rootfs for `arch`, debootstrapped on first use (minutes under emulation)."""
    ensure_binfmt(arch)
    root = cache_dir(arch)
    done = root / ".mycelium-rootfs-complete"
    if done.exists():
        return root
    mirror = debian_mirror()
    shutil.rmtree(root, ignore_errors=True)  # a half-built one from an interrupted run
    root.parent.mkdir(parents=True, exist_ok=True)
    log(f"debootstrap {arch} {SUITE} from {mirror} into {root} (first run only)")
    r = subprocess.run(["debootstrap", f"--arch={arch}", "--variant=minbase", f"--include={INCLUDE}",
                        SUITE, str(root), mirror], capture_output=True, text=True)
    if r.returncode != 0:
        tail = (r.stdout + r.stderr)[-3000:]
        shutil.rmtree(root, ignore_errors=True)
        raise RuntimeError(f"debootstrap failed ({r.returncode}):\n{tail}")
    machine = subprocess.run(["chroot", str(root), "uname", "-m"], capture_output=True, text=True).stdout.strip()
    if machine != ELF_MACHINE[arch] and not machine.startswith("armv"):
        raise RuntimeError(f"the {arch} rootfs reports machine {machine!r}: emulation is not in effect")
    done.write_text(f"{arch} {SUITE} {mirror}\n")
    return root


@contextlib.contextmanager
def session(pristine: Path) -> Iterator[Path]:
    """A throwaway writable copy of `pristine` (overlayfs) with /proc, /dev, /sys and DNS, torn down after.

    Processes left running inside it (a detached daemon) are killed by their root directory, so only
    what this session started is touched."""
    work = Path(tempfile.mkdtemp(prefix="myc-rootfs-", dir="/tmp"))
    upper, wdir, root = work / "upper", work / "work", work / "root"
    for d in (upper, wdir, root):
        d.mkdir()
    mounted: list[Path] = []

    def mount(*args: str, target: Path) -> None:
        subprocess.run(["mount", *args, str(target)], check=True, capture_output=True)
        mounted.append(target)

    try:
        mount("-t", "overlay", "overlay", "-o", f"lowerdir={pristine},upperdir={upper},workdir={wdir}", target=root)
        mount("-t", "proc", "proc", target=root / "proc")
        mount("--rbind", "/dev", target=root / "dev")
        subprocess.run(["mount", "--make-rslave", str(root / "dev")], capture_output=True)
        mount("-t", "sysfs", "sysfs", target=root / "sys")
        mount("-t", "tmpfs", "tmpfs", target=root / "tmp")
        shutil.copy("/etc/resolv.conf", root / "etc" / "resolv.conf")
        # This machine reaches PyPI through a TLS proxy whose CA only the host's bundle trusts: hand that
        # bundle to pip inside (PIP_CERT, as on the host) without touching the rootfs's own trust store.
        host_ca = os.environ.get("PIP_CERT") or "/etc/ssl/certs/ca-certificates.crt"
        if Path(host_ca).is_file():
            shutil.copy(host_ca, root / HOST_CA.lstrip("/"))
        yield root
    finally:
        _kill_inside(root)
        for target in reversed(mounted):
            subprocess.run(["umount", "-R", "-l", str(target)], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


def _kill_inside(root: Path) -> None:
    real = os.path.realpath(root)
    for pid_dir in Path("/proc").iterdir():
        if not pid_dir.name.isdigit():
            continue
        try:
            if os.path.realpath(pid_dir / "root") == real:
                os.kill(int(pid_dir.name), 9)
        except (OSError, ProcessLookupError):
            continue


def run(root: Path, script: str, *, user: str | None = None, env: dict[str, str] | None = None,
        timeout: float) -> subprocess.CompletedProcess:
    """Run a bash script inside the rootfs (as root, or as `user` via runuser) and capture its output."""
    base = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8",
            "HOME": "/root", "DEBIAN_FRONTEND": "noninteractive", **(env or {})}
    if (root / HOST_CA.lstrip("/")).exists():
        base["PIP_CERT"] = HOST_CA
    cmd = ["chroot", str(root)]
    if user:
        base["HOME"] = f"/home/{user}"
        cmd += ["runuser", "-u", user, "--", "env", *[f"{k}={v}" for k, v in base.items()]]
    cmd += ["bash", "-euo", "pipefail", "-c", script]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=base)
