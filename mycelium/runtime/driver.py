"""The one interface every workload driver (process, k3s, qemu) implements, and its vocabulary.

A driver runs *instances* — one replica of one service on this node — and supervises them itself:
restart policy with backoff, health checks, logs. The reconciler only asks it to start and stop
instances and reads their status. Every driver must pass `mycelium.runtime.conformance.check_driver`.

    async with ProcessDriver.open(state_dir) as driver:
        handle = await driver.start(InstanceSpec("web-0", spec))
        status = await driver.status(handle)        # InstanceStatus(state=InstanceState.RUNNING, …)
        async for line in driver.logs(handle, follow=True): ...
        await driver.stop(handle, grace_s=5)        # SIGTERM, then SIGKILL after 5 s
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol, runtime_checkable

from mycelium.runtime.spec import ServiceSpec

INSTANCE_ID = re.compile(r"[a-z0-9]([a-z0-9.-]{0,126}[a-z0-9])?")  # also a safe directory name


class InstanceState(Enum):
    STARTING = "starting"  # spawned, health check not yet passed
    RUNNING = "running"  # spawned, no health check declared
    HEALTHY = "healthy"  # health check passed successThreshold times in a row
    UNHEALTHY = "unhealthy"  # health check failed failureThreshold times in a row
    EXITED = "exited"  # not running: stopped, finished, or waiting to restart (see message)
    CRASH_LOOP = "crash_loop"  # failing quickly again and again; restarts continue with max backoff

    @property
    def available(self) -> bool:
        """Serving traffic as far as we can tell (counts towards a rolling update's budget)."""
        return self in (InstanceState.RUNNING, InstanceState.HEALTHY)


@dataclass(frozen=True, slots=True)
class InstanceSpec:
    instance_id: str  # unique on this node; lowercase letters, digits, '.', '-' (a directory name)
    service: ServiceSpec

    def __post_init__(self) -> None:
        if not INSTANCE_ID.fullmatch(self.instance_id):
            raise ValueError(f"instance id {self.instance_id!r} must be 1-128 lowercase letters, digits, "
                             "'.' or '-', starting and ending with a letter or digit")


@dataclass(frozen=True, slots=True)
class InstanceHandle:
    driver: str  # the driver's name ("process", "k3s", …)
    instance_id: str


@dataclass(frozen=True, slots=True)
class InstanceStatus:
    instance_id: str
    state: InstanceState
    version: str = ""  # ServiceSpec.version() of what runs
    restarts: int = 0  # starts after the first one
    exit_code: int | None = None  # last exit; negative = killed by that signal
    pid: int | None = None  # main process while running
    ports: Mapping[str, int] = field(default_factory=dict, hash=False)  # port name -> actual port
    limits: str = ""  # how resources are enforced here, e.g. "cgroup v2" or "rlimit only: …"
    message: str = ""  # the last notable event, for humans ("exited with code 1; restart in 2 s")
    final: bool = False  # the driver no longer supervises it (exited under its policy, or stopped)


class DriverError(Exception):
    """A driver could not do what was asked; the message says why and what to do."""


class PortInUse(DriverError):
    """A fixed port of the service is already taken on this machine."""


class UnknownInstance(DriverError):
    """No instance with that handle on this driver."""


@runtime_checkable
class Driver(Protocol):
    name: str

    async def start(self, spec: InstanceSpec) -> InstanceHandle:
        """Start an instance and supervise it; returns once it is spawned (not necessarily healthy).
        Raises PortInUse for a taken fixed port, DriverError if the id is already running."""
        ...

    async def stop(self, handle: InstanceHandle, grace_s: float = 10.0) -> InstanceStatus:
        """Stop for good: ask politely (SIGTERM or equivalent), force after `grace_s`; returns the
        final status. The instance is then forgotten (status raises UnknownInstance)."""
        ...

    async def status(self, handle: InstanceHandle) -> InstanceStatus:
        ...

    def logs(self, handle: InstanceHandle, *, follow: bool = False) -> AsyncIterator[bytes]:
        """The instance's output lines (stdout and stderr interleaved), oldest first; with `follow`,
        keep yielding new lines until the instance is stopped or the caller stops iterating."""
        ...

    async def instances(self) -> list[InstanceHandle]:
        """Every instance this driver currently supervises (running or waiting to restart)."""
        ...
