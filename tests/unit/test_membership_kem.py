"""The membership handshake of a --pq network runs ML-KEM-768: its MACs are keyed with the network
secret and the KEM secret together; a Hello or Challenge without its KEM value is refused, saying
why; a swapped KEM value fails the proof; classic handshakes are unchanged."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from mycelium.api.dto import _failure_text
from mycelium.encoding import canonical, decode
from mycelium.mesh import membership_kem as kem
from mycelium.mesh.membership import MAX_HANDSHAKE_MESSAGE, FailureReason, Handshake, HandshakeState, Role
from tests.unit.test_mesh_membership import ALICE, BOB, NET, SECRET


def _pair(*, pq: bool = True, secret_i: bytes = SECRET, secret_r: bytes = SECRET,
          nonce_i: bytes = b"\x11" * 32, nonce_r: bytes = b"\x22" * 32, seed: bytes | None = None):
    i = Handshake(Role.INITIATOR, secret=secret_i, network_id=NET, local=ALICE, remote=BOB, nonce=nonce_i,
                  post_quantum=pq, kem_seed=seed)
    r = Handshake(Role.RESPONDER, secret=secret_r, network_id=NET, local=BOB, remote=ALICE, nonce=nonce_r,
                  post_quantum=pq)
    return i, r


def _edit(raw: bytes, **changes) -> bytes:
    msg = decode(raw)
    for key, value in changes.items():
        if value is None:
            msg.pop(key, None)
        else:
            msg[key] = value
    return canonical(msg)


def _finish(i: Handshake, r: Handshake, challenge: bytes) -> None:
    """Shuttle messages from the Challenge on until one side has nothing more to say."""
    msg, sides, turn = challenge, (i, r), 0
    while msg is not None and not sides[turn % 2].done:
        msg = sides[turn % 2].receive(msg)
        turn += 1


def test_a_pq_handshake_carries_the_kem_and_admits_both():
    i, r = _pair()
    hello = i.start()
    challenge = r.receive(hello)
    assert len(decode(hello)["ek"]) == kem.KEM_PUBLIC_SIZE and len(decode(challenge)["ct"]) == kem.KEM_CIPHERTEXT_SIZE
    assert max(len(hello), len(challenge)) <= MAX_HANDSHAKE_MESSAGE
    _finish(i, r, challenge)
    assert i.state is HandshakeState.ADMITTED and r.state is HandshakeState.ADMITTED


def test_the_classic_handshake_is_unchanged():
    i, r = _pair(pq=False)
    hello = i.start()
    assert set(decode(hello)) == {"m", "v", "net", "n"}
    challenge = r.receive(hello)
    assert set(decode(challenge)) == {"m", "n", "mac"}
    _finish(i, r, challenge)
    assert i.state is HandshakeState.ADMITTED and r.state is HandshakeState.ADMITTED


def test_a_hello_without_the_kem_is_refused_with_the_reason():
    i, r = _pair()
    refusal = r.receive(_edit(i.start(), ek=None))  # an old version, or stripped on the way
    assert r.failure is FailureReason.KEM_REQUIRED
    i.receive(refusal)
    assert i.failure is FailureReason.REFUSED_BY_PEER and i.remote_reason == "kem_required"
    assert "ML-KEM-768" in _failure_text(f"refused_by_peer:{i.remote_reason}")


def test_a_challenge_without_the_kem_is_refused():
    i, r = _pair()
    challenge = r.receive(i.start())
    refusal = i.receive(_edit(challenge, ct=None))
    assert i.failure is FailureReason.KEM_REQUIRED and decode(refusal)["why"] == "kem_required"


def test_a_swapped_kem_value_fails_the_proof():
    # a relay that puts its own key in the Hello: the responder encapsulates to the relay, so the
    # initiator's decapsulation gives another secret and the responder's MAC does not check
    i, r = _pair(seed=b"\x05" * 64)
    relay_key = kem.initiator_key(b"\x06" * 64)
    challenge = r.receive(_edit(i.start(), ek=kem.public(relay_key)))
    assert i.receive(challenge) is not None and i.failure is FailureReason.BAD_PROOF
    # a swapped ciphertext (to the initiator's real key, but not the responder's): the same
    i, r = _pair(seed=b"\x05" * 64)
    hello = i.start()
    challenge = r.receive(hello)
    _, other_ct = kem.respond(SECRET, decode(hello)["ek"])
    i.receive(_edit(challenge, ct=other_ct))
    assert i.failure is FailureReason.BAD_PROOF


def test_malformed_kem_values_are_malformed():
    i, r = _pair()
    r.receive(_edit(i.start(), ek=b"short"))
    assert r.failure is FailureReason.MALFORMED
    i, r = _pair()
    i.receive(_edit(r.receive(i.start()), ct=b"short"))
    assert i.failure is FailureReason.MALFORMED


@settings(max_examples=25, deadline=None)
@given(secret_i=st.binary(min_size=32, max_size=32), secret_r=st.binary(min_size=32, max_size=32),
       seed=st.binary(min_size=64, max_size=64), nonce_i=st.binary(min_size=32, max_size=32))
def test_pq_admission_iff_the_secrets_match(secret_i, secret_r, seed, nonce_i):
    i, r = _pair(secret_i=secret_i, secret_r=secret_r, seed=seed, nonce_i=nonce_i)
    _finish(i, r, r.receive(i.start()))
    admitted = i.state is HandshakeState.ADMITTED and r.state is HandshakeState.ADMITTED
    assert admitted == (secret_i == secret_r)


@settings(max_examples=50, deadline=None)
@given(secret=st.binary(min_size=32, max_size=32), shared=st.binary(min_size=32, max_size=32),
       other=st.binary(min_size=32, max_size=32), ek=st.binary(max_size=8), ct=st.binary(max_size=8))
def test_the_mac_key_depends_on_both_secrets_and_the_kem_values(secret, shared, other, ek, ct):
    key = kem.mac_key(secret, shared, ek, ct)
    assert key != secret and len(key) == 32
    if other != shared:
        assert kem.mac_key(secret, other, ek, ct) != key
    if other != secret:
        assert kem.mac_key(other, shared, ek, ct) != key
    assert kem.mac_key(secret, shared, ek + b"x", ct) != key and kem.mac_key(secret, shared, ek, ct + b"x") != key
