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


def _gen_pair(gen_i: int, secret_i: bytes, accepted_r: dict[int, bytes], gen_r: int):
    i = Handshake(Role.INITIATOR, secret=secret_i, network_id="ab" * 32, local=ALICE.node_id, remote=BOB.node_id,
                  nonce=b"\x31" * 32, generation=gen_i)
    r = Handshake(Role.RESPONDER, secret=accepted_r[gen_r], network_id="ab" * 32, local=BOB.node_id,
                  remote=ALICE.node_id, nonce=b"\x42" * 32, generation=gen_r, accepted=accepted_r)
    return i, r


def _run(i, r):
    msg = i.start()
    for side in (r, i, r, i):
        if msg is None or side.done:
            break
        msg = side.receive(msg)
    return i, r


OLD, NEW = b"\x01" * 32, b"\x02" * 32


def test_after_a_rekey_the_old_secret_is_refused_as_revoked():
    i, r = _run(*_gen_pair(0, OLD, {1: NEW}, 1))
    assert r.failure is FailureReason.SECRET_REVOKED and i.remote_reason == "secret_revoked"
    assert "rotated" in _failure_text("secret_revoked")


def test_during_the_overlap_a_member_may_still_prove_the_previous_secret():
    i, r = _run(*_gen_pair(0, OLD, {1: NEW, 0: OLD}, 1))
    assert i.state is HandshakeState.ADMITTED and r.state is HandshakeState.ADMITTED and r.peer_generation == 0


def test_a_peer_ahead_of_us_is_told_so_and_both_new_secrets_admit():
    i, r = _run(*_gen_pair(2, NEW, {1: OLD}, 1))
    assert r.failure is FailureReason.SECRET_AHEAD
    i, r = _run(*_gen_pair(1, NEW, {1: NEW}, 1))
    assert i.state is HandshakeState.ADMITTED and r.peer_generation == 1


def test_the_old_secret_cannot_be_claimed_under_the_new_generation():
    i, r = _run(*_gen_pair(1, OLD, {1: NEW}, 1))
    assert HandshakeState.FAILED in (i.state, r.state) and FailureReason.BAD_PROOF in (i.failure, r.failure)
