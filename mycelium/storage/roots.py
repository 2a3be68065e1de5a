"""Where volume roots and leases live: the Primary in a daemon, memory in tests (the interface).

The Primary holds, per volume, its declaration, the writer lease (one node at a time) and the root
(sequence, writer, the index's chunk references). A root moves only by compare-and-set on its
sequence, and only from the lease holder, so two writers can never both commit: the loser gets
`RootConflict` and nothing it wrote becomes visible.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from mycelium.storage.catalog import VolumeRoot


class RootConflict(Exception):
    """The root moved since it was read, or the committer does not hold the volume's lease."""


class RootStore(Protocol):
    async def root(self, volume: str) -> VolumeRoot | None: ...

    async def commit(self, root: VolumeRoot, *, expect_seq: int) -> None: ...

    async def lease_holder(self, volume: str) -> str | None: ...

    async def volumes(self) -> list[str]: ...


@dataclass
class MemoryRoots:
    """A RootStore in one process, with the same rules the Primary applies."""

    roots: dict[str, VolumeRoot] = field(default_factory=dict)
    leases: dict[str, str] = field(default_factory=dict)

    async def root(self, volume: str) -> VolumeRoot | None:
        return self.roots.get(volume)

    async def commit(self, root: VolumeRoot, *, expect_seq: int) -> None:
        check_commit(self.roots.get(root.volume), self.leases.get(root.volume), root, expect_seq)
        self.roots[root.volume] = root

    async def lease_holder(self, volume: str) -> str | None:
        return self.leases.get(volume)

    async def volumes(self) -> list[str]:
        return sorted(set(self.roots) | set(self.leases))


def check_commit(current: VolumeRoot | None, lease: str | None, root: VolumeRoot, expect_seq: int) -> None:
    """The rule for moving a root (pure: the Primary's apply uses it too)."""
    have = current.seq if current else 0
    if have != expect_seq:
        raise RootConflict(f"volume {root.volume!r} is at seq {have}, the commit expected {expect_seq}")
    if root.seq != expect_seq + 1:
        raise RootConflict(f"volume {root.volume!r}: a commit moves seq by one ({expect_seq} → {root.seq})")
    if lease is not None and lease != root.writer:
        raise RootConflict(f"volume {root.volume!r} is leased to {lease}, not {root.writer}")
