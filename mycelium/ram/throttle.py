"""The adaptive throttle: how much to slow the primary so backups keep up (pure).

Two kinds of rule, chosen by the manifest's `throttle.curve`:

- a **curve** of the backlog: `linear`, `exponential` or `custom` points [backlog %, slowdown %]. The
  backlog fraction is (bytes cut but not yet acknowledged by the slowest backup) / (the backlog limit);
  the slowdown is the percentage of CPU time taken from the primary (0 = full speed, 99 = nearly stopped).
- **auto-converge** (the default, QEMU's rule from `migration/ram.c`): each period compare the bytes the
  workload dirtied with the bytes the channel carried; when the dirty bytes exceed half of the carried
  bytes in two consecutive periods, raise the throttle (first to 20 %, then +10 % each time, at most 99 %).
  QEMU only ever raises it, because a migration ends; replication never ends, so we also lower it by the
  increment after two consecutive periods under the threshold (our addition, documented as such).

Slowdowns are integers (percent) so the figures are exact and testable.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MAX_SLOWDOWN_PCT = 99  # QEMU's max-cpu-throttle default; 100 would stop the workload (that is `pause`)
CURVES = ("auto-converge", "linear", "exponential", "custom")


class ThrottleError(ValueError):
    """A throttle configuration that cannot be used; the message names the field."""


def _clamp(pct: int) -> int:
    return max(0, min(MAX_SLOWDOWN_PCT, pct))


@dataclass(frozen=True, slots=True)
class Curve:
    """Backlog % → slowdown %. `points` are sorted (backlog %, slowdown %) pairs; between two points the
    slowdown is interpolated linearly; below the first point it is that point's value (0 for the presets)."""

    kind: str
    points: tuple[tuple[int, int], ...]

    @staticmethod
    def linear(start_pct: int = 50) -> "Curve":
        """No slowdown below `start_pct` of the backlog limit, then linear up to the maximum at 100 %."""
        return Curve("linear", ((0, 0), (start_pct, 0), (100, MAX_SLOWDOWN_PCT)))

    @staticmethod
    def exponential(start_pct: int = 25) -> "Curve":
        """Slowdown doubling every 12.5 % of backlog from `start_pct`: gentle early, steep near full."""
        pts = [(0, 0), (start_pct, 0)]
        step, slow = (100 - start_pct) / 6, 1.5
        for i in range(1, 7):
            slow *= 2
            pts.append((round(start_pct + i * step), min(MAX_SLOWDOWN_PCT, round(slow))))
        pts[-1] = (100, MAX_SLOWDOWN_PCT)
        return Curve("exponential", tuple(pts))

    @staticmethod
    def custom(points: list[list[int]] | list[tuple[int, int]]) -> "Curve":
        if not points:
            raise ThrottleError("throttle.points: a custom curve needs at least one [backlog %, slowdown %] pair")
        pts = sorted((int(b), int(s)) for b, s in points)
        for b, s in pts:
            if not (0 <= b <= 100 and 0 <= s <= 100):
                raise ThrottleError(f"throttle.points: [{b}, {s}] is outside 0-100")
        if len({b for b, _ in pts}) != len(pts):
            raise ThrottleError("throttle.points: two points share one backlog %; give each backlog % once")
        for (_, s1), (_, s2) in zip(pts, pts[1:]):
            if s2 < s1:
                raise ThrottleError("throttle.points: the slowdown must not fall as the backlog grows")
        return Curve("custom", tuple(pts))

    def slowdown_pct(self, backlog_pct: int) -> int:
        pts = self.points
        if backlog_pct <= pts[0][0]:
            return _clamp(pts[0][1])
        for (b1, s1), (b2, s2) in zip(pts, pts[1:]):
            if backlog_pct <= b2:
                return _clamp(s1 + (s2 - s1) * (backlog_pct - b1) // (b2 - b1))
        return _clamp(pts[-1][1])


@dataclass(slots=True)
class AutoConverge:
    """QEMU's auto-converge rule, per period (QEMU: `cpu-throttle-initial` 20, `-increment` 10)."""

    initial_pct: int = 20        # first throttle step when the dirty rate is too high
    increment_pct: int = 10      # each further step
    threshold_pct: int = 50      # dirty bytes above this % of carried bytes count as "too high"
    trigger_periods: int = 2     # consecutive high (or low) periods before acting
    level_pct: int = 0
    _high: int = 0
    _low: int = 0

    def on_period(self, dirty_bytes: int, carried_bytes: int) -> int:
        """Feed one period's figures; returns the slowdown to apply from now on."""
        high = dirty_bytes * 100 > carried_bytes * self.threshold_pct
        self._high, self._low = (self._high + 1, 0) if high else (0, self._low + 1)
        if self._high >= self.trigger_periods:
            self._high = 0
            self.level_pct = _clamp(self.initial_pct if self.level_pct == 0 else self.level_pct + self.increment_pct)
        elif self._low >= self.trigger_periods and self.level_pct > 0:
            self._low = 0
            self.level_pct = 0 if self.level_pct <= self.initial_pct else self.level_pct - self.increment_pct
        return self.level_pct


@dataclass(slots=True)
class Throttle:
    """The primary's throttle: the larger of the curve's answer and (with auto-converge) QEMU's rule.

    With a curve the backlog alone decides; with auto-converge the rule decides and a full backlog
    still forces the maximum, so the emergency mode is the last resort, not the first."""

    curve: Curve | None = None                     # None = auto-converge
    rule: AutoConverge = field(default_factory=AutoConverge)
    level_pct: int = 0

    @staticmethod
    def from_manifest(block: dict | None) -> "Throttle":
        block = block or {}
        kind = block.get("curve", "auto-converge")
        if kind == "auto-converge":
            return Throttle(None)
        if kind == "linear":
            return Throttle(Curve.linear())
        if kind == "exponential":
            return Throttle(Curve.exponential())
        if kind == "custom":
            return Throttle(Curve.custom(block.get("points") or []))
        raise ThrottleError(f"throttle.curve: {kind!r} is not one of {', '.join(CURVES)}")

    @property
    def kind(self) -> str:
        return "auto-converge" if self.curve is None else self.curve.kind

    def on_period(self, backlog_pct: int, dirty_bytes: int, carried_bytes: int, *, in_sync: bool = False) -> int:
        """`in_sync`: every epoch cut was acknowledged by the end of the period. The channel then kept up,
        whatever the ratio: replication carries what was dirtied, so dirty ≈ carried in steady state and
        QEMU's rule alone (made for a migration saturating its link) would ramp up forever."""
        if self.curve is not None:
            self.level_pct = self.curve.slowdown_pct(backlog_pct)
        else:
            self.level_pct = self.rule.on_period(0 if in_sync else dirty_bytes, carried_bytes)
            if backlog_pct >= 100:
                self.level_pct = MAX_SLOWDOWN_PCT
        return self.level_pct
