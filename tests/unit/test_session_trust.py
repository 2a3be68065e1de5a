"""Trust wired into a real NetworkSession (in-memory transport): the proposer's participation reports
enter the Primary, so the validator's trust rises from the prior as heights are decided."""

from __future__ import annotations

import pytest
import trio

from mycelium.consensus.trust import TrustConfig
from mycelium.ledger.trust_rules import TRUST_HEIGHT
from mycelium.session import NetworkSession
from mycelium.testing.transport import MemoryNetwork
from tests.unit.test_session_memory import JOIN_TIMEOUT_S, LOCAL, _node


def test_a_validator_that_precommits_gains_trust_in_the_primary(tmp_path):
    founder = _node(tmp_path / "founder")
    founder.create_named_network("trust-net")
    me = founder.key.node_id
    prior = TrustConfig().prior_ppm

    def trust() -> int:
        head = founder.ledger.head
        return head.members[me].trust_ppm if head is not None else prior

    async def main() -> None:
        net = MemoryNetwork()
        async with trio.open_nursery() as nursery:
            session = NetworkSession(founder, net.transport(me), LOCAL)
            await nursery.start(session.run)
            with trio.move_on_after(JOIN_TIMEOUT_S) as scope:
                while trust() < prior + 2 * TrustConfig().agree_gain_ppm:
                    await trio.sleep(0.05)
            nursery.cancel_scope.cancel()
        if scope.cancelled_caught:
            pytest.fail(f"trust stayed at {trust()} after {JOIN_TIMEOUT_S} s (height {founder.ledger.height})")

    try:
        trio.run(main)
    finally:
        founder.close()
    head = founder.ledger.head
    assert head.params[TRUST_HEIGHT] < head.height  # credited from a previous height's certificate
    assert len(founder.ledger.witness) >= 1  # the driver reported what it saw
