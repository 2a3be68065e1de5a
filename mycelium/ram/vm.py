"""A VM Endophyte on this node: a QEMU guest whose RAM and device state are cut into epochs (shell,
blocking calls). The same interface as `process.ArenaProcess`, so `PrimaryReplicator` and the runner
drive both kinds alike:

    vm = GuestVM("web", GuestImage.test_guest(), workdir, memory_mib=128)
    vm.start(image=None)              # boot; or image=backup.image to resume the last epoch
    pages, stopped_s = vm.cut(full=False)
    vm.kill()

Guest RAM is a shared memfd tracked from outside QEMU (vm_track.py). A cut: QMP `stop`; PAGEMAP_SCAN
names the RAM pages written since the previous cut (and re-protects them); those pages are read from
the memfd; QEMU saves its **device state only** (migration with `x-ignore-shared`: shared RAM is not
sent) to a file; `cont`. The epoch's pages are the RAM pages by guest-physical page index, plus the
device state packed as pages after the last RAM page (`pack_device_state`), so the epoch protocol,
its digests and the backups' images are the process path's unchanged. A full cut sends the non-zero
RAM pages (a resumed guest's memfd starts zeroed).

Resuming an image: QEMU starts with `-incoming defer` (guest RAM allocated, nothing running), the memfd
is zeroed and filled with the image's RAM pages, the device state is loaded with `migrate-incoming`
(`x-ignore-shared` again), tracking is armed, and the guest continues where the epoch was cut.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from mycelium.ram.pagetrack import PAGE_SIZE, scan_written
from mycelium.ram.qemu import GuestConfig, GuestImage, QemuError, QemuVM
from mycelium.ram.vm_device import pack_device_state, split_image
from mycelium.ram.vm_track import punch, qemu_args, qemu_env, ram_mapping, ram_memfd, start_tracking

ZERO_PAGE = bytes(PAGE_SIZE)
READ_CHUNK = 256  # pages per pread of a full cut


class VmEndophyteError(QemuError):
    """The guest did not start, could not be resumed, or QEMU died; the message says which."""


@dataclass(slots=True)
class GuestVM:
    name: str
    guest: GuestImage
    workdir: Path
    memory_mib: int = 128
    cpus: int = 1
    vm: QemuVM | None = None
    memfd: int = -1
    uffd: int = -1
    addr: int = 0
    held: bool = False
    counters: dict[str, float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def npages(self) -> int:
        return (self.memory_mib << 20) // PAGE_SIZE

    @property
    def probe_port(self) -> int:
        return self.vm.probe_port if self.vm is not None else 0

    def start(self, image: dict[int, bytes] | None = None) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        ram, device = split_image(image, self.npages) if image is not None else ({}, b"")
        if image is not None and not device:
            raise VmEndophyteError(f"{self.name}: the image holds no device state (not a VM epoch)")
        config = GuestConfig(memory_mib=self.memory_mib, extra_args=(
            "-vga", "none", *(["-smp", str(self.cpus)] if self.cpus > 1 else []),
            *qemu_args(self.memory_mib)))
        self.vm = QemuVM(self.workdir, self.guest, config, incoming="defer" if image is not None else None,
                         env=qemu_env())
        try:
            self.vm.start()
            assert self.vm.proc is not None
            pid = self.vm.proc.pid
            self.addr = ram_mapping(pid, self.memory_mib << 20)
            self.memfd = ram_memfd(pid)
            self.vm.cmd("migrate-set-capabilities", capabilities=[{"capability": "x-ignore-shared", "state": True}])
            if image is not None:
                self._fill(ram, device)
            self.uffd = start_tracking(pid, self.addr, self.memory_mib << 20)
            if image is not None:
                self.vm.cmd("cont")
        except (OSError, QemuError) as exc:
            tail = self.vm.serial_tail(300) if self.vm is not None else ""
            self.kill()
            raise VmEndophyteError(f"{self.name}: {exc} {tail}") from exc

    def _fill(self, ram: dict[int, bytes], device: bytes) -> None:
        assert self.vm is not None
        deadline = time.monotonic() + 60
        while self.vm.status() != "inmigrate":
            if time.monotonic() > deadline:
                raise VmEndophyteError(f"QEMU is in state {self.vm.status()}, not waiting for an incoming state")
            time.sleep(0.02)
        punch(self.memfd, self.memory_mib << 20)
        for index, data in ram.items():
            os.pwrite(self.memfd, data, index * PAGE_SIZE)
        state = self.workdir / "device-state.in"
        state.write_bytes(device)
        self.vm.cmd("migrate-incoming", uri=f"exec:cat {state}")
        while (status := self.vm.status()) == "inmigrate":
            if time.monotonic() > deadline:
                raise VmEndophyteError("loading the device state did not finish within 60 s")
            time.sleep(0.01)
        if status != "paused":
            raise VmEndophyteError(f"loading the device state left QEMU {status}: {self.vm.serial_tail(200)}")

    def alive(self) -> bool:
        return self.vm is not None and self.vm.proc is not None and self.vm.proc.poll() is None

    def cut(self, full: bool = False) -> tuple[dict[int, bytes], float]:
        """RAM pages written since the previous cut (every non-zero page if `full`) + the device state."""
        if not self.alive():
            raise VmEndophyteError(f"{self.name}: QEMU is not running ({self._exit()})")
        assert self.vm is not None and self.vm.proc is not None
        with self._lock:
            t0 = time.perf_counter()
            if not self.held:
                self.vm.cmd("stop")
            try:
                written = scan_written(self.vm.proc.pid, self.addr, self.memory_mib << 20)
                pages = self._read_all() if full else {i: os.pread(self.memfd, PAGE_SIZE, i * PAGE_SIZE)
                                                        for i in written}
                pages.update(pack_device_state(self._device_state(), self.npages))
            finally:
                if not self.held and self.alive():
                    self.vm.cmd("cont")
            stopped = time.perf_counter() - t0
        self.counters["max_freeze_s"] = max(self.counters.get("max_freeze_s", 0.0), stopped)
        self.counters["last_freeze_s"] = stopped
        return pages, stopped

    def _read_all(self) -> dict[int, bytes]:
        """Every non-zero page: only the memfd's allocated extents (SEEK_DATA/SEEK_HOLE) are read."""
        out: dict[int, bytes] = {}
        size, pos = self.memory_mib << 20, 0
        while pos < size:
            try:
                start = os.lseek(self.memfd, pos, os.SEEK_DATA)
            except OSError:
                break  # ENXIO: no data after pos
            end = min(size, os.lseek(self.memfd, start, os.SEEK_HOLE))
            for first in range(start, end, READ_CHUNK * PAGE_SIZE):
                chunk = os.pread(self.memfd, min(READ_CHUNK * PAGE_SIZE, end - first), first)
                if chunk.count(0) == len(chunk):
                    continue
                for k in range(len(chunk) // PAGE_SIZE):
                    page = chunk[k * PAGE_SIZE: (k + 1) * PAGE_SIZE]
                    if page != ZERO_PAGE:
                        out[first // PAGE_SIZE + k] = page
            pos = end
        return out

    def _device_state(self) -> bytes:
        assert self.vm is not None
        path = self.workdir / "device-state.out"
        path.unlink(missing_ok=True)
        self.vm.cmd("migrate", uri=f"exec:cat > {path}")
        deadline = time.monotonic() + 60
        while True:
            info = self.vm.cmd("query-migrate")
            if info.get("status") == "completed":
                break
            if info.get("status") in ("failed", "cancelled") or time.monotonic() > deadline:
                raise VmEndophyteError(f"saving the device state: {info.get('status')} {info.get('error-desc', '')}")
            time.sleep(0.002)
        return path.read_bytes()

    def pause(self) -> None:
        """Stop the vCPUs (throttle and emergency pause); a no-op while held for a migration."""
        with self._lock:
            if not self.held and self.alive():
                assert self.vm is not None
                self.vm.cmd("stop")

    def resume(self) -> None:
        with self._lock:
            if not self.held and self.alive():
                assert self.vm is not None
                self.vm.cmd("cont")

    def hold(self) -> None:
        """Stopped until `release()`: the stop in stop-and-copy (the final cut keeps it stopped)."""
        with self._lock:
            assert self.vm is not None
            self.vm.cmd("stop")
            self.held = True

    def release(self) -> None:
        with self._lock:
            self.held = False
            if self.alive():
                assert self.vm is not None
                self.vm.cmd("cont")

    def _exit(self) -> str:
        code = self.vm.proc.poll() if self.vm is not None and self.vm.proc is not None else None
        return f"exit status {code}; console: {self.vm.serial_tail(200) if self.vm else ''}"

    def stderr_tail(self, n: int = 400) -> str:
        return self.vm.serial_tail(n) if self.vm is not None else ""

    def kill(self) -> None:
        vm = self.vm
        if vm is not None and vm.proc is not None:
            if vm.proc.poll() is None:
                os.killpg(vm.proc.pid, signal.SIGKILL)
            vm.proc.wait(timeout=10)
            vm.proc = None
            if vm.qmp is not None:
                try:
                    vm.qmp.close()
                except Exception:  # noqa: BLE001 - the monitor died with QEMU; nothing left to close
                    pass
                vm.qmp = None
        for attr in ("memfd", "uffd"):
            fd = getattr(self, attr)
            if fd >= 0:
                os.close(fd)
                setattr(self, attr, -1)
