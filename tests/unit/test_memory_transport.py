"""The in-memory transport behaves as the session expects of the mesh: requests, gossip, partitions."""

from __future__ import annotations

import pytest
import trio

from mycelium.testing import transport as memory
from mycelium.testing.transport import MemoryNetwork, MemoryRequestError


async def _echo(peer: str, data: bytes) -> bytes:
    return peer.encode() + b":" + data


async def test_requests_reach_running_linked_peers_only() -> None:
    net = MemoryNetwork()
    a, b = net.transport("a"), net.transport("b")
    b.register_handler("echo", _echo)
    with pytest.raises(MemoryRequestError, match="not reachable"):
        await a.request("b", "echo", b"x")  # neither runs yet
    async with trio.open_nursery() as nursery:
        await nursery.start(a.run)
        await nursery.start(b.run)
        assert a.admitted_peers() == ["b"] and b.admitted_peers() == ["a"]
        assert await a.request("b", "echo", b"x", timeout_s=1) == b"a:x"
        with pytest.raises(MemoryRequestError, match="serves no"):
            await b.request("a", "echo", b"x")
        net.partition({"a"}, {"b"})
        assert a.admitted_peers() == [] and not a.peers()[0].admitted
        with pytest.raises(MemoryRequestError):
            await a.request("b", "echo", b"x")
        net.heal()
        assert await a.request("b", "echo", b"y") == b"a:y"
        assert a.counters.snapshot()["request_errors"] == 2 and b.counters.request_errors == 1 and b.counters.requests_in == 2
        nursery.cancel_scope.cancel()
    assert not a.up and not b.up


async def test_a_slow_handler_times_out_and_a_failing_one_is_an_error() -> None:
    net = MemoryNetwork()
    a, b = net.transport("a"), net.transport("b")

    async def slow(peer: str, data: bytes) -> bytes:
        await trio.sleep_forever()

    async def broken(peer: str, data: bytes) -> bytes:
        raise ValueError("bug")

    b.register_handler("slow", slow)
    b.register_handler("broken", broken)
    async with trio.open_nursery() as nursery:
        await nursery.start(a.run)
        await nursery.start(b.run)
        with pytest.raises(MemoryRequestError, match="timed out"):
            await a.request("b", "slow", b"", timeout_s=0.05)
        with pytest.raises(MemoryRequestError, match="failed"):
            await a.request("b", "broken", b"")
        assert b.counters.handler_errors == 1
        nursery.cancel_scope.cancel()


async def test_gossip_reaches_subscribers_and_a_full_buffer_drops_and_counts(monkeypatch) -> None:
    monkeypatch.setattr(memory, "SUBSCRIPTION_BUFFER", 2)
    net = MemoryNetwork()
    a, b = net.transport("a"), net.transport("b")
    async with trio.open_nursery() as nursery:
        await nursery.start(a.run)
        await nursery.start(b.run)
        async with b.subscribe("t") as messages:
            for i in range(5):
                await a.publish("t", bytes([i]))
            await a.publish("other", b"-")  # nobody subscribed: nothing arrives
            got = [messages.receive_nowait(), messages.receive_nowait()]
            assert [(m.topic, m.sender, m.data) for m in got] == [("t", "a", b"\x00"), ("t", "a", b"\x01")]
            with pytest.raises(trio.WouldBlock):
                messages.receive_nowait()
        assert b.counters.gossip_received == 2 and b.counters.gossip_dropped == 3
        nursery.cancel_scope.cancel()


def test_address_hints_are_bounded() -> None:
    t = MemoryNetwork().transport("a")
    t.add_addresses("b", [f"/memory/{i}" for i in range(memory.MAX_ADDRESS_HINTS + 5)])
    assert len(t._hints["b"]) == memory.MAX_ADDRESS_HINTS
