"""Seed spores with real NetworkSessions over the in-memory transport (DESIGN "State sync": "Seed spores
hand it that head quickly"). The network links two nodes only once one learned the other's address
(`introduced_only`), and the joiner's and the third member's Latent address learning is slowed past the
test, so a joiner that knows only the founder reaches the third member through the founder's Seed alone."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import replace
from types import SimpleNamespace
from pathlib import Path

import trio

from mycelium.daemon import Node
from mycelium.identity import Genesis, JoinToken, make_invite
from mycelium.session import NetworkSession
from mycelium.spores.primary import CertifiedPrimary, certify_genesis, genesis_primary
from mycelium.spores.seed import SeedSpore, make_seed
from mycelium.spores.seed_exchange import RPC_SEED
from mycelium.testing.spores import node_id, node_key
from mycelium.testing.transport import MemoryNetwork
from tests.unit.test_session_memory import LOCAL, _node, _wait_until

# the joiner learns no address from Latent NODE entries within the test: only the Seed can introduce
NO_LATENT_ADDRESSES = replace(LOCAL, latent=replace(LOCAL.latent, peers_interval_s=3600.0))


def _token(founder: Node) -> str:
    invite = make_invite(founder.key, founder.membership.network_id, ttl_s=600, uses=1, now_s=int(time.time()))
    return JoinToken(founder.membership.genesis, founder.membership.secret, (), invite).encode()


def _three(tmp_path: Path) -> tuple[Node, Node, Node]:
    founder = _node(tmp_path / "founder")
    founder.create_named_network("seed-net")
    return founder, _node(tmp_path / "second", join_token=_token(founder)), _node(tmp_path / "joiner", join_token=_token(founder))


def _forgeries(founder: Node, real: bytes) -> list[bytes]:
    """Garbage, a Seed whose signature no longer covers it, and one signed for another network."""
    seed = SeedSpore.from_bytes(real)
    tampered = SeedSpore(seed.network_id, seed.holder, seed.created_ms + 1, seed.snapshot, seed.connections,
                         seed.observations, seed.signature).to_bytes()
    other = Genesis(name="elsewhere", founder=node_id(0), created_s=1_700_000_000)
    g = genesis_primary(other)
    foreign = make_seed(node_key(0), other.network_id, CertifiedPrimary(g, certify_genesis(g, node_key(0))),
                        seed.connections, (), created_ms=1).to_bytes()
    return [b"\xff\x00 not a seed", tampered, foreign]


async def _run(tmp_path: Path, *, forge: bool) -> None:
    founder, second, joiner = _three(tmp_path)
    f, s, j = founder.key.node_id, second.key.node_id, joiner.key.node_id
    net = MemoryNetwork(introduced_only=True)
    net.introduce(f, s)
    net.introduce(f, j)  # the joiner's token names only the founder
    try:
        async with trio.open_nursery() as nursery:
            founding = NetworkSession(founder, net.transport(f), LOCAL)
            await nursery.start(founding.run)
            await nursery.start(NetworkSession(second, net.transport(s), NO_LATENT_ADDRESSES).run)
            await _wait_until(lambda: founder.ledger.is_member(s) and second.ledger.is_member(s), "the second member joined")
            assert founding.seeds.make() != b""  # the founder is a sclerotium: it holds Seeds
            if forge:
                forged = _forgeries(founder, founding.seeds.make())

                async def forging(peer, data):  # the three forgeries first, then the founder's real Seed
                    return forged.pop(0) if forged else founding.seeds.make()

                net.transports[f].register_handler(RPC_SEED, forging)
            assert not net.introduced(j, s)  # nothing gave the joiner the third member's address yet
            joining = NetworkSession(joiner, net.transport(j), NO_LATENT_ADDRESSES)
            await nursery.start(joining.run)
            await _wait_until(lambda: joining.seeds.seed is not None, "the joiner holds a verified Seed")
            assert joining.seeds.seed.holder == f and s in joining.seeds.seed.connections
            await _wait_until(lambda: s in joining.mesh.admitted_peers(), "the joiner reached the third member")
            await _wait_until(lambda: joining.seeds.adoption is not None and s in joining.seeds.adoption.connections,
                              "the joiner adopted the Seed's connection it confirmed itself")
            await _wait_until(lambda: joiner.ledger.is_member(j), "the joiner was admitted")
            await _wait_until(lambda: joining.seeds.checked is not None, "the Seed's head was checked against the chain")
            assert joining.seeds.checked == "agrees" and joining.rejected["seed_contradicted"] == 0
            assert joining.rejected["seed_invalid"] == (3 if forge else 0)
            status = joining.seeds.status()
            assert status["holder"] == f and status["listed"] >= 1 and status["confirmed"] >= 1
            assert joining.seeds.make() == b"" or joiner.ledger.head.role_of(j) in ("sclerotium", "rhizomorph")
            nursery.cancel_scope.cancel()
    finally:
        for node in (founder, second, joiner):
            node.close()


async def test_a_joiner_reaches_the_member_its_token_does_not_name_through_a_seed(tmp_path: Path) -> None:
    await _run(tmp_path, forge=False)


async def test_forged_seeds_are_dropped_and_counted_and_the_join_succeeds(tmp_path: Path) -> None:
    await _run(tmp_path, forge=True)


async def test_a_verified_chain_that_contradicts_the_seed_head_is_counted(tmp_path: Path) -> None:
    """A Seed's head is only a hint: checked against the verified chain once, a lie counted once."""
    from mycelium.spores.seed_exchange import SeedExchange

    founder = _node(tmp_path / "founder")
    founder.create_named_network("seed-net")
    try:
        session = SimpleNamespace(ledger=founder.ledger, key=founder.key, rejected=Counter())
        seeds = SeedExchange(session)
        other = Genesis(name="elsewhere", founder=founder.key.node_id, created_s=1_700_000_000)
        g = genesis_primary(other)  # a different Primary at height 0, as a lying holder would list
        seeds.seed = make_seed(founder.key, founder.membership.network_id,
                               CertifiedPrimary(g, certify_genesis(g, founder.key)), (), (), created_ms=1)
        seeds.check_head()
        assert seeds.checked == "contradicted" and session.rejected["seed_contradicted"] == 1
        seeds.check_head()  # checked once
        assert session.rejected["seed_contradicted"] == 1
        seeds.seed, seeds.checked = make_seed(founder.key, founder.membership.network_id, founder.ledger.chain.get(0),
                                              (), (), created_ms=1), None
        seeds.check_head()
        assert seeds.checked == "agrees" and session.rejected["seed_contradicted"] == 1
    finally:
        founder.close()


