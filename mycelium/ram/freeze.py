"""Stop a process tree for the instant of an epoch cut: cgroup v2 `cgroup.freeze` (shell).

cgroup v2's freezer stops every task of the cgroup at a safe point and reports `frozen 1` in
`cgroup.events` once they all are; thawing is immediate. We create one cgroup per Endophyte under the
v2 hierarchy (`/sys/fs/cgroup` or, on hybrid hosts, `/sys/fs/cgroup/unified`). Where no writable v2
hierarchy exists we fall back to SIGSTOP/SIGCONT of the process (and `Freezer.kind` says so).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

V2_ROOTS = (Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/unified"))


def v2_root() -> Path | None:
    for root in V2_ROOTS:
        if (root / "cgroup.controllers").exists() and os.access(root, os.W_OK):
            return root
    return None


def sweep_dead(parent: Path) -> int:
    """Remove empty cgroups left by a supervisor that died (named `<name>-<pid>-<n>`, pid not running)."""
    removed = 0
    for child in parent.iterdir() if parent.is_dir() else ():
        parts = child.name.rsplit("-", 2)
        if not child.is_dir() or len(parts) != 3 or not parts[1].isdigit():
            continue
        if Path(f"/proc/{parts[1]}").exists():
            continue
        try:
            (child / "cgroup.freeze").write_text("0")
            child.rmdir()
            removed += 1
        except OSError:  # still populated (a program survived its supervisor): leave it to whoever owns it
            pass
    return removed


class Freezer:
    def __init__(self, name: str) -> None:
        root = v2_root()
        self.path: Path | None = None
        self.pid: int | None = None
        if root is not None:
            sweep_dead(root / "mycelium-ram")
            path = root / "mycelium-ram" / name
            try:
                path.mkdir(parents=True, exist_ok=True)
                self.path = path
            except OSError:
                self.path = None
        self.kind = "cgroup-v2" if self.path is not None else "sigstop"

    def preexec(self) -> None:
        """In the child before exec: join the cgroup."""
        if self.path is not None:
            (self.path / "cgroup.procs").write_text("0")

    def attach(self, pid: int) -> None:
        self.pid = pid

    def freeze(self, timeout_s: float = 5.0) -> None:
        if self.path is None:
            assert self.pid is not None
            os.kill(self.pid, signal.SIGSTOP)
            self._wait_stopped(timeout_s)
            return
        (self.path / "cgroup.freeze").write_text("1")
        deadline = time.monotonic() + timeout_s
        while "frozen 1" not in (self.path / "cgroup.events").read_text():
            if time.monotonic() > deadline:
                (self.path / "cgroup.freeze").write_text("0")
                raise TimeoutError(f"cgroup {self.path} did not freeze within {timeout_s} s")
            time.sleep(0.0002)

    def thaw(self) -> None:
        if self.path is None:
            assert self.pid is not None
            os.kill(self.pid, signal.SIGCONT)
            return
        (self.path / "cgroup.freeze").write_text("0")

    def _wait_stopped(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            state = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            if state in ("T", "t"):
                return
            time.sleep(0.0002)
        raise TimeoutError(f"pid {self.pid} did not stop within {timeout_s} s")

    def remove(self) -> None:
        if self.path is None:
            return
        try:
            (self.path / "cgroup.freeze").write_text("0")
        except OSError:  # already gone
            return
        deadline = time.monotonic() + 2.0
        while True:  # a killed task leaves the cgroup a moment after it is reaped
            try:
                self.path.rmdir()
                return
            except OSError:
                if time.monotonic() > deadline:
                    return  # still populated by something we do not own: leave it, and say nothing worse
                time.sleep(0.01)
