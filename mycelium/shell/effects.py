"""The vocabulary every sans-IO protocol core speaks: what it asks its shell (or the simulator) to do.

A core is a plain object with
    on_message(sender: NodeId, message, now: float) -> list[Effect]
    on_tick(now: float) -> list[Effect]
and never touches sockets, clocks or trio. `now` is seconds on the caller's clock (virtual in the
simulator, trio's in the daemon); it is never hashed or signed. Protocol-specific outputs (a decided
Primary, a slashing verdict) are further effect classes defined next to their core; shells and the
simulator hand effects they do not know to the core's owner.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from mycelium.identity import NodeId


@dataclass(frozen=True, slots=True)
class Send:
    """Deliver `message` to one peer (best effort: the network may drop it)."""

    to: NodeId
    message: Any


@dataclass(frozen=True, slots=True)
class Broadcast:
    """Deliver `message` to every peer of this protocol (gossip topic or validator set)."""

    message: Any


@dataclass(frozen=True, slots=True)
class SetTimer:
    """Call `on_tick` no later than `at` (same clock as `now`). A later SetTimer with the same
    name replaces the earlier one."""

    name: str
    at: float


Effect = Any  # Send | Broadcast | SetTimer | a core's own output types


@runtime_checkable
class Core(Protocol):
    def on_message(self, sender: NodeId, message: Any, now: float) -> list[Effect]: ...

    def on_tick(self, now: float) -> list[Effect]: ...
