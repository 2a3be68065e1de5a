"""Each subsystem of a session restarts on its own: one failing loop (catch-up, Latent, liveness …)
is logged, counted and restarted with backoff while the others — running replicas above all — go
on. Only a failure that makes the whole node unusable (`NodeUnusable`: the disk is full, the
database is damaged) leaves the session, so `mycelium status` can say which and what to do.

    await nursery.start(supervise, "catchup", catchup.run, failures)

A subsystem that fails before it has started once is the session's failure (raised as it is): a
node whose catch-up cannot even start should not pretend to be up.
"""

from __future__ import annotations

import errno
import sqlite3
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import trio

from mycelium.observability.logs import structlog
from mycelium.shell.pacing import Backoff

log = structlog.get_logger("mycelium.supervise")

RESTART_FIRST_S = 1.0  # a failed subsystem restarts after this, doubling per failure in a row …
RESTART_MAX_S = 30.0  # … up to this
HEALTHY_AFTER_S = 60.0  # a subsystem that ran this long since its restart has its backoff reset
MAX_ERROR_TEXT = 300  # characters of the last error kept per subsystem (status is small)


class NodeUnusable(Exception):
    """The node cannot go on until its operator acts: `reason` says what, `fix` what to do."""

    def __init__(self, reason: str, fix: str) -> None:
        super().__init__(f"{reason}; {fix}")
        self.reason, self.fix = reason, fix


def unusable(exc: BaseException) -> NodeUnusable | None:
    """The NodeUnusable `exc` amounts to (any exception of a group), or None for an ordinary
    (restartable) failure."""
    if isinstance(exc, BaseExceptionGroup):
        return next((u for e in exc.exceptions if (u := unusable(e)) is not None), None)
    if isinstance(exc, NodeUnusable):
        return exc
    text = str(exc).lower()
    if (isinstance(exc, OSError) and exc.errno == errno.ENOSPC) or "database or disk is full" in text:
        return NodeUnusable("the disk holding the state directory is full",
                            "free space there (the node resumes by itself within a minute), then check `mycelium status`")
    if isinstance(exc, sqlite3.DatabaseError) and ("malformed" in text or "not a database" in text):
        return NodeUnusable(f"the node's database is damaged ({exc})",
                            "stop the node (`mycelium down`), move state.db aside and start it again: "
                            "it re-fetches the chain from peers")
    return None


@dataclass(slots=True)
class SubsystemHealth:
    restarts: int = 0
    last_error: str = ""
    last_failed_at: float = 0.0  # unix time


@dataclass(slots=True)
class Failures:
    """What `mycelium status` and /metrics show of the session's subsystems (bounded: one entry per
    subsystem name, which are fixed in code)."""

    by_name: dict[str, SubsystemHealth] = field(default_factory=dict)
    on_restart: Callable[[str], None] = lambda name: None  # e.g. a metrics counter

    def failed(self, name: str, exc: BaseException) -> None:
        health = self.by_name.setdefault(name, SubsystemHealth())
        health.restarts += 1
        exc = _alone(exc)  # the subsystem's own error, not trio's wrapping
        health.last_error = f"{type(exc).__name__}: {exc}"[:MAX_ERROR_TEXT]
        health.last_failed_at = time.time()
        self.on_restart(name)

    def report(self) -> dict[str, dict[str, Any]]:
        return {name: {"restarts": h.restarts, "last_error": h.last_error, "last_failed_at": h.last_failed_at}
                for name, h in sorted(self.by_name.items())}


async def supervise(name: str, run: Callable[..., Awaitable[None]], failures: Failures, *,
                    task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    """Run `run(task_status=…)` and restart it whenever it raises (after `RESTART_FIRST_S`, doubling
    up to `RESTART_MAX_S`); returns when it returns. `NodeUnusable` (or what amounts to it) and a
    failure before the first start propagate."""
    backoff = Backoff(RESTART_FIRST_S, RESTART_MAX_S)
    started = False
    while True:
        began = trio.current_time()
        try:
            async with trio.open_nursery() as inner:
                await inner.start(run)
                if not started:
                    started = True
                    task_status.started()
            return
        except Exception as exc:
            fatal = unusable(exc)
            if fatal is not None:
                raise fatal from exc
            if not started:
                raise _alone(exc) from None  # as the subsystem raised it, not in trio's group
            if trio.current_time() - began >= HEALTHY_AFTER_S:
                backoff.reset()
            delay = backoff.next()
            failures.failed(name, exc)
            log.exception("subsystem failed; restarting it on its own", subsystem=name, in_s=delay)
            await trio.sleep(delay)


def _alone(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def started(loop: Callable[[], Awaitable[None]]) -> Callable[..., Awaitable[None]]:
    """A plain loop (no task_status) as something `supervise` can start: started at once."""
    async def run(*, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await loop()

    return run
