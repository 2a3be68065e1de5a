"""Real daemons for benchmarks: started with the CLI exactly as a user would (`up --detach` on
loopback), observed through the control API directly (no CLI start-up per poll), and always
stopped — every daemon leads its own process group, which is killed on exit.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from mycelium.api import protocol
from mycelium.api.client import ControlClient
from mycelium.daemon import read_lock_pid  # (re-exported there; keeps the bench runnable on older commits)

LISTEN = "/ip4/127.0.0.1/tcp/0"
# A height at least every second (faster joins), and no mDNS: on one machine every daemon would find
# every other one — also those still on their personal networks, whose failed membership proofs get
# them blocked for 30 s by the network they are about to join (and other people's test daemons).
HEARTBEAT_ENV = {"MYCELIUM__NODE__HEARTBEAT_S": "1", "MYCELIUM__NODE__MDNS": "false"}
NO_MDNS_ENV = {"MYCELIUM__NODE__MDNS": "false"}


class BenchDaemon:
    def __init__(self, state_dir: Path, env: dict[str, str]) -> None:
        self.state_dir = state_dir
        self.env = env
        self.client = ControlClient(state_dir / "control.sock", timeout_s=10)

    def cli(self, *args: str, timeout_s: float = 60, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        env = {**os.environ, **self.env, **(extra_env or {})}
        env.pop("MYCELIUM_STATE_DIR", None)
        if not extra_env or "MYCELIUM_JOIN_TOKEN" not in extra_env:
            env.pop("MYCELIUM_JOIN_TOKEN", None)
        return subprocess.run([sys.executable, "-m", "mycelium", "--state-dir", str(self.state_dir), *args],
                              capture_output=True, text=True, timeout=timeout_s, env=env)

    def up(self, *args: str) -> subprocess.CompletedProcess:
        res = self.cli("up", "--detach", "--listen", LISTEN, *args)
        if res.returncode != 0:
            raise RuntimeError(f"`mycelium up` failed ({res.returncode}) in {self.state_dir}: {res.stderr}\n{self.log_tail()}")
        return res

    def status(self) -> dict[str, Any]:
        return self.client.get(protocol.STATUS)

    def pid(self) -> int | None:
        return read_lock_pid(self.state_dir / "daemon.lock")

    def stop(self) -> None:
        """SIGTERM the daemon's process group, SIGKILL what is left after 10 s."""
        pid = self.pid()
        if pid is None:
            return
        for sig, grace_s in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(pid, sig)
            except ProcessLookupError:
                return
            deadline = time.monotonic() + grace_s
            while time.monotonic() < deadline:
                if not _alive(pid):
                    return
                time.sleep(0.05)

    def log_tail(self, lines: int = 20) -> str:
        p = self.state_dir / "daemon.log"
        return "\n".join(p.read_text(errors="replace").splitlines()[-lines:]) if p.exists() else ""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (our own child not reaped yet) counts as gone
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


class Cluster:
    """Daemons under one temp root (short path: Unix socket paths are ≤ 108 bytes)."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        self.env = dict(HEARTBEAT_ENV if env is None else env)
        self.root = Path(tempfile.mkdtemp(prefix="mb-"))
        self.daemons: list[BenchDaemon] = []

    def new(self) -> BenchDaemon:
        d = BenchDaemon(self.root / f"n{len(self.daemons)}", self.env)
        self.daemons.append(d)
        return d

    def close(self) -> None:
        for d in self.daemons:
            d.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def wait_for(predicate: Callable[[], Any], *, timeout_s: float, interval_s: float = 0.02, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            value = predicate()
        except Exception:  # a daemon still starting or briefly busy: poll again
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(interval_s)
