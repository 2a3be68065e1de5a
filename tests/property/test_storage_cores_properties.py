"""Properties of the storage cores: coding survives any n − k losses, tampering is caught, placement is
deterministic and moves only what must move."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mycelium.storage import chunks, erasure, placement
from mycelium.storage.chunks import ShareMismatch
from mycelium.storage.erasure import Scheme
from mycelium.storage.sealing import SealError, VolumeKey

KEY = VolumeKey.derive(b"s" * 32, "net-1", "vol")


@st.composite
def schemes(draw):
    n = draw(st.integers(1, 8))
    k = draw(st.integers(1, n))
    return Scheme(k, n)


@settings(max_examples=150, deadline=None)
@given(data=st.binary(max_size=5000), scheme=schemes(), seed=st.randoms(use_true_random=False))
def test_decode_after_losing_any_n_minus_k_shares(data, scheme, seed):
    ref, shares = chunks.prepare(KEY, data, scheme)
    kept = seed.sample(range(scheme.n), scheme.k)  # any n − k lost
    assert chunks.recover(KEY, ref, {i: shares[i] for i in kept}) == data


def test_every_k_subset_decodes_for_3_of_5():
    data = bytes(range(256)) * 41
    ref, shares = chunks.prepare(KEY, data, Scheme(3, 5))
    for kept in itertools.combinations(range(5), 3):
        assert chunks.recover(KEY, ref, {i: shares[i] for i in kept}) == data


@settings(max_examples=100, deadline=None)
@given(data=st.binary(min_size=1, max_size=3000), scheme=schemes(), pick=st.data())
def test_a_tampered_share_is_detected(data, scheme, pick):
    ref, shares = chunks.prepare(KEY, data, scheme)
    index = pick.draw(st.integers(0, scheme.n - 1))
    share = bytearray(shares[index])
    pos = pick.draw(st.integers(0, len(share) - 1))
    share[pos] ^= pick.draw(st.integers(1, 255))
    with pytest.raises(ShareMismatch):
        chunks.verify_share(ref, index, bytes(share))
    others = [i for i in range(scheme.n) if i != index][: scheme.k - 1]
    with pytest.raises(ShareMismatch):
        chunks.recover(KEY, ref, {index: bytes(share), **{i: shares[i] for i in others}})


def test_rebuilt_shares_equal_the_originals():
    data = b"x" * 300_000
    ref, shares = chunks.prepare(KEY, data, Scheme(3, 5))
    rebuilt = chunks.rebuild(ref, {1: shares[1], 3: shares[3], 4: shares[4]}, (0, 2))
    assert rebuilt == {0: shares[0], 2: shares[2]}


def test_sealed_chunks_bind_key_and_volume():
    sealed = KEY.seal(b"secret")
    assert KEY.open(sealed) == b"secret"
    assert b"secret" not in sealed
    with pytest.raises(SealError):
        VolumeKey.derive(b"s" * 32, "net-1", "other").open(sealed)
    with pytest.raises(SealError):
        VolumeKey.derive(b"t" * 32, "net-1", "vol").open(sealed)
    admin = VolumeKey.from_admin_key(b"a" * 32, "vol")
    with pytest.raises(SealError):
        admin.open(sealed)
    flipped = bytearray(sealed)
    flipped[-1] ^= 1
    with pytest.raises(SealError):
        KEY.open(bytes(flipped))
    # synthetic nonce: same plaintext, same volume → same chunk id (dedup, idempotent re-put)
    assert KEY.seal(b"secret") == sealed


def test_scheme_refuses_nonsense():
    with pytest.raises(erasure.ErasureError):
        Scheme(3, 2)
    with pytest.raises(erasure.ErasureError):
        Scheme(0, 2)


devices_st = st.lists(st.text("abcdef0123", min_size=3, max_size=8), min_size=1, max_size=12, unique=True)


@settings(max_examples=200, deadline=None)
@given(devices=devices_st, chunk=st.binary(min_size=32, max_size=32), n=st.integers(1, 6), seed=st.randoms(use_true_random=False))
def test_placement_deterministic_and_one_share_per_device(devices, chunk, n, seed):
    shuffled = list(devices)
    seed.shuffle(shuffled)
    a = placement.initial_placement(chunk, devices, n)
    assert a == placement.initial_placement(chunk, shuffled, n)
    assert len(set(a.values())) == len(a) == min(n, len(devices))


@settings(max_examples=200, deadline=None)
@given(devices=devices_st, chunk=st.binary(min_size=32, max_size=32), n=st.integers(1, 6), pick=st.data())
def test_placement_moves_only_what_must_move(devices, chunk, n, pick):
    before = set(placement.holder_set(chunk, devices, n))
    gone = pick.draw(st.sampled_from(devices))
    after = set(placement.holder_set(chunk, [d for d in devices if d != gone], n))
    if gone in before:
        assert before - after == {gone} and len(after - before) <= 1
    else:
        assert after == before
    newcomer = pick.draw(st.text("xyz", min_size=9, max_size=9))
    grown = set(placement.holder_set(chunk, [*devices, newcomer], n))
    assert grown - before <= {newcomer} and len(before - grown) <= 1


def test_choose_scheme_replicates_on_small_networks():
    assert placement.choose_scheme(1) == Scheme(1, 1)
    assert placement.choose_scheme(5) == Scheme(1, 3)
    assert placement.choose_scheme(7) == Scheme(3, 5)


def test_repair_targets_never_reuse_a_holder():
    devs = [f"d{i}" for i in range(8)]
    chunk = b"c" * 32
    t = placement.repair_targets(chunk, devs, 5, occupied=devs[:6], count=3)
    assert set(t) <= set(devs[6:]) and len(t) == 2
