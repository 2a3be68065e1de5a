"""Real daemons as subprocesses for multi-process tests: temp state dirs, free ports, driven through
the CLI exactly as a user would, and always cleaned up (no stray processes)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mycelium.testing.deadlines import stretched

CLI = [sys.executable, "-m", "mycelium"]
# Test daemons send nothing beyond loopback: no mDNS multicast onto the machine's LAN.
TEST_ENV = {"MYCELIUM__NODE__MDNS": "false"}


class Daemon:
    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir

    def cli(self, *args: str, timeout: float = 60, env: dict | None = None, input: str | None = None) -> subprocess.CompletedProcess:
        full_env = {**os.environ, **TEST_ENV, **(env or {})}
        full_env.pop("MYCELIUM_STATE_DIR", None)
        full_env.pop("MYCELIUM_JOIN_TOKEN", None) if env is None or "MYCELIUM_JOIN_TOKEN" not in env else None
        return subprocess.run([*CLI, "--state-dir", str(self.state_dir), *args], capture_output=True, text=True,
                              timeout=stretched(timeout), env=full_env, input=input)

    def up(self, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
        return self.cli("up", "--detach", "--listen", "/ip4/127.0.0.1/tcp/0", *args, env=env)

    def api(self, path: str) -> dict:
        """GET a control-API path in-process: what `mycelium <command> --json` prints (those commands
        print the API's answer as it is), without a CLI process per poll — on a loaded two-core box
        ten CLI processes per poll took longer than the state they sample stays still. The CLI
        itself is exercised by every `cli(...)` call."""
        from mycelium.api.client import ControlClient

        return ControlClient(self.state_dir / "control.sock", timeout_s=stretched(10)).get(path)

    def status(self) -> dict:
        from mycelium.api import protocol

        return self.api(protocol.STATUS)

    def spores(self) -> dict:
        from mycelium.api import protocol

        return self.api(protocol.SPORES)

    def pid(self) -> int | None:
        from mycelium.daemon import read_lock_pid

        return read_lock_pid(self.state_dir / "daemon.lock")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        pid = self.pid()
        if pid is not None:
            try:
                os.killpg(pid, sig)  # detached daemons lead their own session/process group
            except ProcessLookupError:
                pass
            wait_until(lambda: self.pid() is None, timeout=10, what=f"pid {pid} to exit after signal {sig}")

    def hash_at(self, height: int) -> bytes | None:
        """The hash of this node's stored Primary at `height` (read-only look at its database)."""
        import sqlite3

        conn = sqlite3.connect(f"file:{self.state_dir / 'state.db'}?mode=ro", uri=True, timeout=5)
        try:
            row = conn.execute("SELECT hash FROM primaries WHERE height = ?", (height,)).fetchone()
        finally:
            conn.close()
        return None if row is None else bytes(row[0])

    def log(self) -> str:
        p = self.state_dir / "daemon.log"
        return p.read_text(errors="replace") if p.exists() else ""


def wait_until(predicate, *, timeout: float = 20, interval: float = 0.05, what: str = "condition"):
    """Poll until `predicate()` is truthy and return it; `timeout` is a quiet box's deadline, stretched
    by mycelium.testing.deadlines (a hang detector, not a budget)."""
    timeout = stretched(timeout)
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


STALL_CAP = 5  # wait_moving gives up after this many stall periods in total, moving or not


def wait_moving(observe, done, *, stall_s: float, what: str, interval: float = 0.5):  # type: ignore[no-untyped-def]
    """Poll `observe()` until `done(value)`; fail only when the observed value did not change for
    `stall_s` (the nodes are stuck, not slow), or after STALL_CAP × stall_s in all (both stretched by
    mycelium.testing.deadlines)."""
    stall_s = stretched(stall_s)
    started = changed_at = time.monotonic()
    last = None
    while True:
        value = observe()
        if value and done(value):
            return value
        now = time.monotonic()
        if value != last:
            last, changed_at = value, now
        if now - changed_at > stall_s:
            raise AssertionError(f"no progress for {stall_s:g} s waiting for {what} (last seen: {last})")
        if now - started > STALL_CAP * stall_s:
            raise AssertionError(f"timed out after {STALL_CAP * stall_s:g} s waiting for {what} (last: {last})")
        time.sleep(interval)


class DaemonFactory:
    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="myc-", dir="/tmp"))  # short: Unix socket paths are ≤ 108 bytes
        self.daemons: list[Daemon] = []

    def new(self, name: str | None = None) -> Daemon:
        d = Daemon(self.root / (name or f"n{len(self.daemons)}"))
        self.daemons.append(d)
        return d

    def cleanup(self) -> None:
        for d in self.daemons:
            try:
                d.kill(signal.SIGKILL)
            except AssertionError:
                pass  # reported below by the stray-process check
        shutil.rmtree(self.root, ignore_errors=True)


def agree_at_common_height(nodes: list[Daemon]) -> int | None:
    """The highest height every node holds, if they all hold the same Primary there (else None).
    Heads move while we poll them one by one; comparing one fixed height is the real check."""
    height = min(d.status()["epoch"] for d in nodes)
    hashes = {d.hash_at(height) for d in nodes}
    return height if len(hashes) == 1 and None not in hashes else None
