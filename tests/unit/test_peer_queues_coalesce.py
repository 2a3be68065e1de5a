"""PeerQueues(coalesce=True), as consensus uses it: a message still waiting for a peer is not
queued again, so rebroadcasts to a slow peer cannot bury fresh votes under copies of old ones."""

from __future__ import annotations

import trio

from mycelium.shell.exchange import QUEUE_PER_PEER, PeerQueues

RPC_S = 0.5  # one request to the loaded peer takes this long
VOTES = [b"proposal", b"commit", b"reveal", b"precommit"]


class SlowRpc:
    request_errors = (RuntimeError,)

    def __init__(self) -> None:
        self.requests: list[tuple[float, bytes]] = []

    def admitted_peers(self):
        return ["peer"]

    async def request(self, node, name, payload, timeout_s=None):
        await trio.sleep(RPC_S)
        self.requests.append((trio.current_time(), payload))
        return b""


async def _fresh_vote_delay(coalesce: bool) -> tuple[float | None, PeerQueues, SlowRpc]:
    """Rebroadcast the same four votes every 0.2 s for 20 s (the peer takes 2 a second), then send
    a fresh vote: how long until the peer gets it (None: dropped or still waiting after 60 s)."""
    transport = SlowRpc()
    async with trio.open_nursery() as nursery:
        queues = PeerQueues(transport, nursery, "consensus", coalesce=coalesce)
        for _ in range(100):
            for vote in VOTES:
                queues.send_nowait("peer", vote)
            await trio.sleep(0.2)
        sent = trio.current_time()
        queues.send_nowait("peer", b"fresh vote")
        with trio.move_on_after(60):
            while not any(p == b"fresh vote" for _, p in transport.requests):
                await trio.sleep(0.1)
        nursery.cancel_scope.cancel()
    arrived = [t for t, p in transport.requests if p == b"fresh vote"]
    return (arrived[0] - sent if arrived else None), queues, transport


async def test_rebroadcasts_to_a_slow_peer_do_not_delay_a_fresh_vote(autojump_clock):
    delay, queues, transport = await _fresh_vote_delay(coalesce=True)
    assert delay is not None and delay <= (len(VOTES) + 1) * RPC_S + 0.01, delay  # the four copies waiting, then it
    assert queues.coalesced > 300 and not queues.dropped
    assert {p for _, p in transport.requests} == set(VOTES) | {b"fresh vote"}


async def test_without_coalescing_the_fresh_vote_waits_behind_copies_or_is_dropped(autojump_clock):
    """What consensus had: the queue fills with copies (QUEUE_PER_PEER), new votes are dropped."""
    delay, queues, _ = await _fresh_vote_delay(coalesce=False)
    assert delay is None or delay > 60 * RPC_S
    assert queues.dropped["queue_full"] > 0 and QUEUE_PER_PEER < 400


async def test_a_message_is_queued_again_once_it_left_the_queue(autojump_clock):
    transport = SlowRpc()
    async with trio.open_nursery() as nursery:
        queues = PeerQueues(transport, nursery, "consensus", coalesce=True)
        queues.send_nowait("peer", b"vote")
        queues.send_nowait("peer", b"vote")
        await trio.sleep(2 * RPC_S)
        queues.send_nowait("peer", b"vote")  # a rebroadcast after the first copy went: sent again
        await trio.sleep(2 * RPC_S)
        nursery.cancel_scope.cancel()
    assert [p for _, p in transport.requests] == [b"vote", b"vote"] and queues.coalesced == 1
