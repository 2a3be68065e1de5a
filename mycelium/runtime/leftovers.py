"""No orphans after a daemon crash: a run record per running instance, and the reaper that reads them.

While an instance's process runs, `<state_dir>/<instance>/run.json` holds its pid, process group and
the kernel's start time of that pid. A driver that starts on the same state directory reads every
record and KILLS what is left of those groups (SIGTERM, then SIGKILL after a grace period) before
it accepts work. We kill rather than adopt: an adopted process is not our child (we could not wait
for its exit code or read its output pipe), and the reconciler restarts whatever is still placed here
within one pass, through the normal path with fresh logs and health checks.

A process counts as a leftover only if it is in the recorded group and started no earlier than the
recorded leader (a recycled pid or group id belongs to someone else and is left alone).
"""

from __future__ import annotations

import json
import os
import signal
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil
import trio

RUN_FILE = "run.json"
_START_TIME_SLACK_S = 0.5  # psutil start times are rounded to clock ticks


@dataclass(frozen=True, slots=True)
class RunRecord:
    instance_id: str
    pid: int
    pgid: int
    started_at: float  # psutil create_time() of the leader: seconds since the epoch, per kernel ticks


def write_record(instance_dir: Path, record: RunRecord) -> None:
    tmp = instance_dir / (RUN_FILE + ".tmp")
    tmp.write_text(json.dumps(asdict(record)))
    os.replace(tmp, instance_dir / RUN_FILE)


def remove_record(instance_dir: Path) -> None:
    (instance_dir / RUN_FILE).unlink(missing_ok=True)


def read_records(state_dir: Path) -> tuple[list[tuple[Path, RunRecord]], list[str]]:
    """Every readable record, and a message for each unreadable one (those files are removed)."""
    records, bad = [], []
    for path in sorted(state_dir.glob(f"*/{RUN_FILE}")):
        try:
            raw = json.loads(path.read_text())
            record = RunRecord(str(raw["instance_id"]), int(raw["pid"]), int(raw["pgid"]),
                               float(raw["started_at"]))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            bad.append(f"{path}: unreadable run record ({exc}); removed")
            path.unlink(missing_ok=True)
            continue
        records.append((path.parent, record))
    return records, bad


def start_time(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def group_members(record: RunRecord) -> list[int]:
    """Live (non-zombie) pids in the recorded group that are not older than its leader."""
    members = []
    for proc in psutil.process_iter(["status", "create_time"]):
        try:
            if os.getpgid(proc.pid) != record.pgid or proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
        except (ProcessLookupError, PermissionError):
            continue
        if (proc.info["create_time"] or 0) >= record.started_at - _START_TIME_SLACK_S:
            members.append(proc.pid)
    return members


def signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass  # the whole group is gone already (or was never ours): nothing to signal


async def wait_group_gone(record: RunRecord, timeout_s: float, poll_s: float = 0.01) -> bool:
    """Wait until no live process of the group is left (signals take a moment); True if none is."""
    with trio.move_on_after(timeout_s):
        while group_members(record):
            await trio.sleep(poll_s)
        return True
    return False


def collect_zombie(pid: int) -> None:
    """If `pid` is our own dead child, reap it (only in tests does a 'crashed' driver share our pid)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass  # not our child: init reaps it


async def reap(record: RunRecord, grace_s: float, poll_s: float = 0.05) -> str | None:
    """Kill what is left of a recorded group; a message if something was found, else None."""
    members = group_members(record)
    if not members:
        return None
    signal_group(record.pgid, signal.SIGTERM)
    with trio.move_on_after(grace_s):
        while group_members(record):
            for pid in members:
                collect_zombie(pid)
            await trio.sleep(poll_s)
    forced = bool(group_members(record))
    if forced:
        signal_group(record.pgid, signal.SIGKILL)
        with trio.move_on_after(grace_s):
            while group_members(record):
                await trio.sleep(poll_s)
    for pid in members:
        collect_zombie(pid)
    how = "SIGKILL after SIGTERM was ignored" if forced else "SIGTERM"
    return (f"instance {record.instance_id}: killed {len(members)} leftover process(es) of group "
            f"{record.pgid} from before a restart ({how})")
