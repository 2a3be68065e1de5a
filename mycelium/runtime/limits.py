"""Resource limits for a process instance: cgroup v2 where writable, otherwise rlimits (and we say so).

cgroup v2 (unified hierarchy at `cgroup_root`, i.e. `cgroup.controllers` exists there): one cgroup per
instance under `<root>/mycelium/<instance>` with
    memory.max = memory_bytes
    cpu.max    = "<millicores × 100> 100000"   (quota µs per 100 ms period: 1000m = one full core)
and the child moves itself into it before exec. Anywhere else (cgroup v1, no permission, containers),
the child sets RLIMIT_AS = memory_bytes (address space, a rough upper bound: generous for memory-mapped
files, strict for programs that reserve a lot) and a nice level for small cpu requests; CPU time is
then not enforced, and `LimitPlan.note` says exactly that in the instance status.
"""

from __future__ import annotations

import os
import resource
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mycelium.runtime.spec import Resources

NICE_BELOW_ONE_CORE = 10  # nice level for requests under 1000m when only rlimits are available


@dataclass(frozen=True, slots=True)
class LimitPlan:
    note: str  # shown in InstanceStatus.limits
    preexec: Callable[[], None]  # runs in the child between fork and exec
    cgroup: Path | None = None  # to remove after the instance is gone


def plan_limits(instance_id: str, res: Resources, cgroup_root: Path) -> LimitPlan:
    reason = f"no cgroup v2 at {cgroup_root}"
    if (cgroup_root / "cgroup.controllers").exists():
        try:
            return _cgroup_plan(instance_id, res, cgroup_root)
        except OSError as exc:
            reason = f"cgroup v2 at {cgroup_root} is not writable ({exc.strerror})"
    return _rlimit_plan(res, reason)


def _cgroup_plan(instance_id: str, res: Resources, root: Path) -> LimitPlan:
    parent = root / "mycelium"
    parent.mkdir(exist_ok=True)
    try:
        (parent / "cgroup.subtree_control").write_text("+memory +cpu")
    except OSError:
        pass  # controllers may already be enabled, or delegated differently; the writes below tell
    group = parent / instance_id
    group.mkdir(exist_ok=True)
    settings = []
    if res.memory_bytes:
        (group / "memory.max").write_text(str(res.memory_bytes))
        settings.append(f"memory.max={res.memory_bytes}")
    if res.cpu_millicores:
        (group / "cpu.max").write_text(f"{res.cpu_millicores * 100} 100000")
        settings.append(f"cpu.max={res.cpu_millicores}m")
    procs = str(group / "cgroup.procs")

    def enter() -> None:
        with open(procs, "w") as f:
            f.write(str(os.getpid()))

    return LimitPlan(f"cgroup v2 {group}: {', '.join(settings) or 'no limits requested'}", enter, group)


def _rlimit_plan(res: Resources, reason: str) -> LimitPlan:
    memory = res.memory_bytes
    nice = NICE_BELOW_ONE_CORE if 0 < res.cpu_millicores < 1000 else 0

    def apply() -> None:
        if memory:
            resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        if nice:
            os.nice(nice)

    parts = [f"RLIMIT_AS={memory} bytes" if memory else "no memory limit"]
    if nice:
        parts.append(f"nice +{nice}")
    return LimitPlan(f"rlimit only ({reason}): {', '.join(parts)}; CPU time not enforced", apply)


def remove_cgroup(plan: LimitPlan) -> None:
    if plan.cgroup is not None:
        try:
            plan.cgroup.rmdir()
        except OSError:
            pass  # still has a process in it (it is being killed) or already gone: harmless, reused
