"""The supervisor: `python -m mycelium.release.supervise STATE_DIR` (started by the switch, never by hand).

It runs the daemon as its child (same process group, so signals and `kill` reach both; the state
lock names the supervisor's pid) from the venv the switch record says:
    trial        the new release: wait until it writes its health marker (STATE/release/health.json
                 with its version and pid) within health_timeout_s. Healthy → the record says
                 `healthy`, the child goes on. Not healthy (exited, or the time passed) → stop it,
                 `current` back to the previous venv, the record says `rolled_back` with the reason,
                 and the previous version starts again (it reports the rollback to the network).
    healthy / rolled_back   run the venv the record names.
SIGTERM and SIGINT are passed to the child; the supervisor exits with the child's code. A child
that exits with SWITCH_EXIT asks for the next switch: the supervisor execs the supervisor of the
venv it ran (the newest good code) to run that trial. Only the standard library and switch.py are
used, all imported at start: a venv removed later cannot break a running supervisor.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from mycelium.release.switch import (
    SUPERVISED_ENV, SWITCH_EXIT, health_path, layout_root, point_current, read_json, record_path, write_json,
)

POLL_S = 0.2
STOP_GRACE_S = 20.0


def say(event: str, **fields) -> None:
    """One log line in the daemon's format (JSON with a UTC timestamp), into the same daemon.log."""
    stamp = datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")
    print(json.dumps({"event": event, "logger": "mycelium.release.supervise", "level": "info", "timestamp": stamp,
                      **fields}), file=sys.stderr, flush=True)


def spawn(venv: str, args: list[str]) -> subprocess.Popen:
    env = {**os.environ, SUPERVISED_ENV: str(os.getpid())}
    return subprocess.Popen([str(Path(venv) / "bin" / "python"), *args], env=env, stdin=subprocess.DEVNULL)


def trial(child: subprocess.Popen, record: dict, state_dir: Path) -> str | None:
    """None once the child is healthy on the record's version; else why it is not."""
    timeout = float(record.get("health_timeout_s", 120))
    deadline = time.monotonic() + timeout
    while True:
        code = child.poll()
        if code is not None:
            return f"the new version exited with code {code} before its health check passed"
        marker = read_json(health_path(state_dir))
        if marker and marker.get("version") == record["version"] and marker.get("pid") == child.pid:
            return None
        if time.monotonic() > deadline:
            return f"its health check did not pass within {timeout:g} s"
        time.sleep(POLL_S)


def stop(child: subprocess.Popen) -> None:
    if child.poll() is None:
        child.terminate()
        try:
            child.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m mycelium.release.supervise STATE_DIR (started by a release switch)", file=sys.stderr)
        return 2
    state_dir = Path(argv[0])
    record = read_json(record_path(state_dir))
    if record is None:
        print(f"error: no switch record in {record_path(state_dir)}", file=sys.stderr)
        return 2
    child: subprocess.Popen | None = None

    def forward(signum, _frame) -> None:
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    running = record["to_venv"] if record["state"] in ("trial", "healthy") else record["from_venv"]
    if record["state"] == "trial":
        health_path(state_dir).unlink(missing_ok=True)
    child = spawn(running, record["args"])
    if record["state"] == "trial":
        say("release trial", version=record["version"], pid=child.pid, timeout_s=record.get("health_timeout_s"))
        reason = trial(child, record, state_dir)
        if reason is None:
            record["state"] = "healthy"
            write_json(record_path(state_dir), record)
            say("release healthy", version=record["version"])
        else:
            say("release failed its trial: rolling back", version=record["version"], reason=reason,
                back_to=record["from_version"])
            stop(child)
            root = Path(record["root"]) if record.get("root") else layout_root(record["from_venv"])
            if root is not None:
                point_current(root, Path(record["from_venv"]))
            record.update(state="rolled_back", reason=reason)
            write_json(record_path(state_dir), record)
            running = record["from_venv"]
            child = spawn(running, record["args"])
    code = child.wait()
    if code == SWITCH_EXIT:
        nxt = read_json(record_path(state_dir))
        if nxt is not None and nxt.get("state") == "trial":
            python = str(Path(running) / "bin" / "python")
            os.execv(python, [python, "-P", "-m", "mycelium.release.supervise", str(state_dir)])
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
