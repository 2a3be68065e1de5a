"""The repair planner: which shares to rebuild, where, in what order, at what rate (sans-IO).

Inputs (from the shell): the chunks the volumes reference (`expect`), each device's inventory of the
shares it holds and has scrubbed (`observe_inventory`), the storage devices of the Primary
(`set_devices`), fetch failures (`source_failed`), finished tasks (`task_done`), and `now`.
Output: `plan(now)` → `RepairTask`s, most-degraded chunk first, within a bandwidth budget.

Rules:
- A device counts as a holder while it was seen within `grace_s`: a device that just went silent may
  be rebooting, so its shares are *waiting*, not rebuilt (the Garage/Tahoe practice). After the grace,
  or as soon as the Primary no longer lists it, its shares are *missing*.
- A share a live device no longer lists (its scrub found it corrupt and dropped it) is missing now.
- Priority is the margin healthy − k (smallest first): a chunk one loss away from unreadable is
  repaired before one that merely lost a spare. A chunk with fewer than k healthy shares is *lost*.
- Budget: a token bucket of `bandwidth_bytes_per_s` with a burst of `burst_bytes`; a task costs the
  k shares it reads plus the shares it writes. At most `max_inflight` tasks run at once.
- Every decision is appended to a bounded history that `status` shows.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from mycelium.storage import placement
from mycelium.storage.chunks import ChunkRef


@dataclass(frozen=True, slots=True)
class RepairConfig:
    fresh_s: float = 15.0  # an inventory younger than this counts as the device being up (3 inventory rounds)
    grace_s: float = 60.0  # silence before a device's shares are rebuilt elsewhere; shorter = more churn
    bandwidth_bytes_per_s: int = 32 << 20  # repair traffic cap (reads + writes); the rest is for users
    burst_bytes: int = 64 << 20  # bucket size: a burst may briefly exceed the cap by this much
    max_inflight: int = 4  # concurrent repair tasks
    source_cooldown_s: float = 10.0  # do not read again from a device whose fetch failed for this long
    history: int = 200  # decisions kept for `status`
    max_chunks: int = 1 << 20  # chunks tracked; beyond it `expect` refuses (and counts)


@dataclass(frozen=True, slots=True)
class RepairTask:
    chunk: ChunkRef
    sources: dict[int, str]  # k healthy share indices → device to read each from
    targets: dict[int, str]  # missing share index → device to write the rebuilt share to
    cost_bytes: int
    margin: int  # healthy − k when planned (lower = more urgent)


@dataclass(slots=True)
class Decision:
    at: float
    what: str  # "waiting" | "repair" | "lost" | "done" | "failed" | "throttled"
    chunk: str  # short chunk id
    detail: str

    def to_wire(self) -> dict:
        return {"at": self.at, "what": self.what, "chunk": self.chunk, "detail": self.detail}


@dataclass(slots=True)
class ChunkHealth:
    ref: ChunkRef
    healthy: dict[int, list[str]]  # index → live devices holding a valid copy
    waiting: dict[int, list[str]]  # index → silent (within grace) devices holding it
    missing: list[int]

    @property
    def margin(self) -> int:
        return len(self.healthy) - self.ref.k


def _occupied(h: ChunkHealth) -> set[str]:
    """Devices that may not take another share of this chunk: each index's keeper (the first of its
    healthy holders) and every silent holder. A device whose every share is a second copy of an
    index kept elsewhere adds no redundancy and may take a missing index — so a duplicate left by a
    put's fallback or two racing repairers (index 0 on A and B, 1 on C, 2 missing, 3 devices up) is
    not stuck for ever; losing any set of devices still loses at most one kept index per device."""
    keepers = {sorted(ds)[0] for ds in h.healthy.values()}
    return keepers | {d for ds in h.waiting.values() for d in ds}


@dataclass
class RepairPlanner:
    cfg: RepairConfig = field(default_factory=RepairConfig)
    chunks: dict[bytes, ChunkRef] = field(default_factory=dict)
    devices: set[str] = field(default_factory=set)
    last_seen: dict[str, float] = field(default_factory=dict)
    inventory: dict[str, set[bytes]] = field(default_factory=dict)
    failed_at: dict[str, float] = field(default_factory=dict)
    inflight: dict[bytes, RepairTask] = field(default_factory=dict)
    tokens: float = -1.0
    tokens_at: float | None = None
    done_tasks: int = 0
    done_bytes: int = 0
    failed_tasks: int = 0
    refused_chunks: int = 0
    decisions: deque[Decision] = field(default_factory=deque)
    _share_index: dict[bytes, tuple[bytes, int]] = field(default_factory=dict)

    # -- inputs -----------------------------------------------------------------------------------

    def expect(self, refs: dict[bytes, ChunkRef]) -> None:
        """Replace the set of chunks to keep redundant (the live files of every volume)."""
        if len(refs) > self.cfg.max_chunks:
            self.refused_chunks += len(refs) - self.cfg.max_chunks
            refs = dict(sorted(refs.items())[: self.cfg.max_chunks])
        self.chunks = dict(refs)
        self._share_index = {s: (cid, i) for cid, ref in refs.items() for i, s in enumerate(ref.shares)}
        for cid in [c for c in self.inflight if c not in refs]:
            del self.inflight[cid]

    def set_devices(self, devices: set[str]) -> None:
        self.devices = set(devices)
        for gone in [d for d in self.inventory if d not in self.devices]:
            del self.inventory[gone]
            self.last_seen.pop(gone, None)

    def observe_inventory(self, device: str, share_ids: set[bytes], now: float) -> None:
        """`device` answered with the (scrubbed) share ids it holds."""
        if device not in self.devices:
            return
        self.inventory[device] = set(share_ids)
        self.last_seen[device] = now
        self.failed_at.pop(device, None)

    def source_failed(self, device: str, now: float) -> None:
        self.failed_at[device] = now

    def task_done(self, task: RepairTask, ok: bool, now: float) -> None:
        self.inflight.pop(task.chunk.id, None)
        if ok:
            self.done_tasks += 1
            self.done_bytes += task.cost_bytes
            for index, device in task.targets.items():
                self.inventory.setdefault(device, set()).add(task.chunk.shares[index])
            self._decide(now, "done", task.chunk, f"rebuilt {sorted(task.targets)} on {_short(task.targets.values())}")
        else:
            self.failed_tasks += 1
            self._decide(now, "failed", task.chunk, "will re-plan with other sources")

    # -- analysis ---------------------------------------------------------------------------------

    def _alive(self, device: str, now: float) -> bool:
        """Within the grace period: its shares still count, as healthy or waiting."""
        seen = self.last_seen.get(device)
        return device in self.devices and seen is not None and now - seen <= self.cfg.grace_s

    def is_up(self, device: str, now: float) -> bool:
        """Reported recently and no fetch from it failed: a source and a target for repair."""
        seen = self.last_seen.get(device)
        return self._alive(device, now) and now - seen <= self.cfg.fresh_s and device not in self.failed_at

    def health(self, ref: ChunkRef, now: float) -> ChunkHealth:
        healthy: dict[int, list[str]] = {}
        waiting: dict[int, list[str]] = {}
        for device, held in self.inventory.items():
            if not self._alive(device, now):
                continue
            up = self.is_up(device, now)
            for i, sid in enumerate(ref.shares):
                if sid in held:
                    (healthy if up else waiting).setdefault(i, []).append(device)
        missing = [i for i in range(ref.n) if i not in healthy and i not in waiting]
        return ChunkHealth(ref, healthy, waiting, missing)

    # -- output -----------------------------------------------------------------------------------

    def plan(self, now: float, accept: Callable[[ChunkRef], bool] | None = None) -> list[RepairTask]:
        """Tasks to run now; `accept` keeps only the chunks this node is responsible for."""
        self._refill(now)
        graded = []
        for cid, ref in self.chunks.items():
            if cid in self.inflight:
                continue
            h = self.health(ref, now)
            if h.missing or h.waiting:
                graded.append((h.margin, cid, h))
        graded.sort(key=lambda g: (g[0], g[1]))
        tasks: list[RepairTask] = []
        for margin, cid, h in graded:
            if len(self.inflight) >= self.cfg.max_inflight:
                break
            ref = h.ref
            if accept is not None and not accept(ref):
                continue
            if not h.missing:
                continue  # only silent holders: wait out the grace period
            if margin < 0:
                self._decide(now, "lost", ref, f"{len(h.healthy)} of {ref.k} shares needed are readable")
                continue
            occupied = _occupied(h)
            live = [d for d in self.devices if self.is_up(d, now)]
            targets = placement.repair_targets(ref.id, live, ref.n, occupied, len(h.missing))
            if not targets:
                self._decide(now, "waiting", ref, "no device without a share of this chunk is up")
                continue
            sources = {i: ds[0] for i, ds in sorted(h.healthy.items())[: ref.k]}
            task_targets = dict(zip(h.missing, targets))
            cost = ref.share_bytes * (len(sources) + len(task_targets))
            if cost > self.tokens:
                self._decide(now, "throttled", ref, f"needs {cost} bytes of budget, {int(self.tokens)} left")
                break
            self.tokens -= cost
            task = RepairTask(ref, sources, task_targets, cost, margin)
            self.inflight[cid] = task
            tasks.append(task)
            self._decide(now, "repair", ref, f"margin {margin}: shares {sorted(task_targets)} → {_short(task_targets.values())}")
        return tasks

    def next_wakeup(self, now: float) -> float:
        """When waiting shares cross the grace period or a cooldown ends (the shell sleeps until then)."""
        times = [t + self.cfg.grace_s for t in self.last_seen.values() if t + self.cfg.grace_s > now]
        times += [t + self.cfg.source_cooldown_s for t in self.failed_at.values()]
        return min(times, default=now + self.cfg.grace_s)

    def expire_cooldowns(self, now: float) -> None:
        for d in [d for d, t in self.failed_at.items() if now - t >= self.cfg.source_cooldown_s]:
            del self.failed_at[d]

    def _refill(self, now: float) -> None:
        self.expire_cooldowns(now)
        if self.tokens_at is None or self.tokens < 0:
            self.tokens, self.tokens_at = float(self.cfg.burst_bytes), now
            return
        self.tokens = min(float(self.cfg.burst_bytes), self.tokens + (now - self.tokens_at) * self.cfg.bandwidth_bytes_per_s)
        self.tokens_at = now

    def _decide(self, now: float, what: str, ref: ChunkRef, detail: str) -> None:
        self.decisions.append(Decision(now, what, ref.id.hex()[:12], detail))
        while len(self.decisions) > self.cfg.history:
            self.decisions.popleft()

    # -- status -----------------------------------------------------------------------------------

    def summary(self, now: float, refs: dict[bytes, ChunkRef] | None = None) -> dict:
        """Redundancy of `refs` (default: all expected chunks): counts a `status` command prints."""
        refs = self.chunks if refs is None else refs
        healthy_total = wanted_total = missing = waiting = lost = degraded = 0
        for ref in refs.values():
            h = self.health(ref, now)
            healthy_total += len(h.healthy)
            wanted_total += ref.n
            missing += len(h.missing)
            waiting += len(h.waiting)
            lost += h.margin < 0
            degraded += bool(h.missing or h.waiting)
        return {
            "chunks": len(refs),
            "shares_wanted": wanted_total,
            "shares_healthy": healthy_total,
            "shares_missing": missing,
            "shares_waiting": waiting,
            "chunks_degraded": degraded,
            "chunks_lost": lost,
            "repairs_inflight": len(self.inflight),
            "repairs_done": self.done_tasks,
            "repairs_failed": self.failed_tasks,
            "repair_bytes": self.done_bytes,
        }


def _short(devices) -> str:
    return ",".join(d[-6:] for d in devices)
