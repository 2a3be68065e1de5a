"""A post-quantum (--pq) network over the in-memory transport: a real join, decided by consensus, with
every operation, vote and certificate under the hybrid Ed25519 + ML-DSA-65 scheme."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import trio

from mycelium.config import Config, NodeSection
from mycelium.daemon import Node
from mycelium.identity import JoinToken, make_invite
from mycelium.session import NetworkSession
from mycelium.signatures import HYBRID_SIGNATURE_SIZE, Scheme
from mycelium.testing.transport import MemoryNetwork

JOIN_TIMEOUT_S = 90  # generous for a loaded machine; a quiet one takes a few seconds


def _node(state_dir: Path, *, join_token: str | None = None) -> Node:
    cfg = Config(state_dir=state_dir, node=NodeSection(listen=(), mdns=False, heartbeat_s=1, dead_after_s=30))
    node = Node(cfg, join_token=join_token)
    node.prepare()
    return node


async def _wait_until(predicate, what: str) -> None:
    with trio.move_on_after(JOIN_TIMEOUT_S) as scope:
        while not predicate():
            await trio.sleep(0.02)
    if scope.cancelled_caught:
        pytest.fail(f"timed out after {JOIN_TIMEOUT_S} s waiting until {what}")


async def test_a_joiner_is_admitted_into_a_pq_network(tmp_path: Path) -> None:
    founder = _node(tmp_path / "founder")
    founder.create_named_network("pq-memory", pq=True)
    assert founder.membership.genesis.scheme is Scheme.HYBRID
    invite = make_invite(founder.key, founder.membership.network_id, ttl_s=600, uses=1, now_s=int(time.time()))
    token = JoinToken(founder.membership.genesis, founder.membership.secret, (), invite).encode()
    joiner = _node(tmp_path / "joiner", join_token=token)
    net = MemoryNetwork()
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(NetworkSession(founder, net.transport(founder.key.node_id)).run)
            await nursery.start(NetworkSession(joiner, net.transport(joiner.key.node_id)).run)
            me = joiner.key.node_id
            await _wait_until(lambda: founder.ledger.is_member(me), "the founder decided the join")
            await _wait_until(lambda: joiner.ledger.is_member(me), "the joiner adopted its own admission")
            head = founder.ledger.head
            assert head.members[me].pq_key == joiner.key.pq_public  # recorded by the join operation
            link = founder.ledger.chain.links_after(head.height - 1, 1)[0]
            assert all(len(sig) == HYBRID_SIGNATURE_SIZE for sig in link.certificate.signatures.values())
            nursery.cancel_scope.cancel()
    finally:
        founder.close()
        joiner.close()
