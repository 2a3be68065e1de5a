"""State sync with the real NetworkSession over the in-memory transport, history configured small
so pruning happens within the test: a node joins after the links it would need are gone, and a
member offline longer than the history catches up (DESIGN "State sync")."""

from __future__ import annotations

from pathlib import Path

import trio

from mycelium.session import NetworkSession
from mycelium.testing.transport import MemoryNetwork
from tests.unit.test_session_memory import LOCAL, _founder_and_joiner, _wait_until

HISTORY = 6  # links kept besides the epoch links


async def test_a_node_joins_after_pruning_by_state_sync(tmp_path: Path) -> None:
    founder, joiner = _founder_and_joiner(tmp_path)
    founder.ledger.set_history_kept(HISTORY)
    joiner.ledger.set_history_kept(HISTORY)
    net = MemoryNetwork()
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(NetworkSession(founder, net.transport(founder.key.node_id), LOCAL).run)
            await _wait_until(lambda: founder.ledger.chain.oldest_height > 1, "the founder pruned its first links")
            assert founder.ledger.chain.links_after(-1, 1)[0].primary.height > 0  # genesis link not in the window
            assert 0 in founder.ledger.chain.epoch_links  # … but kept as an epoch link
            joining = NetworkSession(joiner, net.transport(joiner.key.node_id), LOCAL)
            await nursery.start(joining.run)
            me = joiner.key.node_id
            await _wait_until(lambda: joiner.ledger.is_member(me) and joiner.ledger.height >= founder.ledger.height - 1,
                              "the joiner state-synced, was admitted and caught up")
            assert joiner.ledger.chain.oldest_height > 0  # it started from a recent head, not from genesis
            assert joining.rejected["bad_chain"] == 0
            assert joiner.ledger.head.hash() == founder.ledger.chain.get(joiner.ledger.height).primary.hash()
            nursery.cancel_scope.cancel()
    finally:
        founder.close()
        joiner.close()


async def test_a_member_offline_longer_than_the_history_catches_up(tmp_path: Path) -> None:
    founder, joiner = _founder_and_joiner(tmp_path)
    founder.ledger.set_history_kept(HISTORY)
    joiner.ledger.set_history_kept(HISTORY)
    net = MemoryNetwork()
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(NetworkSession(founder, net.transport(founder.key.node_id), LOCAL).run)
            await nursery.start(NetworkSession(joiner, net.transport(joiner.key.node_id), LOCAL).run)
            me = joiner.key.node_id
            await _wait_until(lambda: joiner.ledger.is_member(me), "the joiner was admitted")
            net.partition({founder.key.node_id}, {me})
            cut_at = joiner.ledger.height
            await _wait_until(lambda: founder.ledger.chain.oldest_height > cut_at + 1,
                              "the founder pruned every link the offline member would need")
            net.heal()
            await _wait_until(lambda: joiner.ledger.height >= founder.ledger.height - 1, "the member caught up")
            assert joiner.ledger.head.hash() == founder.ledger.chain.get(joiner.ledger.height).primary.hash()
            nursery.cancel_scope.cancel()
    finally:
        founder.close()
        joiner.close()
