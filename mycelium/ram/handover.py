"""Who is primary: the lease, failover, and the two-phase planned migration (pure).

A **lease** names an Endophyte's primary and backups under a **generation**. Only the node the current
lease names may run the workload; every replication message carries the generation, so a deposed
primary is fenced the moment it hears from a backup of a newer one (epochs.py).

**Failover** (`decide_failover`) is the deterministic rule every validator applies when the ledger
declares the primary dead: among the live backups that reported their committed epoch, the one with
the newest epoch (ties: the smallest node id) becomes primary under generation + 1 and resumes exactly
that epoch — the last one any backup acknowledged. It runs inside the ledger's apply, so all validators
agree and at most one lease exists per generation.

A **planned migration** (`PlannedMigration`) is two-phase: *converge* — the target is a backup, and the
move waits until what it lacks could be copied within the downtime limit (QEMU's rule: remaining bytes /
bandwidth <= downtime limit); then *stop-and-copy* — the source pauses, the final epoch is cut and sent,
and only once the target acknowledged it is the target told to resume (`Handover`). Before the Handover
the source may resume (abort); after it, never: if the target then goes silent the lease is settled by
consensus, never by the source resuming on its own. So at no moment do both run.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

FULL = -1


@dataclass(frozen=True, slots=True)
class Lease:
    name: str
    generation: int
    primary: str
    backups: tuple[str, ...]
    resumed_epoch: int = FULL     # the epoch the primary resumed from (FULL: started fresh)


def decide_failover(lease: Lease, reports: dict[str, int], live: set[str]) -> Lease | None:
    """The successor lease when `lease.primary` is dead, or None if no live backup has a committed epoch.

    `reports` maps a backup to the newest epoch it committed (as it reported it, signed, to the ledger)."""
    candidates = [(epoch, node) for node, epoch in reports.items()
                  if node in lease.backups and node in live and node != lease.primary and epoch != FULL]
    if not candidates:
        return None
    best_epoch = max(e for e, _ in candidates)
    successor = min(n for e, n in candidates if e == best_epoch)
    rest = tuple(sorted(n for n in lease.backups if n != successor and n in live))
    return Lease(lease.name, lease.generation + 1, successor, rest, best_epoch)


class Phase(enum.Enum):
    CONVERGING = "converging"     # source runs, target catches up as a backup
    STOPPED = "stopped"           # source paused, final epoch on its way
    HANDED_OVER = "handed-over"   # target told to resume; source must never run again
    DONE = "done"                 # target runs; figures final
    ABORTED = "aborted"           # source runs again (only ever from CONVERGING or STOPPED)


@dataclass(frozen=True, slots=True)
class PauseSource:
    pass


@dataclass(frozen=True, slots=True)
class CutFinal:
    pass


@dataclass(frozen=True, slots=True)
class Handover:
    target: str
    generation: int
    epoch: int


@dataclass(frozen=True, slots=True)
class ResumeSource:
    reason: str


@dataclass(frozen=True, slots=True)
class StopSource:
    pass


@dataclass(frozen=True, slots=True)
class AskConsensus:
    reason: str                   # the lease is settled by the ledger (the target may or may not run)


MigrationEffect = PauseSource | CutFinal | Handover | ResumeSource | StopSource | AskConsensus


@dataclass(slots=True)
class PlannedMigration:
    target: str
    generation: int                       # the lease's generation now; the target gets generation + 1
    started_at: float
    downtime_limit_s: float = 0.3         # QEMU's default downtime-limit (300 ms)
    max_converge_s: float = 120.0         # give up (abort, source keeps running) past this
    stop_timeout_s: float = 10.0          # the final epoch must be acknowledged within this
    phase: Phase = Phase.CONVERGING
    final_epoch: int | None = None
    paused_at: float | None = None
    handed_at: float | None = None
    downtime_s: float | None = None
    reason: str = ""
    log: list[str] = field(default_factory=list)

    def on_progress(self, lag_bytes: int, carried_Bps: float, now: float) -> list[MigrationEffect]:
        """Converge: the target's lag and the channel's throughput, sampled by the shell."""
        if self.phase is not Phase.CONVERGING:
            return []
        if carried_Bps > 0 and lag_bytes / carried_Bps <= self.downtime_limit_s:
            self.phase, self.paused_at = Phase.STOPPED, now
            return [PauseSource(), CutFinal()]
        if now - self.started_at > self.max_converge_s:
            return self._abort(f"did not converge in {self.max_converge_s:.0f} s "
                               f"({lag_bytes} bytes behind at {carried_Bps:.0f} B/s)")
        return []

    def on_final_cut(self, epoch: int) -> list[MigrationEffect]:
        if self.phase is Phase.STOPPED and self.final_epoch is None:
            self.final_epoch = epoch
        return []

    def on_target_ack(self, epoch: int, now: float) -> list[MigrationEffect]:
        if self.phase is Phase.STOPPED and self.final_epoch is not None and epoch >= self.final_epoch:
            self.phase, self.handed_at = Phase.HANDED_OVER, now
            return [Handover(self.target, self.generation + 1, self.final_epoch)]
        return []

    def on_target_resumed(self, now: float) -> list[MigrationEffect]:
        if self.phase is not Phase.HANDED_OVER:
            return []
        self.phase = Phase.DONE
        self.downtime_s = now - (self.paused_at if self.paused_at is not None else now)
        return [StopSource()]

    def on_target_failed(self, now: float) -> list[MigrationEffect]:
        if self.phase in (Phase.CONVERGING, Phase.STOPPED):
            return self._abort("the target failed before the handover")
        if self.phase is Phase.HANDED_OVER:
            return [AskConsensus("the target went silent after the handover; it may be running")]
        return []

    def on_tick(self, now: float) -> list[MigrationEffect]:
        if self.phase is Phase.STOPPED and self.paused_at is not None and now - self.paused_at > self.stop_timeout_s:
            return self._abort(f"the final epoch was not acknowledged within {self.stop_timeout_s:.0f} s")
        if self.phase is Phase.HANDED_OVER and self.handed_at is not None and now - self.handed_at > self.stop_timeout_s:
            return [AskConsensus("the target did not confirm it resumed")]
        if self.phase is Phase.CONVERGING and now - self.started_at > self.max_converge_s:
            return self._abort(f"did not converge in {self.max_converge_s:.0f} s")
        return []

    def _abort(self, reason: str) -> list[MigrationEffect]:
        was_paused = self.phase is Phase.STOPPED
        self.phase, self.reason = Phase.ABORTED, reason
        return [ResumeSource(reason)] if was_paused else []
