"""A classic node meeting a post-quantum network (or the reverse) is refused, saying why."""

from __future__ import annotations

import pytest

from mycelium.api.dto import _failure_text
from mycelium.identity import IdentityError, JoinToken, NodeKey, create_network, make_invite
from mycelium.mesh.membership import FailureReason, Handshake, HandshakeState, Role
from mycelium.signatures import Scheme

ALICE = NodeKey.from_seed(b"\x01" * 32)
BOB = NodeKey.from_seed(b"\x02" * 32)


def _pair(pq_i: bool, pq_r: bool, net_i: str = "ab" * 32, net_r: str = "cd" * 32):
    secret = bytes(32)
    i = Handshake(Role.INITIATOR, secret=secret, network_id=net_i, local=ALICE.node_id, remote=BOB.node_id,
                  nonce=b"\x11" * 32, post_quantum=pq_i)
    r = Handshake(Role.RESPONDER, secret=secret, network_id=net_r, local=BOB.node_id, remote=ALICE.node_id,
                  nonce=b"\x22" * 32, post_quantum=pq_r)
    return i, r


@pytest.mark.parametrize("pq_i, pq_r", [(True, False), (False, True)])
def test_scheme_mismatch_is_refused_and_named(pq_i, pq_r):
    i, r = _pair(pq_i, pq_r)
    refusal = r.receive(i.start())
    assert r.state is HandshakeState.FAILED and r.failure is FailureReason.SCHEME_MISMATCH
    assert i.receive(refusal) is None
    assert i.failure is FailureReason.REFUSED_BY_PEER and i.remote_reason == "scheme_mismatch"
    text = _failure_text(f"refused_by_peer:{i.remote_reason}")
    assert "post-quantum" in text and "classic" in text
    assert "post-quantum" in _failure_text("scheme_mismatch")


def test_two_pq_peers_of_one_network_are_admitted():
    i, r = _pair(True, True, net_r="ab" * 32)
    msg = i.start()
    while not (i.done and r.done):
        msg = r.receive(msg)
        if msg is None or i.done:
            break
        msg = i.receive(msg)
        if msg is None:
            break
    assert i.state is HandshakeState.ADMITTED and r.state is HandshakeState.ADMITTED


def test_a_pq_join_token_carries_the_scheme_and_fits_the_token_limit():
    genesis, secret = create_network("pq-lab", ALICE, pq=True)
    token = JoinToken(genesis, secret, ("/ip4/127.0.0.1/tcp/1",), make_invite(ALICE, genesis.network_id, ttl_s=60, uses=1))
    decoded = JoinToken.decode(token.encode())
    assert decoded.genesis.scheme is Scheme.HYBRID and decoded.network_id == genesis.network_id
    assert decoded.invite.verify_signature()


def test_an_unknown_scheme_says_upgrade():
    genesis, _ = create_network("pq-lab2", ALICE, pq=True)
    wire = {**genesis.to_wire(), "scheme": "ed25519+sphincs"}
    from mycelium.identity import Genesis

    with pytest.raises(IdentityError, match="upgrade mycelium"):
        Genesis.from_wire(wire)
