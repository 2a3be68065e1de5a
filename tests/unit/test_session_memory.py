"""The real NetworkSession (ledger, consensus driver, catch-up, admission, Latent, workloads) over the
in-memory transport: a join and a catch-up in one trio run, without libp2p or subprocesses."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import trio

from mycelium.config import Config, NodeSection
from mycelium.daemon import Node
from mycelium.identity import JoinToken, make_invite
from mycelium.session import NetworkSession
from mycelium.testing.transport import MemoryNetwork, MemoryRequestError

JOIN_TIMEOUT_S = 60  # generous for a loaded machine; a quiet one takes a few seconds


def _node(state_dir: Path, *, join_token: str | None = None) -> Node:
    cfg = Config(state_dir=state_dir, node=NodeSection(listen=(), mdns=False, heartbeat_s=1, dead_after_s=30))
    node = Node(cfg, join_token=join_token)
    node.prepare()
    return node


def _founder_and_joiner(tmp_path: Path) -> tuple[Node, Node]:
    founder = _node(tmp_path / "founder")
    founder.create_named_network("memory-net")
    invite = make_invite(founder.key, founder.membership.network_id, ttl_s=600, uses=1, now_s=int(time.time()))
    token = JoinToken(founder.membership.genesis, founder.membership.secret, (), invite).encode()
    return founder, _node(tmp_path / "joiner", join_token=token)


async def _wait_until(predicate, what: str) -> None:
    with trio.move_on_after(JOIN_TIMEOUT_S) as scope:
        while not predicate():
            await trio.sleep(0.02)
    if scope.cancelled_caught:
        pytest.fail(f"timed out after {JOIN_TIMEOUT_S} s waiting until {what}")


async def test_a_joiner_catches_up_from_nothing_and_is_admitted(tmp_path: Path) -> None:
    founder, joiner = _founder_and_joiner(tmp_path)
    assert joiner.ledger.head is None  # a joiner starts without the chain
    net = MemoryNetwork()
    try:
        async with trio.open_nursery() as nursery:
            founding = NetworkSession(founder, net.transport(founder.key.node_id))
            await nursery.start(founding.run)
            joining = NetworkSession(joiner, net.transport(joiner.key.node_id))
            await nursery.start(joining.run)
            me = joiner.key.node_id
            await _wait_until(lambda: joiner.ledger.head is not None, "the joiner fetched the chain")
            await _wait_until(lambda: founder.ledger.is_member(me), "the founder decided the join")
            await _wait_until(lambda: joiner.ledger.is_member(me) and joiner.ledger.height >= founder.ledger.height - 1,
                              "the joiner caught up past its own admission")
            assert joiner.ledger.head.hash() == founder.ledger.chain.links_after(joiner.ledger.height - 1, 1)[0].primary.hash()
            assert joining.consensus_state in ("voting", "following")
            assert {p.node_id for p in joining.mesh.peers() if p.admitted} == {founder.key.node_id}
            nursery.cancel_scope.cancel()
    finally:
        founder.close()
        joiner.close()


async def test_a_node_cut_off_catches_up_after_the_heal(tmp_path: Path) -> None:
    founder, joiner = _founder_and_joiner(tmp_path)
    net = MemoryNetwork()
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(NetworkSession(founder, net.transport(founder.key.node_id)).run)
            await nursery.start(NetworkSession(joiner, net.transport(joiner.key.node_id)).run)
            me = joiner.key.node_id
            await _wait_until(lambda: joiner.ledger.is_member(me), "the joiner was admitted")
            net.partition({founder.key.node_id}, {me})
            with pytest.raises(MemoryRequestError):
                await net.transports[me].request(founder.key.node_id, "chain", b"", timeout_s=1)
            cut_at = joiner.ledger.height
            assert founder.ledger.validators() == [founder.key.node_id]  # two nodes: the founder alone decides
            await _wait_until(lambda: founder.ledger.height >= cut_at + 3, "the founder decided more heights")
            assert joiner.ledger.height == cut_at  # nothing reached it through the cut
            net.heal()
            target = founder.ledger.height
            await _wait_until(lambda: joiner.ledger.height >= target, "the healed node caught up")
            nursery.cancel_scope.cancel()
    finally:
        founder.close()
        joiner.close()
