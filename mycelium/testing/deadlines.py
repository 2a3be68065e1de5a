"""Deadlines in tests are hang detectors, not performance budgets.

Every test deadline is written for a quiet two-core box and stretched here by one factor, so a test
on a busy machine (CI beside other work, two xdist workers each starting daemons) waits for its
condition instead of failing on the clock. A real hang still fails — only later. Speed belongs in
bench/, never in a test deadline.

MYCELIUM_TEST_SLACK (default 3) sets the factor; 1 gives the raw deadlines back."""

from __future__ import annotations

import os

import trio


def _slack() -> float:
    raw = os.environ.get("MYCELIUM_TEST_SLACK", "3")
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"MYCELIUM_TEST_SLACK={raw!r} is not a number (try 3)") from None
    if value < 1:
        raise ValueError(f"MYCELIUM_TEST_SLACK={raw!r} must be at least 1: it only ever lengthens deadlines")
    return value


SLACK = _slack()


def stretched(seconds: float) -> float:
    """A test deadline of `seconds` on a quiet box, as long as this run allows."""
    return seconds * SLACK


def hang_after(seconds: float) -> trio.CancelScope:
    """trio.fail_after for a test: TooSlowError only when the code under test is stuck."""
    return trio.fail_after(stretched(seconds))
