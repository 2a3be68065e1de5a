"""Read-only mode for the minority side of a split brain. Pure: `now` is passed in, nothing is read.

A node that cannot reach a quorum of the current validators for longer than `enter_after_s` enters
read-only mode: it keeps running its workloads but refuses deploys and role changes, because whatever
it decided could be contradicted by the majority side. It leaves by itself once a quorum is reachable
again *and* it has caught up with the Primary chain (until then its view of the network is stale).

The shell feeds `observe(now, reachable, caught_up)` whenever connectivity or the chain changes and
at the `deadline()` it is given, and calls `check_writable(action)` before accepting a write.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

from mycelium.config import READ_ONLY_AFTER_S
from mycelium.identity import NodeId
from mycelium.spores.certificate import quorum_size


@dataclass(frozen=True, slots=True)
class ReadOnlyConfig:
    # How long without a reachable quorum before refusing writes. Shorter refuses sooner in a real
    # partition; longer rides out flaky links and validator restarts without false alarms.
    enter_after_s: float = float(READ_ONLY_AFTER_S)

    def __post_init__(self) -> None:
        value = self.enter_after_s
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
            raise ValueError(f"enter_after_s must be a finite number ≥ 0, got {self.enter_after_s!r}")


DEFAULT_READ_ONLY = ReadOnlyConfig()


@dataclass(frozen=True, slots=True)
class ReadOnlyStatus:
    read_only: bool
    reason: str  # one line for `mycelium status`
    since: float | None  # when read-only mode began (the caller's clock); None while writable
    reachable: int  # validators reachable at the last observation (this node included if one)
    needed: int  # quorum size of the current validator set (0 when no set is known)
    validators: int  # size of the current validator set


class ReadOnlyMode(Exception):
    """A write was refused because this node is in read-only mode; the message says why and what to do."""


class QuorumWatch:
    """Decides read-only mode from which validators this node can reach."""

    def __init__(
        self,
        validators: Iterable[NodeId],
        now: float,
        *,
        self_id: NodeId | None = None,
        config: ReadOnlyConfig = DEFAULT_READ_ONLY,
    ) -> None:
        self.config = config
        self._self_id = self_id  # a validator always reaches itself
        self._validators = frozenset(validators)
        self._last_quorum = now  # start with a full grace period: the mesh needs time to connect
        self._since: float | None = None
        self._reachable = 0
        self._status = self.observe(now, (), caught_up=True)

    @property
    def validators(self) -> frozenset[NodeId]:
        return self._validators

    @property
    def status(self) -> ReadOnlyStatus:
        return self._status

    @property
    def read_only(self) -> bool:
        return self._since is not None

    def set_validators(self, validators: Iterable[NodeId]) -> None:
        """A new Primary changed the validator set. The quorum clock keeps running: learning of a new
        set says nothing about reaching it. Call `observe` next."""
        self._validators = frozenset(validators)

    def observe(self, now: float, reachable: Iterable[NodeId], caught_up: bool) -> ReadOnlyStatus:
        """Record which validators are reachable right now and whether this node has caught up with the
        Primary chain; returns the (possibly changed) status."""
        reach = set(reachable) & self._validators
        if self._self_id is not None and self._self_id in self._validators:
            reach.add(self._self_id)
        self._reachable = len(reach)
        quorum_now = self._has_quorum()
        if quorum_now:
            self._last_quorum = max(self._last_quorum, now)
            if self._since is not None and caught_up:
                self._since = None
        elif self._since is None and now - self._last_quorum > self.config.enter_after_s:
            self._since = now
        self._status = self._describe(now, quorum_now=quorum_now, caught_up=caught_up)
        return self._status

    def deadline(self) -> float | None:
        """When read-only mode starts if no quorum is seen before (for a SetTimer); None once read-only."""
        if self._since is not None:
            return None
        return self._last_quorum + self.config.enter_after_s

    def check_writable(self, action: str) -> None:
        """Raise ReadOnlyMode (with a message for the user) if `action` must be refused now."""
        if self._since is not None:
            raise ReadOnlyMode(
                f"cannot {action}: this node is in read-only mode ({self._status.reason}). It keeps running "
                "its workloads and leaves read-only mode by itself once it reaches a quorum of validators and "
                "catches up; check connectivity with `mycelium status`, or retry from a node on the majority side"
            )

    # ------------------------------------------------------------------------------------------

    def _needed(self) -> int:
        return quorum_size(len(self._validators)) if self._validators else 0

    def _has_quorum(self) -> bool:
        return bool(self._validators) and self._reachable >= self._needed()

    def _describe(self, now: float, *, quorum_now: bool, caught_up: bool) -> ReadOnlyStatus:
        n, need, got = len(self._validators), self._needed(), self._reachable
        counts = f"{got} of {n} validators reachable, quorum needs {need}"
        if not self._validators:
            reason = "no validator set known yet"
        elif self._since is not None:
            if quorum_now and not caught_up:
                reason = f"quorum reachable again ({counts}); catching up with the Primary chain"
            else:
                reason = f"no quorum for {max(0.0, now - self._last_quorum):.0f} s ({counts})"
        elif quorum_now:
            reason = f"quorum reachable ({counts})"
        else:
            left = self._last_quorum + self.config.enter_after_s - now
            reason = f"quorum lost ({counts}); read-only in {max(0.0, left):.0f} s unless it returns"
        return ReadOnlyStatus(
            read_only=self._since is not None,
            reason=reason,
            since=self._since,
            reachable=got,
            needed=need,
            validators=n,
        )
