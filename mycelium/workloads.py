"""Runs on this node what the Primary places on it (Endomycetes on the embedded process runtime).

Interface used by the daemon and the control API (see mycelium/api/routes.py):
    WorkloadRunner(session)               built per network session
    await nursery.start(runner.run)       reconcile until cancelled; stop everything on the way out
    runner.services() -> list[dict]       rows for `mycelium services --json` (see api/dto.py)
    await runner.logs(name, lines)        recent output lines of this node's replica
    runner.resolve(name) -> list[str]     endpoints ("host:port") where the service answers

This first version reports what the Primary decides (desired replicas and placement) and does not
start anything yet; the reconciler that drives mycelium.runtime.process comes next.
"""

from __future__ import annotations

from typing import Any

import trio


class WorkloadRunner:
    def __init__(self, session: Any) -> None:
        self.session = session

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await trio.sleep_forever()

    def services(self) -> list[dict]:
        head = self.session.ledger.head
        if head is None:
            return []
        rows = []
        for name, spec in sorted(head.services.items()):
            placed = head.placements.get(name, [])
            rows.append({"name": name, "desired": len(placed), "running": 0,
                         "placement": {n: "placed" for n in placed}, "endpoints": [], "health": "unknown"})
        return rows

    async def logs(self, name: str, lines: int) -> list[str]:
        return []

    def resolve(self, name: str) -> list[str]:
        return []
