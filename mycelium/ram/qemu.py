"""QEMU for Endophyte VMs: start a guest, drive it through QMP, migrate it (shell, blocking calls).

QMP goes through `qemu.qmp` (PyPI). That library is asyncio-based; its `legacy.QEMUMonitorProtocol`
is a blocking wrapper, which we call from worker threads (`trio.to_thread.run_sync`) so the daemon's
trio tree never hosts an asyncio loop.

The node's VM Endophytes (vm.py) use this module to start and drive QEMU, and replicate the guest in
epochs themselves; `migrate` below (QEMU's own migration) serves the bench. **Postcopy** is its default: the guest converges in precopy for a
bounded time, then switches to postcopy (the target runs and faults the rest in from the source).
Precopy alone is selectable (`mode="precopy"`) but see images/testvm/README.md for what we measured
under TCG. The stream goes to any QEMU migration URI; the daemon gives a local Unix socket that
`ram/bridge.py` carries over the data channel.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import logging

from qemu.qmp import QMPError
from qemu.qmp.legacy import QEMUMonitorProtocol

logging.getLogger("qemu.qmp").setLevel(logging.CRITICAL)  # it logs a traceback for every monitor EOF at quit

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "images" / "testvm" / "build.sh"


class QemuError(RuntimeError):
    """QEMU could not be started, refused a command, or a migration failed; the message says which."""


@dataclass(frozen=True, slots=True)
class GuestImage:
    kernel: Path
    initrd: Path

    @staticmethod
    def test_guest(out_dir: str | None = None) -> "GuestImage":
        """The tiny test guest, built (or taken from the cache) by images/testvm/build.sh."""
        if shutil.which("qemu-system-x86_64") is None:
            raise QemuError("qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)")
        args = [str(BUILD_SCRIPT)] + ([out_dir] if out_dir else [])
        res = subprocess.run(args, capture_output=True, text=True, timeout=600)
        if res.returncode != 0:
            raise QemuError(f"building the test guest failed: {res.stderr.strip()[-400:]}")
        out = Path(res.stdout.strip().splitlines()[-1])
        return GuestImage(out / "vmlinuz", out / "initrd.img")


@dataclass(slots=True)
class GuestConfig:
    memory_mib: int = 128            # guest RAM; small (shared box) but 96 MiB OOMs the Debian kernel at times
    writer_mib: int = 16             # memory the writer keeps rewriting (its integrity domain)
    writer_rate: int = 2000          # pages per second it dirties
    rtc_clock: str = "host"          # -rtc clock= (host | vm | rt)
    icount: str | None = None        # -icount value (TCG only), e.g. "shift=auto"
    accel: str = "tcg"               # tcg (this box: /dev/kvm runs only PVM guests) | kvm
    extra_args: tuple[str, ...] = ()


@dataclass(slots=True)
class QemuVM:
    workdir: Path
    image: GuestImage
    config: GuestConfig = field(default_factory=GuestConfig)
    incoming: str | None = None      # "defer" for a migration target
    hold_after_incoming: bool = False  # -S: stay stopped after an incoming precopy (to inspect RAM)
    probe_port: int = 0              # host port forwarded to the guest's responder (0: pick one)
    proc: subprocess.Popen | None = None
    qmp: QEMUMonitorProtocol | None = None
    env: dict[str, str] = field(default_factory=dict)  # added to QEMU's environment (vm_track's shim)

    @property
    def serial_log(self) -> Path:
        return self.workdir / "serial.log"

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not self.probe_port:
            self.probe_port = free_port()
        qmp_path = self.workdir / "qmp.sock"
        c = self.config
        cmd = ["qemu-system-x86_64", "-name", self.workdir.name, "-m", str(c.memory_mib), "-smp", "1",
               "-accel", c.accel, "-kernel", str(self.image.kernel), "-initrd", str(self.image.initrd),
               "-append", f"console=ttyS0 panic=-1 no_timer_check mw.mib={c.writer_mib} mw.rate={c.writer_rate}",
               "-display", "none", "-serial", f"file:{self.serial_log}", "-no-reboot",
               "-netdev", f"user,id=n0,hostfwd=tcp:127.0.0.1:{self.probe_port}-:7000",
               "-device", "e1000,netdev=n0", "-rtc", f"clock={c.rtc_clock}",
               "-qmp", f"unix:{qmp_path},server=on,wait=off", *c.extra_args]
        if c.icount:
            cmd += ["-icount", c.icount]
        if self.incoming:
            cmd += ["-incoming", self.incoming] + (["-S"] if self.hold_after_incoming else [])
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(self.workdir / "qemu.err", "wb"),
                                     start_new_session=True, env={**os.environ, **self.env})
        deadline = time.monotonic() + 30
        while not qmp_path.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise QemuError(f"QEMU did not start: {(self.workdir / 'qemu.err').read_text()[-400:]}")
            time.sleep(0.05)
        self.qmp = QEMUMonitorProtocol(str(qmp_path))
        self.qmp.connect()

    def cmd(self, name: str, **args):
        if self.qmp is None:
            raise QemuError(f"QMP {name}: not connected")
        try:
            reply = self.qmp.cmd_raw(name, args or None)
        except (OSError, EOFError, QMPError) as exc:
            code = self.proc.poll() if self.proc is not None else None
            raise QemuError(f"QMP {name}: the monitor is gone (QEMU exit status {code}): {exc!r}; "
                            f"console: {self.serial_tail(300)}") from exc
        if "error" in reply:
            raise QemuError(f"QMP {name}: {reply['error'].get('desc')}")
        return reply.get("return")

    def status(self) -> str:
        return self.cmd("query-status")["status"]

    def wait_ready(self, timeout_s: float = 180) -> None:
        """Until the guest's writer answers on the probe port (boot takes ~10-20 s under TCG here)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise QemuError(f"QEMU exited during boot: {self.serial_tail()}")
            if request("127.0.0.1", self.probe_port, b"ping", 1.0):
                return
            time.sleep(0.3)
        raise QemuError(f"the guest did not answer within {timeout_s:.0f} s: {self.serial_tail()}")

    def check(self) -> str:
        """The guest's own integrity check (a full pass over the writer's pages): 'check ok …' or 'check BAD …'."""
        reply = request("127.0.0.1", self.probe_port, b"check", 30.0)
        if reply is None:
            raise QemuError(f"the guest did not answer the integrity check: {self.serial_tail()}")
        return reply

    def panicked(self) -> bool:
        text = self.serial_log.read_text(errors="replace") if self.serial_log.exists() else ""
        return "Kernel panic" in text or "BUG:" in text or "Oops" in text

    def serial_tail(self, n: int = 600) -> str:
        text = self.serial_log.read_text(errors="replace") if self.serial_log.exists() else "(no serial output)"
        return text[-n:]

    def ram_digest(self) -> str:
        """BLAKE2b of guest-physical RAM below 4 GiB (pmemsave), taken while the guest is stopped."""
        dump = self.workdir / f"ram-{time.monotonic_ns()}.bin"
        self.cmd("pmemsave", val=0, size=self.config.memory_mib << 20, filename=str(dump))
        h = hashlib.blake2b(digest_size=16)
        with open(dump, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        dump.unlink()
        return h.hexdigest()

    def close(self) -> None:
        if self.qmp is not None:
            try:
                self.qmp.cmd_raw("quit")
            except (OSError, EOFError, QMPError):  # QEMU may already be gone; it is killed below if not
                pass
            try:
                self.qmp.close()
            except (OSError, EOFError, QMPError):  # the monitor closed under us when QEMU quit: nothing to close
                pass
            self.qmp = None
        if self.proc is not None:
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
            self.proc = None


@dataclass(slots=True)
class MigrationResult:
    mode: str
    status: str
    total_ms: int
    downtime_ms: int | None          # QEMU's own figure
    setup_ms: int | None
    ram_transferred: int
    postcopy: bool                   # the stream really went through postcopy (not a precopy completion)
    info: dict


def migrate(src: QemuVM, dst: QemuVM, uri_out: str, uri_in: str, *, mode: str = "postcopy",
            downtime_limit_ms: int = 300, converge_s: float = 2.0, timeout_s: float = 180,
            before_resume=None) -> MigrationResult:
    """Migrate `src` into `dst` (started with incoming="defer"). `before_resume(src, dst)` runs when the
    stream completed and both are stopped (precopy only: postcopy's target runs before completion)."""
    if mode not in ("precopy", "postcopy"):
        raise QemuError(f"migration mode {mode!r}: expected precopy or postcopy")
    caps = [{"capability": "events", "state": True}, {"capability": "postcopy-ram", "state": mode == "postcopy"}]
    for vm in (src, dst):
        vm.cmd("migrate-set-capabilities", capabilities=caps)
    # QEMU finishes with a precopy completion whenever what is left fits the downtime limit, even after
    # migrate-start-postcopy; that path is the one that corrupts under TCG, so postcopy mode keeps the
    # limit at 1 ms (the switchover itself is short: only device state stops the guest)
    limit = 1 if mode == "postcopy" else downtime_limit_ms
    src.cmd("migrate-set-parameters", **{"downtime-limit": limit})
    dst.cmd("migrate-incoming", uri=uri_in)
    src.cmd("migrate", uri=uri_out)
    started = time.monotonic()
    switched = False
    saw_postcopy = False
    while True:
        info = src.cmd("query-migrate")
        status = info.get("status", "")
        saw_postcopy = saw_postcopy or status.startswith("postcopy")
        if status in ("completed", "failed", "cancelled"):
            break
        if mode == "postcopy" and not switched and status == "active" and time.monotonic() - started > converge_s:
            src.cmd("migrate-start-postcopy")
            switched = True
        if time.monotonic() - started > timeout_s:
            src.cmd("migrate_cancel")
            raise QemuError(f"migration did not finish in {timeout_s:.0f} s (status {status})")
        time.sleep(0.02)
    if status != "completed":
        raise QemuError(f"migration {status}: {info.get('error-desc', '')}")
    deadline = time.monotonic() + 30
    while dst.status() not in ("paused", "running", "postmigrate"):
        if time.monotonic() > deadline:
            raise QemuError(f"the target is in state {dst.status()} after the migration")
        time.sleep(0.02)
    if before_resume is not None and dst.status() == "paused":
        before_resume(src, dst)
    if dst.status() != "running":
        dst.cmd("cont")
    return MigrationResult(mode, status, info.get("total-time", 0), info.get("downtime"),
                           info.get("setup-time"), info.get("ram", {}).get("transferred", 0), saw_postcopy, info)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(host: str, port: int, line: bytes, timeout_s: float) -> str | None:
    """One request to the guest's responder; None if it did not answer (refused, reset, timed out)."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as s:
            s.settimeout(timeout_s)
            s.sendall(line + b"\n")
            data = s.recv(256)
            return data.decode(errors="replace").strip() or None
    except OSError:
        return None
