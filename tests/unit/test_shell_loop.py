"""The trio loop around a sans-IO core (mycelium.shell.loop)."""

from __future__ import annotations

import trio
import trio.testing

from mycelium.shell.loop import CoreLoop


class Recorder:
    def __init__(self) -> None:
        self.seen: list = []

    def on_tick(self, now: float) -> list:
        return []

    def on_message(self, sender: str, message: object, now: float) -> list:
        self.seen.append(message)
        return []


async def test_a_stopped_loop_never_calls_its_core_again():
    """Regression (an honest validator judged to equivocate): the session replaces its consensus
    core by cancelling the old loop's scope and building a new core from the persisted lock. A
    message the old loop had already received still reached the old core after the cancel (trio
    cancels at the next checkpoint), so it could sign a vote the new core never heard of, and the
    new one sign another for the same step. Without `stop()` the core below sees the message."""
    core = Recorder()
    loop = CoreLoop(core, send=lambda to, m: None, broadcast=lambda m: None)
    scope = trio.CancelScope()
    async with trio.open_nursery() as nursery:
        async def run() -> None:
            with scope:
                await loop.run()

        nursery.start_soon(run)
        await trio.testing.wait_all_tasks_blocked()
        loop.deliver("peer", "a vote")  # the loop's receive completes: its task is scheduled
        loop.stop()  # and superseded in the same step, as Session._start_consensus does
        scope.cancel()
    assert core.seen == []


async def test_a_running_loop_hands_messages_to_its_core():
    core = Recorder()
    loop = CoreLoop(core, send=lambda to, m: None, broadcast=lambda m: None)
    async with trio.open_nursery() as nursery:
        await nursery.start(loop.run)
        loop.deliver("peer", "a vote")
        await trio.testing.wait_all_tasks_blocked()
        assert core.seen == ["a vote"]
        loop.stop()
        loop.deliver("peer", "another")
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert core.seen == ["a vote"]
