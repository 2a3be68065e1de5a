"""The supervisor's decisions, pure: backoff after exits, when to give up and fall back, and what
`mycelium status` shows. The shell (supervisor.py) feeds it events with the time; it never sleeps.

    exit after a run shorter than min_uptime_s  → a quick failure: delay = initial × factor^(n-1), ≤ max
    exit after a longer run                     → the streak resets: delay = initial
    crash_loop_after quick failures in a row    → state crash_loop: fall back to the process runtime
    not ready within ready_timeout_s of a start → state not_ready: fall back, keep it running and probing
    unready_after failed probes in a row once ready → state not_ready (one slow answer is no fallback:
                                                   a fallback moves every replica back to the process runner)
    ready                                       → runtime k3s
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class K3sState(str, Enum):
    NONE = "none"  # this node runs no K3s (hypha, dead, no overlay address, or K3s not enabled)
    MISSING = "missing"  # no k3s binary
    STARTING = "starting"  # spawned, not ready yet, still within the ready timeout
    READY = "ready"
    NOT_READY = "not_ready"  # running but not ready within the timeout
    BACKOFF = "backoff"  # exited; restarting after a delay
    CRASH_LOOP = "crash_loop"  # failing quickly again and again; restarts continue at max backoff
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class SupervisorConfig:
    ready_timeout_s: float = 180.0  # a Pi 4 takes 60-120 s to bring a K3s server up from cold
    probe_interval_s: float = 2.0  # /readyz polling while starting and afterwards
    unready_after: int = 3  # failed probes in a row before a ready K3s counts as not ready (3 × 2 s)
    backoff_initial_s: float = 2.0  # first restart delay
    backoff_factor: float = 2.0
    backoff_max_s: float = 120.0  # restarts never wait longer than this
    min_uptime_s: float = 60.0  # a run shorter than this is a quick failure
    crash_loop_after: int = 3  # quick failures in a row before falling back to the process runtime
    stop_grace_s: float = 30.0  # SIGTERM → SIGKILL (K3s drains its containers' shims)
    log_max_bytes: int = 8 * 2**20  # k3s.log rotated past this; × 3 on disk at most


@dataclass(slots=True)
class Supervision:
    config: SupervisorConfig
    state: K3sState = K3sState.STOPPED
    quick_failures: int = 0
    restarts: int = 0
    started_at: float | None = None
    last_exit: int | None = None
    message: str = ""
    failed_probes: int = 0  # in a row, since the last successful one

    def on_start(self, now: float) -> None:
        self.started_at = now
        self.state = K3sState.CRASH_LOOP if self.quick_failures >= self.config.crash_loop_after else K3sState.STARTING

    def on_ready(self, now: float, ready: bool, detail: str = "") -> None:
        if ready:
            if self.state is not K3sState.READY:
                self.message = "ready"
            self.state, self.failed_probes = K3sState.READY, 0
            return
        self.failed_probes += 1
        if self.state is K3sState.READY:
            if self.failed_probes >= self.config.unready_after:
                self.message = f"was ready, now not ({self.failed_probes} failed probes in a row): {detail}"
                self.state = K3sState.NOT_READY
        elif self.state is K3sState.STARTING and self.started_at is not None \
                and now - self.started_at >= self.config.ready_timeout_s:
            self.state = K3sState.NOT_READY
            self.message = f"not ready {self.config.ready_timeout_s:.0f} s after start ({detail or 'no answer'})"

    def on_exit(self, now: float, code: int) -> float:
        """Record an exit; returns the delay before the next start."""
        uptime = now - (self.started_at if self.started_at is not None else now)
        self.last_exit = code
        if uptime < self.config.min_uptime_s:
            self.quick_failures += 1
        else:
            self.quick_failures = 1
        delay = min(self.config.backoff_max_s,
                    self.config.backoff_initial_s * self.config.backoff_factor ** (self.quick_failures - 1))
        looping = self.quick_failures >= self.config.crash_loop_after
        self.state = K3sState.CRASH_LOOP if looping else K3sState.BACKOFF
        what = f"crash loop: exited {self.quick_failures} times in a row, last with code {code}" if looping \
            else f"exited with code {code} after {uptime:.0f} s"
        self.message = f"{what}; restarting in {delay:.0f} s"
        self.restarts += 1
        return delay

    @property
    def usable(self) -> bool:
        return self.state is K3sState.READY
