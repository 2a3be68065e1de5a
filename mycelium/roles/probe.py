"""Measure this device's capability profile with psutil — the only impure module of mycelium.roles.

Every sensor is optional: a machine without a battery, a container without /proc/loadavg, or a state
dir that does not exist yet still yields a profile (with the conservative value stated below), never
an exception. Call it from the daemon's shell (a thread: psutil calls block briefly), then compare
with `changed_enough` before publishing.
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import psutil

from mycelium.roles.profile import MAX_LOAD_MILLI, CapabilityProfile, Reachability

# platform.machine() spellings normalised to one name per architecture
_ARCH_ALIASES = {"amd64": "x86_64", "x64": "x86_64", "arm64": "aarch64", "i686": "x86", "i386": "x86"}


def probe(state_dir: Path | str, reachability: Reachability | str) -> CapabilityProfile:
    """The current profile. `reachability` comes from the mesh ("direct", "relay" or "unknown")."""
    memory = psutil.virtual_memory()
    battery_present, on_battery = _battery()
    return CapabilityProfile(
        cores=psutil.cpu_count(logical=True) or 1,  # None when unknown: assume the minimum
        ram_total_bytes=int(memory.total),
        ram_available_bytes=min(int(memory.available), int(memory.total)),
        disk_free_bytes=_disk_free(Path(state_dir)),
        arch=_arch(),
        battery_present=battery_present,
        on_battery=on_battery,
        uptime_s=max(0, int(time.time() - psutil.boot_time())),
        load_1m_milli=_load_1m_milli(),
        reachability=Reachability(reachability),
    )


def _arch() -> str:
    machine = platform.machine().strip().lower() or "unknown"
    machine = _ARCH_ALIASES.get(machine, machine)
    cleaned = "".join(c if c.isalnum() or c in "_.-" else "_" for c in machine)[:32]
    return cleaned or "unknown"


def _battery() -> tuple[bool, bool]:
    """(battery present, running on it). No sensor support or no battery → (False, False)."""
    sensors_battery = getattr(psutil, "sensors_battery", None)  # absent on some platforms
    if sensors_battery is None:
        return False, False
    try:
        battery = sensors_battery()
    except (OSError, RuntimeError, NotImplementedError, ValueError):
        # broken /sys entries or an unsupported platform: report "no battery" (the common case
        # for servers) rather than failing the whole probe
        return False, False
    if battery is None:
        return False, False
    # power_plugged is None when the OS cannot tell: then assume mains power only if the battery
    # is charging-like (full), else on battery — a laptop that cannot say is not a backbone node
    plugged = battery.power_plugged
    if plugged is None:
        plugged = battery.percent >= 100
    return True, not plugged


def _disk_free(state_dir: Path) -> int:
    """Free bytes for an unprivileged user on the file system that holds (or will hold) state_dir."""
    path = state_dir.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent  # the state dir may not be created yet: measure where it will live
    try:
        return int(psutil.disk_usage(str(path)).free)
    except OSError:
        return 0  # unreadable: claim no space rather than space we cannot prove


def _load_1m_milli() -> int:
    try:
        load_1m = psutil.getloadavg()[0]
    except (OSError, AttributeError):
        try:
            load_1m = os.getloadavg()[0]
        except (OSError, AttributeError):
            return 0  # no load average on this platform: report idle
    return max(0, min(MAX_LOAD_MILLI, round(load_1m * 1000)))
