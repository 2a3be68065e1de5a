"""The membership handshake, peer blocking and rate limits (pure cores)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mycelium.encoding import canonical
from mycelium.identity import NodeKey
from mycelium.encoding import decode as decode_message
from mycelium.mesh.membership import (
    FailureReason,
    GateConfig,
    Handshake,
    HandshakeError,
    HandshakeState,
    Offense,
    PeerGate,
    RateLimitConfig,
    RateLimiter,
    ReplayGuard,
    Role,
)

NET = "ab" * 32
SECRET = bytes(range(32))
ALICE = NodeKey.from_seed(b"\x01" * 32).node_id
BOB = NodeKey.from_seed(b"\x02" * 32).node_id
CAROL = NodeKey.from_seed(b"\x03" * 32).node_id

nonces = st.binary(min_size=32, max_size=32)
secrets_ = st.binary(min_size=32, max_size=32)


def pair(
    *,
    secret_i: bytes = SECRET,
    secret_r: bytes = SECRET,
    net_i: str = NET,
    net_r: str = NET,
    nonce_i: bytes = b"\x11" * 32,
    nonce_r: bytes = b"\x22" * 32,
    guard_r: ReplayGuard | None = None,
) -> tuple[Handshake, Handshake]:
    initiator = Handshake(
        Role.INITIATOR, secret=secret_i, network_id=net_i, local=ALICE, remote=BOB, nonce=nonce_i
    )
    responder = Handshake(
        Role.RESPONDER,
        secret=secret_r,
        network_id=net_r,
        local=BOB,
        remote=ALICE,
        nonce=nonce_r,
        replay_guard=guard_r,
    )
    return initiator, responder


def run(initiator: Handshake, responder: Handshake) -> list[bytes]:
    """Shuttle messages until both sides are done; returns the transcript."""
    transcript = []
    msg: bytes | None = initiator.start()
    sides = [responder, initiator]
    turn = 0
    while msg is not None:
        transcript.append(msg)
        side = sides[turn % 2]
        if side.done:
            break
        msg = side.receive(msg)
        turn += 1
    return transcript


@settings(max_examples=100, deadline=None)
@given(secret=secrets_, nonce_i=nonces, nonce_r=nonces)
def test_same_secret_admits_both_sides(secret: bytes, nonce_i: bytes, nonce_r: bytes) -> None:
    if nonce_i == nonce_r:
        return  # a reflected nonce is refused; covered below
    i, r = pair(secret_i=secret, secret_r=secret, nonce_i=nonce_i, nonce_r=nonce_r)
    transcript = run(i, r)
    assert i.state is HandshakeState.ADMITTED and r.state is HandshakeState.ADMITTED
    assert len(transcript) == 4


@settings(max_examples=100, deadline=None)
@given(secret_i=secrets_, secret_r=secrets_)
def test_wrong_secret_fails_on_both_sides(secret_i: bytes, secret_r: bytes) -> None:
    if secret_i == secret_r:
        return
    i, r = pair(secret_i=secret_i, secret_r=secret_r)
    run(i, r)
    # the initiator checks the responder's MAC first, finds it wrong and refuses
    assert i.failure is FailureReason.BAD_PROOF
    assert r.state is HandshakeState.FAILED
    assert r.failure is FailureReason.REFUSED_BY_PEER and r.remote_reason == "bad_proof"


def test_initiator_with_wrong_secret_is_refused_by_responder() -> None:
    i, r = pair(secret_i=b"\x09" * 32)
    hello = i.start()
    challenge = r.receive(hello)
    assert challenge is not None
    # the initiator cannot verify the challenge; forge a proof that skips the check
    forged = canonical({"m": "proof", "mac": b"\x00" * 32})
    refusal = r.receive(forged)
    assert r.failure is FailureReason.BAD_PROOF
    assert decode_message(refusal, max_size=512) == {"m": "refused", "why": "bad_proof"}


def test_other_network_is_refused_with_reason() -> None:
    i, r = pair(net_i="cd" * 32)
    run(i, r)
    assert r.failure is FailureReason.WRONG_NETWORK
    assert i.failure is FailureReason.REFUSED_BY_PEER and i.remote_reason == "wrong_network"


def test_replayed_transcript_fails() -> None:
    """Record an honest initiator's messages, replay them to a fresh responder: its new nonce
    makes the old proof worthless."""
    i, r = pair()
    transcript = run(i, r)
    hello, _challenge, proof, _welcome = transcript
    fresh = Handshake(Role.RESPONDER, secret=SECRET, network_id=NET, local=BOB, remote=ALICE, nonce=b"\x33" * 32)
    assert fresh.receive(hello) is not None
    fresh.receive(proof)
    assert fresh.failure is FailureReason.BAD_PROOF


def test_replayed_nonce_is_refused_by_a_shared_guard() -> None:
    guard = ReplayGuard()
    i, r = pair(guard_r=guard)
    run(i, r)
    assert r.state is HandshakeState.ADMITTED
    i2, r2 = pair(guard_r=guard, nonce_r=b"\x44" * 32)  # same initiator nonce again
    run(i2, r2)
    assert r2.failure is FailureReason.REPLAYED_NONCE


def test_reflected_nonce_is_refused() -> None:
    i, r = pair(nonce_i=b"\x55" * 32, nonce_r=b"\x55" * 32)
    run(i, r)
    assert r.failure is FailureReason.REPLAYED_NONCE


def test_swapped_roles_fail() -> None:
    """The responder's MAC sent back as an initiator's proof (a reflection) does not verify."""
    i, r = pair()
    hello = i.start()
    challenge = r.receive(hello)
    mac_r = decode_message(challenge, max_size=512)["mac"]
    r.receive(canonical({"m": "proof", "mac": mac_r}))
    assert r.failure is FailureReason.BAD_PROOF


def test_swapped_peer_ids_fail() -> None:
    """Both sides must agree who initiated: a responder that thinks it is talking to Carol refuses."""
    i = Handshake(Role.INITIATOR, secret=SECRET, network_id=NET, local=ALICE, remote=BOB, nonce=b"\x11" * 32)
    r = Handshake(Role.RESPONDER, secret=SECRET, network_id=NET, local=BOB, remote=CAROL, nonce=b"\x22" * 32)
    run(i, r)
    assert i.failure is FailureReason.BAD_PROOF


@settings(max_examples=200, deadline=None)
@given(garbage=st.binary(max_size=600))
def test_garbage_never_crashes_and_fails(garbage: bytes) -> None:
    _, r = pair()
    reply = r.receive(garbage)
    assert r.state in (HandshakeState.FAILED, HandshakeState.AWAIT_PROOF)
    if r.state is HandshakeState.FAILED:
        assert reply is not None


@pytest.mark.parametrize(
    "message,reason",
    [
        ({"m": "hello", "v": 2, "net": NET, "n": b"\x01" * 32}, FailureReason.VERSION_MISMATCH),
        ({"m": "hello", "v": 1, "net": NET, "n": b"\x01" * 5}, FailureReason.MALFORMED),
        ({"m": "proof", "mac": b"\x01" * 32}, FailureReason.UNEXPECTED_MESSAGE),
        ([1, 2, 3], FailureReason.MALFORMED),
    ],
)
def test_bad_hello_reasons(message: object, reason: FailureReason) -> None:
    _, r = pair()
    r.receive(canonical(message))
    assert r.failure is reason


def test_api_misuse_raises() -> None:
    i, r = pair()
    with pytest.raises(HandshakeError):
        r.start()
    with pytest.raises(HandshakeError):
        i.receive(b"")
    with pytest.raises(HandshakeError):
        Handshake(Role.INITIATOR, secret=b"short", network_id=NET, local=ALICE, remote=BOB, nonce=b"\x01" * 32)
    run(*pair())
    done_i, done_r = pair()
    run(done_i, done_r)
    with pytest.raises(HandshakeError):
        done_r.receive(b"x")


# --------------------------------------------------------------------------- PeerGate


def test_failed_handshake_blocks_at_once_with_doubling_backoff() -> None:
    cfg = GateConfig(first_block_s=10, max_block_s=35, forgive_after_s=1000)
    gate = PeerGate(cfg)
    b1 = gate.record(ALICE, Offense.HANDSHAKE_FAILED, now=0)
    assert b1 is not None and b1.duration_s == 10 and gate.is_blocked(ALICE, 9.9)
    assert not gate.is_blocked(ALICE, 10) and not gate.is_blocked(BOB, 5)
    assert gate.record(ALICE, Offense.HANDSHAKE_FAILED, now=5) is None  # already blocked
    b2 = gate.record(ALICE, Offense.HANDSHAKE_FAILED, now=11)
    assert b2 is not None and b2.duration_s == 20 and b2.blocks == 2
    b3 = gate.record(ALICE, Offense.HANDSHAKE_FAILED, now=40)
    assert b3 is not None and b3.duration_s == 35  # capped
    assert gate.blocked_peers(41) == [ALICE]


def test_garbage_blocks_after_a_few_and_quiet_peers_are_forgiven() -> None:
    cfg = GateConfig(strike_limit=10, garbage_strikes=4, first_block_s=10, forgive_after_s=100)
    gate = PeerGate(cfg)
    assert gate.record(BOB, Offense.GARBAGE, 0) is None
    assert gate.record(BOB, Offense.GARBAGE, 1) is None
    assert gate.record(BOB, Offense.GARBAGE, 2) is not None
    # long quiet period: strikes and block level start from zero
    assert gate.record(BOB, Offense.GARBAGE, 500) is None
    assert gate.strikes(BOB) == 4
    assert gate.record(BOB, Offense.HANDSHAKE_FAILED, 501).duration_s == 10


@settings(max_examples=100, deadline=None)
@given(
    offenses=st.lists(
        st.tuples(st.sampled_from(list(Offense)), st.floats(min_value=0, max_value=50)), max_size=60
    )
)
def test_block_durations_never_shrink_without_forgiveness(offenses: list[tuple[Offense, float]]) -> None:
    cfg = GateConfig(first_block_s=1, max_block_s=64, forgive_after_s=10_000)
    gate = PeerGate(cfg)
    now, last = 0.0, 0.0
    for offense, dt in offenses:
        now += dt
        block = gate.record(ALICE, offense, now)
        if block is not None:
            assert block.duration_s >= last and block.duration_s <= 64
            assert gate.is_blocked(ALICE, now)
            last = block.duration_s


def test_gate_memory_is_bounded() -> None:
    gate = PeerGate(GateConfig(max_tracked_peers=3))
    for n in range(10):
        gate.record(f"peer{n}", Offense.GARBAGE, 0)
    assert gate.strikes("peer0") == 0 and gate.strikes("peer9") > 0


# --------------------------------------------------------------------------- RateLimiter


def test_bucket_allows_burst_then_refills() -> None:
    limiter = RateLimiter(RateLimitConfig(rate_per_s=2, burst=3))
    assert [limiter.allow(ALICE, 0) for _ in range(4)] == [True, True, True, False]
    assert limiter.allow(BOB, 0)  # buckets are per peer
    assert not limiter.allow(ALICE, 0.4)
    assert limiter.allow(ALICE, 0.5)  # one token back after 0.5 s at 2/s


@settings(max_examples=100, deadline=None)
@given(times=st.lists(st.floats(min_value=0, max_value=1), min_size=1, max_size=200))
def test_bucket_never_exceeds_rate_plus_burst(times: list[float]) -> None:
    cfg = RateLimitConfig(rate_per_s=5, burst=4)
    limiter = RateLimiter(cfg)
    now, allowed = 0.0, 0
    for dt in times:
        now += dt
        allowed += limiter.allow(ALICE, now)
    assert allowed <= cfg.burst + cfg.rate_per_s * now + 1e-9


def test_limiter_rejects_nonsense_config() -> None:
    with pytest.raises(ValueError):
        RateLimiter(RateLimitConfig(rate_per_s=0))
