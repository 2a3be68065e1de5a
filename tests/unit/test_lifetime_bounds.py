"""Bounds that keep a long-running node small: per-peer send queues retire when idle and are capped,
evidence submission is one bounded queue, remembered peer addresses are capped (and survive a restart)."""

from __future__ import annotations

from pathlib import Path

import trio
import trio.testing

from mycelium.shell import exchange
from mycelium.shell.exchange import PeerQueues
from mycelium.storage.db import StateDB
from mycelium.storage.peers import MAX_PEERS, load_peer_addresses, save_peer_addresses
from mycelium.testing.spores import node_id


class _SlowMesh:
    request_errors = (ConnectionError,)

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []

    def admitted_peers(self) -> list[str]:
        return []

    async def request(self, peer: str, name: str, data: bytes, timeout_s: float | None = None) -> bytes:
        self.sent.append((peer, data))
        return b""


async def test_peer_queues_retire_when_idle_and_are_capped(monkeypatch) -> None:
    monkeypatch.setattr(exchange, "MAX_PEER_QUEUES", 3)
    mesh = _SlowMesh()
    async with trio.open_nursery() as nursery:
        queues = PeerQueues(mesh, nursery, "rpc")
        for i in range(5):
            queues.send_nowait(node_id(i), b"x")
        assert queues.live_queues == 3 and queues.dropped["too_many_peers"] == 2
        await trio.sleep(exchange.IDLE_RETIRE_S + 1)
        assert queues.live_queues == 0 and queues.retired == 3
        queues.send_nowait(node_id(4), b"again")  # a peer that comes back gets a fresh queue
        await trio.sleep(0.1)
        assert queues.live_queues == 1 and (node_id(4), b"again") in mesh.sent
        nursery.cancel_scope.cancel()


def test_peer_queue_retirement_runs_on_virtual_time(monkeypatch) -> None:
    trio.run(test_peer_queues_retire_when_idle_and_are_capped, monkeypatch,
             clock=trio.testing.MockClock(autojump_threshold=0))


test_peer_queues_retire_when_idle_and_are_capped.__test__ = False  # run through the MockClock wrapper


def test_peer_addresses_are_remembered_bounded_and_damage_reads_as_nothing(tmp_path: Path) -> None:
    db = StateDB.open(tmp_path / "state.db")
    try:
        peers = [(node_id(i), [f"/ip4/10.0.0.{i % 250}/tcp/4701"], float(i)) for i in range(MAX_PEERS + 10)]
        assert save_peer_addresses(db, "net", peers) == MAX_PEERS
        loaded = load_peer_addresses(db, "net")
        assert len(loaded) == MAX_PEERS
        assert loaded[0][0] == node_id(MAX_PEERS + 9)  # the most recently seen first
        assert load_peer_addresses(db, "other-net") == []
        db.set_meta("peer_addresses:net", b"\xff\x00garbage")
        assert load_peer_addresses(db, "net") == []
    finally:
        db.close()


async def test_evidence_submission_is_one_bounded_queue(tmp_path: Path) -> None:
    from mycelium import session as session_module
    from mycelium.session import NetworkSession
    from tests.unit.test_session_memory import LOCAL, _node

    founder = _node(tmp_path / "founder")
    founder.create_named_network("bounds")
    try:
        s = NetworkSession(founder, None)

        class _Evidence:
            def to_wire(self) -> dict:
                return {"kind": "equivocation"}

        for _ in range(session_module.EVIDENCE_QUEUE + 40):
            s._on_evidence(_Evidence())
        assert s.rejected["evidence_queue_full"] == 40  # no task was spawned for any of them
    finally:
        founder.close()


async def test_consensus_counters_survive_a_core_rebuild(tmp_path: Path) -> None:
    """/metrics counters never go down: a catch-up rebuilds the consensus core, its counts are kept."""
    from mycelium.session import NetworkSession
    from mycelium.testing.transport import MemoryNetwork
    from tests.unit.test_session_memory import LOCAL, _node

    founder = _node(tmp_path / "founder")
    founder.create_named_network("counters")
    net = MemoryNetwork()
    try:
        async with trio.open_nursery() as nursery:
            s = NetworkSession(founder, net.transport(founder.key.node_id), LOCAL)
            await nursery.start(s.run)
            s.driver.core.errors["malformed"] += 5
            before = s.consensus_errors["malformed"]
            s._start_consensus()  # what a catch-up does
            assert s.driver.core.errors["malformed"] == 0  # a fresh core …
            assert s.consensus_errors["malformed"] == before == 5  # … the exported count stays
            nursery.cancel_scope.cancel()
    finally:
        founder.close()
