"""Starting and stopping the daemon from the CLI: foreground, detached (own session, logging to the
state dir, returning once /ready answers) and a clean stop that waits for the state lock to free."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from mycelium.api import protocol
from mycelium.api.client import ClientError, ControlClient, DaemonNotRunning
from mycelium.config import Config

POLL_S = 0.05
SIGNAL_AFTER_S = 3.0  # `down`: wait this long for a daemon whose answer was lost before sending SIGTERM


def run_foreground(cfg: Config, join_token: str | None, ui_listen: str | None = None) -> int:
    import trio

    from mycelium.daemon import Node, StartupError
    from mycelium.observability.logs import configure_logging
    from mycelium.storage.db import StorageError

    configure_logging(cfg.log.level, json=cfg.log.json)
    node = Node(cfg, join_token=join_token)
    node.ui_listen = ui_listen  # `up --ui`: the daemon serves the page at once and prints its URL
    try:
        node.prepare()
    except (StartupError, StorageError) as exc:
        node.close()
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        trio.run(node.run)
    except KeyboardInterrupt:  # a second Ctrl-C while shutting down: state is already committed
        return 130
    from mycelium.release.switch import after_daemon_exit

    return after_daemon_exit(node, 0)  # a release switch: becomes the supervisor (exec), or asks it


def detached_command(cfg: Config, up_args: list[str]) -> list[str]:
    return [sys.executable, "-m", "mycelium", "--state-dir", str(cfg.state_dir), "up", *up_args]


def start_detached(cfg: Config, up_args: list[str], join_token: str | None, ready_timeout_s: float) -> tuple[int, str]:
    """Start the daemon in its own session; (exit code, message)."""
    from mycelium.state_lock import read_lock_pid

    pid = read_lock_pid(cfg.lock_path)
    if pid is not None:
        return 2, (f"a daemon (pid {pid}) is already running on {cfg.state_dir}; "
                   f"`mycelium --state-dir {cfg.state_dir} status` shows it, `… down` stops it")
    cfg.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    env = dict(os.environ)
    env.pop("MYCELIUM_JOIN_TOKEN", None)
    if join_token:
        env["MYCELIUM_JOIN_TOKEN"] = join_token  # not on the command line, where `ps` would show the secret
    log_fd = os.open(cfg.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    start_offset = os.lseek(log_fd, 0, os.SEEK_END)
    try:
        proc = subprocess.Popen(detached_command(cfg, up_args), stdin=subprocess.DEVNULL, stdout=log_fd,
                                stderr=subprocess.STDOUT, start_new_session=True, env=env, close_fds=True)
    finally:
        os.close(log_fd)
    client = ControlClient(cfg.socket_path, timeout_s=2)
    deadline = time.monotonic() + ready_timeout_s
    while time.monotonic() < deadline:
        code = proc.poll()
        if code is not None:
            return 2, f"the daemon exited during startup (code {code}):\n{_log_tail(cfg.log_path, start_offset)}"
        try:
            client.get(protocol.READY)
            return 0, f"mycelium started (pid {proc.pid}); logs: {cfg.log_path}"
        except ClientError:
            time.sleep(POLL_S)
    return 4, (f"the daemon (pid {proc.pid}) did not become ready within {ready_timeout_s:.0f} s; "
               f"see {cfg.log_path}, or wait and run `mycelium status`")


def _wait_unlocked(lock: Path, timeout_s: float) -> bool:
    from mycelium.state_lock import read_lock_pid

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if read_lock_pid(lock) is None:
            return True
        time.sleep(POLL_S)
    return False


def _log_tail(path: Path, offset: int, lines: int = 15) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.strip().splitlines()[-lines:])


def stop_daemon(client: ControlClient, state_dir: Path, timeout_s: float) -> tuple[int, str]:
    from mycelium.state_lock import read_lock_pid

    lock = state_dir / "daemon.lock"
    pid = read_lock_pid(lock)
    try:
        client.post(protocol.SHUTDOWN)
    except DaemonNotRunning:
        if pid is None:
            return 0, f"no daemon is running on {state_dir} (nothing to stop)"
        os.kill(pid, signal.SIGTERM)  # holds the lock but has no socket (still starting, or socket removed)
    except ClientError:
        if pid is None:
            return 4, f"cannot reach the daemon on {state_dir} and no process holds its lock"
        # it may have got the request and be stopping already: give it a moment before signalling
        if not _wait_unlocked(lock, SIGNAL_AFTER_S):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if read_lock_pid(lock) is None:
            return 0, "mycelium stopped"
        time.sleep(POLL_S)
    return 4, f"the daemon (pid {pid}) did not stop within {timeout_s:.0f} s; force it with `kill -9 {pid}`"
