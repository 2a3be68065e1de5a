"""Share garbage collection on one device (pure): which local shares no volume references any more.

A rewrite leaves the old version's chunks behind, a `rm` its file's chunks, every commit the previous
index's chunks, and a put that failed before its commit the shares it had placed. The repair loop
already reads every volume's root and index each round; it hands this collector the share ids they
reference, and the collector answers which local shares to delete now:

- only from a complete view: if any volume's index could not be read this round, nothing is deleted
  and every clock restarts (a share we cannot see referenced is not known to be garbage);
- only after a share was unreferenced in every complete view for `grace_s` — longer than a put takes
  to commit and than other nodes' Primaries lag, so a put in flight or a reader of the previous index
  never loses a share it needs;
- bounded: at most `max_tracked` candidates are timed at once (the rest wait for room, counted in
  `untracked`) and at most `max_deletes` are deleted per round.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class GcConfig:
    grace_s: float = 3600.0  # unreferenced this long (in every complete view) before it is deleted
    max_tracked: int = 65_536  # candidates timed at once (~4 MiB of table at most)
    max_deletes: int = 512  # deletions per round (one round per inventory interval)


class ShareCollector:
    def __init__(self, cfg: GcConfig = GcConfig()) -> None:
        self.cfg = cfg
        self.since: dict[bytes, float] = {}  # share id → when it was first seen unreferenced
        self.collected = 0  # shares deleted so far
        self.untracked = 0  # candidates not timed because the table was full (last round)
        self.incomplete_rounds = 0  # rounds that saw an unreadable index and collected nothing

    def round(self, local: Iterable[bytes], referenced: set[bytes] | None, now: float) -> list[bytes]:
        """The local shares to delete now (the caller deletes them and calls `deleted`)."""
        if referenced is None:
            self.incomplete_rounds += 1
            self.since.clear()
            return []
        candidates = sorted(s for s in local if s not in referenced)
        keep = set(candidates)
        self.since = {s: t for s, t in self.since.items() if s in keep}  # referenced again, or gone
        self.untracked = 0
        for sid in candidates:
            if sid not in self.since:
                if len(self.since) >= self.cfg.max_tracked:
                    self.untracked += 1
                    continue
                self.since[sid] = now
        due = sorted((t, s) for s, t in self.since.items() if now - t >= self.cfg.grace_s)
        return [s for _, s in due[: self.cfg.max_deletes]]

    def deleted(self, sid: bytes) -> None:
        if self.since.pop(sid, None) is not None:
            self.collected += 1

    def status(self) -> dict:
        return {"candidates": len(self.since), "collected": self.collected, "untracked": self.untracked,
                "incomplete_rounds": self.incomplete_rounds, "grace_s": self.cfg.grace_s}
