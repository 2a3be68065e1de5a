"""The session's pacing: capped exponential backoff, and a sleep that a wake-up cuts short."""

from __future__ import annotations

import pytest
import trio

from mycelium.shell.pacing import Backoff, Wakeup


def test_backoff_grows_to_its_cap_and_resets():
    b = Backoff(0.1, 1.0)
    assert [round(b.next(), 3) for _ in range(6)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    b.reset()
    assert b.next() == 0.1
    with pytest.raises(ValueError):
        Backoff(0, 1)
    with pytest.raises(ValueError):
        Backoff(2, 1)


async def test_a_wake_cuts_the_sleep_short(autojump_clock):
    w = Wakeup()
    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        async def wake_later():
            await trio.sleep(0.3)
            w.wake()
        nursery.start_soon(wake_later)
        assert await w.sleep(10.0) is True
    assert trio.current_time() - start == pytest.approx(0.3)


async def test_a_wake_before_the_sleep_is_kept_once(autojump_clock):
    w = Wakeup()
    w.wake()
    assert await w.sleep(5.0) is True  # returns at once
    start = trio.current_time()
    assert await w.sleep(2.0) is False  # the wake was used up: a full sleep
    assert trio.current_time() - start == pytest.approx(2.0)