async def test_a_joiner_stops_asking_after_the_bound_and_still_joins(tmp_path: Path, monkeypatch) -> None:
    """A peer that only ever answers garbage costs the joiner MAX_SEED_ASKS requests, each counted."""
    from mycelium.spores import seed_exchange

    monkeypatch.setattr(seed_exchange, "MAX_SEED_ASKS", 3)
    founder = _node(tmp_path / "founder")
    founder.create_named_network("seed-net")
    joiner = _node(tmp_path / "joiner", join_token=_token(founder))
    f, j = founder.key.node_id, joiner.key.node_id
    net = MemoryNetwork()
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(NetworkSession(founder, net.transport(f), LOCAL).run)
            asked = []

            async def garbage(peer, data):
                asked.append(peer)
                return b"\x00garbage"

            net.transports[f].register_handler(RPC_SEED, garbage)
            joining = NetworkSession(joiner, net.transport(j), LOCAL)
            await nursery.start(joining.run)
            await _wait_until(lambda: joining.rejected["seed_invalid"] == 3, "three garbage Seeds were counted")
            await _wait_until(lambda: joiner.ledger.is_member(j), "the joiner was admitted without a Seed")
            await _wait_until(lambda: "seed" not in joining.failures.report() and len(asked) == 3
                              and joining.seeds.seed is None, "the Seed task gave up")
            await trio.sleep(3 * LOCAL.peers_interval_s)  # it does not ask again
            assert len(asked) == 3 and joining.rejected["seed_invalid"] == 3
            assert joining.seeds.status() is None
            nursery.cancel_scope.cancel()
    finally:
        founder.close()
        joiner.close()


async def test_a_seed_lists_at_most_the_bound_of_members(tmp_path: Path, monkeypatch) -> None:
    from mycelium.spores import seed_exchange

    founder, second, third = _three(tmp_path)
    net = MemoryNetwork()
    try:
        async with trio.open_nursery() as nursery:
            founding = NetworkSession(founder, net.transport(founder.key.node_id), LOCAL)
            await nursery.start(founding.run)
            for node in (second, third):
                await nursery.start(NetworkSession(node, net.transport(node.key.node_id), LOCAL).run)
            await _wait_until(lambda: len(founder.ledger.head.members) == 3, "three members")
            assert len(SeedSpore.from_bytes(founding.seeds.make()).connections) == 2
            monkeypatch.setattr(seed_exchange, "MAX_SEED_CONNECTIONS", 1)
            seed = SeedSpore.from_bytes(founding.seeds.make())
            assert len(seed.connections) == 1 and len(seed.observations) == 1
            nursery.cancel_scope.cancel()
    finally:
        for node in (founder, second, third):
            node.close()
