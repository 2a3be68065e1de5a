"""The real NetworkSession (ledger, consensus driver, catch-up, admission, Latent, workloads) over the
in-memory transport: a join and a catch-up in one trio run, without libp2p or subprocesses."""

from __future__ import annotations

import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio

from mycelium.config import Config, NodeSection
from mycelium.daemon import Node
from mycelium.identity import JoinToken, make_invite
from mycelium.session import NetworkSession, SessionConfig
from mycelium.testing.transport import MemoryNetwork, MemoryRequestError

LOCAL = SessionConfig.local()  # short timers; the [node] knobs below (heartbeat, read-only delay) apply over it
JOIN_TIMEOUT_S = 60  # generous for a loaded machine; a quiet one takes a few seconds


def _node(state_dir: Path, *, join_token: str | None = None) -> Node:
    cfg = Config(state_dir=state_dir, node=NodeSection(listen=(), mdns=False, heartbeat_s=1, dead_after_s=30,
                                                       read_only_after_s=1))
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


@dataclass
class TwoNodes:
    net: MemoryNetwork
    founder: Node
    joiner: Node
    founding: NetworkSession
    joining: NetworkSession

    @property
    def me(self) -> str:
        return self.joiner.key.node_id

    def cut(self) -> None:
        self.net.partition({self.founder.key.node_id}, {self.me})


@asynccontextmanager
async def _two_sessions(tmp_path: Path):
    """A founder and a joiner (not yet admitted, without the chain), both sessions running on one
    in-memory network; cancelled and closed on exit."""
    founder, joiner = _founder_and_joiner(tmp_path)
    assert joiner.ledger.head is None  # a joiner starts without the chain
    net = MemoryNetwork()
    try:
        async with trio.open_nursery() as nursery:
            founding = NetworkSession(founder, net.transport(founder.key.node_id), LOCAL)
            await nursery.start(founding.run)
            joining = NetworkSession(joiner, net.transport(joiner.key.node_id), LOCAL)
            await nursery.start(joining.run)
            yield TwoNodes(net, founder, joiner, founding, joining)
            nursery.cancel_scope.cancel()
    finally:
        founder.close()
        joiner.close()


async def test_a_joiner_catches_up_from_nothing_and_is_admitted(tmp_path: Path) -> None:
    async with _two_sessions(tmp_path) as t:
        founder, joiner = t.founder, t.joiner
        await _wait_until(lambda: joiner.ledger.head is not None, "the joiner fetched the chain")
        await _wait_until(lambda: founder.ledger.is_member(t.me), "the founder decided the join")
        await _wait_until(lambda: joiner.ledger.is_member(t.me) and joiner.ledger.height >= founder.ledger.height - 1,
                          "the joiner caught up past its own admission")
        assert joiner.ledger.head.hash() == founder.ledger.chain.links_after(joiner.ledger.height - 1, 1)[0].primary.hash()
        assert t.joining.consensus_state in ("voting", "following")
        assert {p.node_id for p in t.joining.mesh.peers() if p.admitted} == {founder.key.node_id}


async def test_a_node_cut_off_catches_up_after_the_heal(tmp_path: Path) -> None:
    async with _two_sessions(tmp_path) as t:
        founder, joiner = t.founder, t.joiner
        await _wait_until(lambda: joiner.ledger.is_member(t.me), "the joiner was admitted")
        t.cut()
        with pytest.raises(MemoryRequestError):
            await t.net.transports[t.me].request(founder.key.node_id, "chain", b"", timeout_s=1)
        cut_at = joiner.ledger.height
        assert founder.ledger.validators() == [founder.key.node_id]  # two nodes: the founder alone decides
        await _wait_until(lambda: founder.ledger.height >= cut_at + 3, "the founder decided more heights")
        assert joiner.ledger.height == cut_at  # nothing reached it through the cut
        t.net.heal()
        target = founder.ledger.height
        await _wait_until(lambda: joiner.ledger.height >= target, "the healed node caught up")


async def test_a_node_cut_off_from_the_validators_goes_read_only_at_the_deadline_and_back(tmp_path: Path) -> None:
    async with _two_sessions(tmp_path) as t:
        watch = t.joining.watch
        await _wait_until(lambda: t.joiner.ledger.is_member(t.me) and not watch.read_only,
                          "the joiner was admitted and writable")
        t.cut()
        await _wait_until(lambda: watch.read_only, "the cut-off node went read-only")
        assert "no quorum" in watch.status.reason
        t.net.heal()
        await _wait_until(lambda: not watch.read_only, "the healed node became writable again")


def test_the_presets_differ_where_the_network_does_and_the_operator_knobs_win():
    local, lan, wan = SessionConfig.local(), SessionConfig.lan(), SessionConfig.wan()
    assert local.chain.catchup_interval_s < lan.chain.catchup_interval_s < wan.chain.catchup_interval_s
    assert local.consensus.propose_timeout_s < lan.consensus.propose_timeout_s < wan.consensus.propose_timeout_s
    assert lan == SessionConfig()
    applied = wan.with_node(NodeSection(heartbeat_s=7, read_only_after_s=9))
    assert applied.consensus.heartbeat_interval_s == 7.0 and applied.read_only.enter_after_s == 9.0
    assert applied.consensus.propose_timeout_s == wan.consensus.propose_timeout_s
