"""The planned move of a process Endophyte to one of its backups (trio shell over handover.py).

Phase 1 (converge): the target is already a backup; we wait until what it lacks could be copied within
the downtime limit at the throughput the channel shows. Phase 2 (stop-and-copy): the source is frozen,
the final epoch is cut and sent, and once the target acknowledged it the target starts from exactly
that epoch; the source is then killed. Downtime = from the freeze to the target's program holding its
arena. Any failure before the handover thaws the source and it runs on.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio

from mycelium.ram.handover import (AskConsensus, CutFinal, Handover, PauseSource, Phase, PlannedMigration,
                                   ResumeSource, StopSource)
from mycelium.ram.process import ArenaProcess
from mycelium.ram.replicate import PrimaryReplicator


class MigrationFailed(RuntimeError):
    """The move did not happen; the source runs on (the message says why)."""


@dataclass(frozen=True, slots=True)
class MigrationReport:
    target: str
    final_epoch: int
    downtime_s: float
    converge_s: float


async def migrate_process(rep: PrimaryReplicator, source: ArenaProcess, target: str,
                          start_target: Callable[[int], Awaitable[None]], *, downtime_limit_s: float = 0.3,
                          max_converge_s: float = 60.0, poll_s: float = 0.02) -> MigrationReport:
    """Move `source` (replicated by `rep`) to backup `target`; `start_target(generation)` starts the
    program there from that backup's image and returns once it runs. Call with `rep.run` cancelled
    by the caller after this returns (the source is dead by then)."""
    if target not in rep.core.cursors:
        raise MigrationFailed(f"{target} is not a backup of {rep.name}; only a backup can be the target")
    started = trio.current_time()
    m = PlannedMigration(target, rep.core.generation, started, downtime_limit_s=downtime_limit_s,
                         max_converge_s=max_converge_s)
    converged_at = started
    pending: list = []
    while m.phase not in (Phase.DONE, Phase.ABORTED):
        now = trio.current_time()
        if m.phase is Phase.CONVERGING:
            pending += m.on_progress(rep.core.lag(target, now).bytes, max(rep.figures.throughput_Bps, 1.0), now)
        elif m.phase is Phase.STOPPED:
            pending += m.on_target_ack(rep.core.cursors[target].acked, now) + m.on_tick(now)
        while pending:
            effect = pending.pop(0)
            if isinstance(effect, PauseSource):
                converged_at = trio.current_time()
                await trio.to_thread.run_sync(source.hold)
                rep.cutting = False  # the cutter stops; the final cut below is the last
            elif isinstance(effect, CutFinal):
                pending += m.on_final_cut(await rep.cut_now())
            elif isinstance(effect, Handover):
                try:
                    await start_target(effect.generation)
                except Exception as exc:  # noqa: BLE001 — any start failure: the lease goes to consensus
                    pending += [AskConsensus(f"the target failed to start: {exc}")]
                    continue
                pending += m.on_target_resumed(trio.current_time())
            elif isinstance(effect, StopSource):
                await trio.to_thread.run_sync(source.kill)
            elif isinstance(effect, ResumeSource):
                rep.cutting = True
                await trio.to_thread.run_sync(source.release)
                raise MigrationFailed(effect.reason)
            elif isinstance(effect, AskConsensus):
                raise MigrationFailed(f"{effect.reason}; the source stays frozen until consensus decides")
        if m.phase is Phase.ABORTED:
            raise MigrationFailed(m.reason)
        if m.phase is not Phase.DONE:
            await trio.sleep(poll_s)
    assert m.final_epoch is not None and m.downtime_s is not None
    return MigrationReport(target, m.final_epoch, m.downtime_s, converged_at - started)
