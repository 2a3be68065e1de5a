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


def _equivocation(key, network_id: str) -> dict:
    from mycelium.consensus.messages import Precommit, sign
    from mycelium.consensus.outcomes import equivocation

    a, b = (sign(Precommit(3, 0, bytes([i]) * 32, key.node_id), key, network_id) for i in (1, 2))
    return equivocation(a, b).to_wire()


@pytest.mark.parametrize("how", ["remove", "slash"])
async def test_a_removal_rotates_the_secret_for_the_remaining_members_only(tmp_path: Path, how: str) -> None:
    """An admin's `remove`, or hybrid-signed evidence that the node equivocated (slashing): the same
    rotation follows, and the node keeps only the old secret."""
    from mycelium.ledger import governance
    from mycelium.ledger.operations import (
        OperationError, OpType, check_operation, evidence_operation, join_operation, sign_operation,
    )
    from mycelium.storage.network import load_membership
    from tests.profiles import make_profile

    founder = _node(tmp_path / "founder")
    founder.create_named_network("pq-rekey", pq=True)
    net_id = founder.membership.network_id
    invite = make_invite(founder.key, net_id, ttl_s=600, uses=2, now_s=int(time.time()))
    token = JoinToken(founder.membership.genesis, founder.membership.secret, (), invite).encode()
    stay, leave = _node(tmp_path / "stay", join_token=token), _node(tmp_path / "leave", join_token=token)
    old_secret = founder.membership.secret
    net = MemoryNetwork()
    try:
        async with trio.open_nursery() as nursery:
            sessions = [NetworkSession(n, net.transport(n.key.node_id)) for n in (founder, stay, leave)]
            for s in sessions:
                await nursery.start(s.run)
            ids = [n.key.node_id for n in (founder, stay, leave)]
            await _wait_until(lambda: all(i in founder.ledger.head.members for i in ids), "both joined")
            await _wait_until(lambda: all(founder.ledger.head.members[i].caps.get("kem") for i in ids),
                              "every member's key-agreement key is recorded (the founder's by a keys op)")
            if how == "remove":
                out = sign_operation(founder.key, net_id, OpType.REMOVE, {"node": leave.key.node_id},
                                     now_s=int(time.time()))
            else:  # reported by a member that is no admin: slashing needs no admin
                out = evidence_operation(stay.key, net_id, _equivocation(leave.key, net_id), now_s=int(time.time()))
            await sessions[1 if how == "slash" else 0].submit(out)
            await _wait_until(lambda: governance.secret_generation(founder.ledger.head) == 1, "the rekey was decided")
            await _wait_until(lambda: founder.membership.secret_generation == stay.membership.secret_generation == 1,
                              "the remaining members adopted generation 1")
            assert founder.membership.secret == stay.membership.secret != old_secret
            assert load_membership(stay.cfg.network_path).secret == stay.membership.secret  # persisted
            assert leave.membership.secret == old_secret and leave.membership.secret_generation == 0
            head = founder.ledger.head
            assert leave.key.node_id not in head.members and leave.key.node_id not in head.params[governance.ENVELOPES]
            assert len(head.params[governance.ENVELOPES]) == 2  # bounded: one per remaining member
            if how == "slash":
                assert head.evidence[-1]["validator"] == leave.key.node_id
                fresh = make_invite(founder.key, net_id, ttl_s=600, uses=1, now_s=int(time.time()))
                rejoin = join_operation(leave.key, net_id, fresh, make_profile(), "hypha", now_s=int(time.time()))
                with pytest.raises(OperationError, match="slashed"):
                    check_operation(rejoin, head, now_s=int(time.time()))
            nursery.cancel_scope.cancel()
    finally:
        for n in (founder, stay, leave):
            n.close()
