"""Test deadlines are stretched hang detectors: the factor parses strictly and only lengthens."""

from __future__ import annotations

import subprocess
import sys

import pytest
import trio
import trio.testing

from mycelium.testing import deadlines


def _slack_in_child(value: str) -> subprocess.CompletedProcess:
    code = "from mycelium.testing.deadlines import SLACK; print(SLACK)"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={"MYCELIUM_TEST_SLACK": value, "PATH": "/usr/bin:/bin"}, timeout=60)


@pytest.mark.parametrize(("value", "message"), [("three", "is not a number"), ("0.5", "must be at least 1")])
def test_a_bad_slack_is_refused_with_what_to_set(value: str, message: str) -> None:
    res = _slack_in_child(value)
    assert res.returncode != 0 and message in res.stderr and "MYCELIUM_TEST_SLACK" in res.stderr


def test_the_slack_only_lengthens_deadlines() -> None:
    assert _slack_in_child("2.5").stdout.strip() == "2.5"
    assert deadlines.stretched(10) == 10 * deadlines.SLACK >= 10


def test_hang_after_still_fails_a_hang() -> None:
    async def hang() -> None:
        with deadlines.hang_after(1):
            await trio.sleep_forever()

    clock = trio.testing.MockClock(autojump_threshold=0)
    with pytest.raises(trio.TooSlowError):
        trio.run(hang, clock=clock)
    assert clock.current_time() == pytest.approx(deadlines.stretched(1))
