"""PeerQueues in streamed mode: everything queued for a peer goes in one stream write; a peer without
the stream gets rpc requests; a transport without streams is used as before."""

from __future__ import annotations

import trio

from mycelium.shell.exchange import PeerQueues


class FakeTransport:
    request_errors = (RuntimeError,)  # what this fake's "network" raises (the refused stream below)

    def __init__(self, *, refuse_stream: bool = False) -> None:
        self.batches: list[list[bytes]] = []
        self.requests: list[bytes] = []
        self.refuse_stream = refuse_stream

    def admitted_peers(self):
        return ["peer"]

    async def send_messages(self, node, name, messages, timeout_s):
        await trio.sleep(0.01)  # a write takes a moment: meanwhile more is queued
        if self.refuse_stream:
            raise RuntimeError(f"peer {node} takes no {name!r} stream: protocols not supported")
        self.batches.append(list(messages))

    async def request(self, node, name, payload, timeout_s=None):
        self.requests.append(payload)
        return b""


class RpcOnlyTransport(FakeTransport):
    send_messages = None  # type: ignore[assignment]

    def __getattribute__(self, name):
        if name == "send_messages":
            raise AttributeError(name)
        return super().__getattribute__(name)


async def _run(transport, messages):
    async with trio.open_nursery() as nursery:
        queues = PeerQueues(transport, nursery, "consensus", streamed=True)
        for m in messages:
            queues.send_nowait("peer", m)
        await trio.sleep(0.5)
        nursery.cancel_scope.cancel()
    return queues


async def test_queued_messages_go_in_few_writes_in_order(autojump_clock):
    t = FakeTransport()
    await _run(t, [bytes([i]) for i in range(100)])
    assert [m for batch in t.batches for m in batch] == [bytes([i]) for i in range(100)]
    assert len(t.batches) <= 3  # the first alone, the rest in batches of up to STREAM_BATCH
    assert t.requests == []


async def test_a_peer_without_the_stream_gets_rpc(autojump_clock):
    t = FakeTransport(refuse_stream=True)
    queues = await _run(t, [b"a"])
    assert queues.dropped["send_failed"] == 1 and t.batches == []
    assert "peer" in queues._rpc_only  # remembered: rpc for this peer from now on
    async with trio.open_nursery() as nursery:
        q = PeerQueues(t, nursery, "consensus", streamed=True)
        q._rpc_only.add("peer")
        q.send_nowait("peer", b"b")
        await trio.sleep(0.1)
        nursery.cancel_scope.cancel()
    assert t.requests == [b"b"]


async def test_a_transport_without_streams_uses_rpc(autojump_clock):
    t = RpcOnlyTransport()
    await _run(t, [b"x", b"y"])
    assert t.requests == [b"x", b"y"]


class BuggyTransport(FakeTransport):
    async def request(self, node, name, payload, timeout_s=None):
        raise KeyError("a bug in our own code, not a network failure")


async def test_a_bug_in_sending_is_logged_loudly_and_counted_and_the_sender_goes_on():
    import structlog

    transport = BuggyTransport()
    with structlog.testing.capture_logs() as logs:
        async with trio.open_nursery() as nursery:
            queues = PeerQueues(transport, nursery, "consensus")
            queues.send_nowait("peer", b"one")
            queues.send_nowait("peer", b"two")
            await trio.sleep(0.3)
            nursery.cancel_scope.cancel()
    assert queues.dropped["send_bug"] == 2 and queues.dropped["send_failed"] == 0
    assert [e["log_level"] for e in logs if "a bug" in e["event"]] == ["error", "error"]


async def test_a_refused_stream_is_forgotten_with_the_idle_queue_and_tried_again(autojump_clock):
    """`_rpc_only` grows with every peer that refused the stream unless it is pruned: it goes with the
    peer's queue when that retires, and the next message offers the stream again (the peer may have
    been upgraded meanwhile)."""
    from mycelium.shell import exchange

    t = FakeTransport(refuse_stream=True)
    async with trio.open_nursery() as nursery:
        queues = PeerQueues(t, nursery, "consensus", streamed=True)
        queues.send_nowait("peer", b"a")
        await trio.sleep(0.5)
        assert "peer" in queues._rpc_only
        queues.send_nowait("peer", b"b")  # rpc while remembered
        await trio.sleep(0.5)
        assert t.requests == [b"b"]
        await trio.sleep(exchange.IDLE_RETIRE_S + 1)
        assert queues.live_queues == 0 and queues._rpc_only == set()
        t.refuse_stream = False  # upgraded
        queues.send_nowait("peer", b"c")
        await trio.sleep(0.5)
        assert t.batches == [[b"c"]] and t.requests == [b"b"]
        nursery.cancel_scope.cancel()
