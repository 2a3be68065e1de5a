"""A process Endophyte on this node: its arena, its process, and the epoch cut (shell, blocking calls).

    ep = ArenaProcess("counter", ["python3", "writer.py"], arena_bytes=4 << 20, workdir=tmp)
    ep.start(image=None)              # or image=backup.image to resume the last epoch
    pages, freeze_s = ep.cut(full=False)   # frozen only for the scan and the copy
    ep.kill()

The arena is a memfd sized `arena_bytes`, filled from `image` (page index -> bytes) before the program
starts, passed as an inherited fd (see arena.py for the program's side). A cut freezes the process
(freeze.py), asks PAGEMAP_SCAN which arena pages were written since the previous cut and re-protects
them, copies those pages with process_vm_readv, and thaws: the pages are exactly the arena's state at
one instant. A full cut copies every page.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from mycelium.ram.arena import ENV_BYTES, ENV_FD, ENV_INFO
from mycelium.ram.freeze import Freezer
from mycelium.ram.pagetrack import PAGE_SIZE, read_pages, scan_written


class ProcessEndophyteError(RuntimeError):
    """The program did not start, did not open its arena, or died; the message says which."""


@dataclass(slots=True)
class ArenaProcess:
    name: str
    argv: list[str]
    arena_bytes: int
    workdir: Path
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen | None = None
    freezer: Freezer | None = None
    addr: int = 0
    memfd: int = -1
    held: bool = False               # frozen by `hold()` (stop-and-copy): cuts leave it frozen
    counters: dict[str, float] = field(default_factory=dict)

    @property
    def npages(self) -> int:
        return self.arena_bytes // PAGE_SIZE

    def start(self, image: dict[int, bytes] | None = None, open_timeout_s: float = 30.0) -> None:
        if self.arena_bytes % PAGE_SIZE:
            raise ProcessEndophyteError(f"arena of {self.arena_bytes} bytes is not a multiple of {PAGE_SIZE}")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.memfd = os.memfd_create(f"myc-arena-{self.name}", 0)
        os.ftruncate(self.memfd, self.arena_bytes)
        for index, data in (image or {}).items():
            if not 0 <= index < self.npages or len(data) != PAGE_SIZE:
                raise ProcessEndophyteError(f"image page {index} ({len(data)} bytes) does not fit the arena")
            os.pwrite(self.memfd, data, index * PAGE_SIZE)
        info = self.workdir / "arena.info"
        info.unlink(missing_ok=True)
        self.freezer = Freezer(f"{self.name}-{os.getpid()}-{time.monotonic_ns()}")
        env = {**os.environ, **self.env, ENV_FD: str(self.memfd), ENV_BYTES: str(self.arena_bytes),
               ENV_INFO: str(info)}
        self.proc = subprocess.Popen(self.argv, env=env, pass_fds=(self.memfd,), cwd=self.workdir,
                                     stdout=open(self.workdir / "stdout.log", "ab"),
                                     stderr=open(self.workdir / "stderr.log", "ab"),
                                     preexec_fn=self.freezer.preexec, start_new_session=True)
        self.freezer.attach(self.proc.pid)
        deadline = time.monotonic() + open_timeout_s
        while not info.exists():
            if self.proc.poll() is not None:
                raise ProcessEndophyteError(f"{self.argv[0]} exited ({self.proc.returncode}) before opening its "
                                            f"arena: {self.stderr_tail()}")
            if time.monotonic() > deadline:
                self.kill()
                raise ProcessEndophyteError(f"{self.argv[0]} did not call open_arena() within {open_timeout_s} s")
            time.sleep(0.01)
        addr, size = info.read_text().split()
        self.addr = int(addr)
        if int(size) != self.arena_bytes:
            raise ProcessEndophyteError(f"the program mapped {size} bytes of an arena of {self.arena_bytes}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def cut(self, full: bool = False) -> tuple[dict[int, bytes], float]:
        """The arena pages written since the previous cut (every page if `full`), and the freeze time."""
        if not self.alive():
            raise ProcessEndophyteError(f"{self.name} is not running")
        assert self.proc is not None and self.freezer is not None
        t0 = time.perf_counter()
        if not self.held:
            self.freezer.freeze()
        try:
            written = scan_written(self.proc.pid, self.addr, self.arena_bytes)
            pages = read_pages(self.proc.pid, self.addr, list(range(self.npages)) if full else written)
        finally:
            if not self.held:
                self.freezer.thaw()
        frozen = time.perf_counter() - t0
        self.counters["max_freeze_s"] = max(self.counters.get("max_freeze_s", 0.0), frozen)
        return pages, frozen

    def pause(self) -> None:
        """Frozen until `resume()` (throttle duty cycle, emergency pause)."""
        assert self.freezer is not None
        self.freezer.freeze()

    def resume(self) -> None:
        assert self.freezer is not None
        self.freezer.thaw()

    def hold(self) -> None:
        """Freeze until `release()`: the stop in stop-and-copy (the final cut keeps it frozen)."""
        assert self.freezer is not None
        self.freezer.freeze()
        self.held = True

    def release(self) -> None:
        assert self.freezer is not None
        self.held = False
        self.freezer.thaw()

    def stderr_tail(self, n: int = 400) -> str:
        p = self.workdir / "stderr.log"
        return p.read_text(errors="replace")[-n:] if p.exists() else ""

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(timeout=10)
        if self.freezer is not None:
            self.freezer.remove()
        if self.memfd >= 0:
            os.close(self.memfd)
            self.memfd = -1
