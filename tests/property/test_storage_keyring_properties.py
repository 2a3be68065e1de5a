"""Volume keys across rotations of the network secret (storage.keyring): chunks sealed before any
number of rotations open for every member and for a node joining afterwards; a node removed at a
rotation opens nothing written after it; the sealed past is authenticated and bounded."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mycelium.storage import chunks
from mycelium.storage.chunks import ChunkRef
from mycelium.storage.erasure import Scheme
from mycelium.storage.keyring import (MAX_GENERATIONS, MAX_PAST_BYTES, Keyring, KeyringError, KeyUnavailable,
                                      open_past, past_for_rotation, seal_past)
from mycelium.storage.sealing import SealError, VolumeKey

NET = "net-keyring"
secrets32 = st.binary(min_size=32, max_size=32)


@settings(max_examples=50, deadline=None)
@given(st.dictionaries(st.integers(0, 40), secrets32, max_size=12), secrets32, st.integers(41, 60))
def test_sealed_past_round_trips_and_opens_only_under_its_secret(past, secret, gen):
    blob = seal_past(past, secret, NET, gen)
    assert open_past(blob, secret, NET, gen) == past
    other = bytes(b ^ 1 for b in secret)
    for args in ((other, NET, gen), (secret, NET, gen + 1), (secret, "another-net", gen)):
        with pytest.raises(KeyringError):
            open_past(blob, *args)
    tampered = bytearray(blob)
    tampered[len(blob) // 2] ^= 0x40
    with pytest.raises(KeyringError):
        open_past(bytes(tampered), secret, NET, gen)


def _rotate(holder: Keyring, primary_past: bytes | None, primary_gen: int) -> tuple[bytes, bytes, int]:
    """What a rekeying validator does: draw a secret, seal everything it can recover under it."""
    new_secret, new_gen = os.urandom(32), primary_gen + 1
    blob = past_for_rotation(NET, held_generation=holder.generation, held_secret=holder.secrets()[holder.generation],
                             primary_past=primary_past, primary_generation=primary_gen,
                             new_secret=new_secret, new_generation=new_gen)
    return new_secret, new_gen, blob


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 6), st.data())
def test_data_from_every_generation_stays_readable_and_a_removed_node_reads_nothing_newer(rotations, data):
    gen0 = os.urandom(32)
    member = Keyring(NET, 0, gen0)  # stays a member throughout
    written: list[tuple[int, bytes, bytes]] = []  # (generation, plaintext, sealed)
    removed_at: dict[int, Keyring] = {}  # a node removed at rotation g keeps what it held before
    past, gen = None, 0
    for _ in range(rotations + 1):
        plain = data.draw(st.binary(max_size=64)) + bytes([gen])
        key = member.write("vol")
        assert key.generation == gen
        written.append((gen, plain, key.seal(plain)))
        if len(written) == rotations + 1:
            break
        removed = Keyring(NET, 0, gen0)
        for g, s in sorted(member.secrets().items())[1:]:
            removed.advance(g, s)
        removed_at[gen + 1] = removed
        secret, gen, past = _rotate(member, past, gen)
        member.advance(gen, secret)
    # a node that joins now holds only the latest secret (its token) and the Primary's sealed past
    joiner = Keyring(NET, gen, member.secrets()[gen])
    assert joiner.learn(past, gen) == gen
    for g, plain, sealed in written:
        assert joiner.read("vol", g).open(sealed) == plain
        assert member.read("vol", g).open(sealed) == plain
    for at, removed in removed_at.items():
        assert removed.learn(past, gen) == 0  # it lacks the secret the past is sealed under
        for s in removed.secrets().values():
            with pytest.raises(KeyringError):
                open_past(past, s, NET, gen)
        for g, plain, sealed in written:
            if g < at:
                assert removed.read("vol", g).open(sealed) == plain  # what it could read before
            else:
                with pytest.raises(KeyUnavailable):
                    removed.read("vol", g)
                for s in removed.secrets().values():  # no secret it holds opens a newer chunk
                    with pytest.raises(SealError):
                        VolumeKey.derive(s, NET, "vol", generation=g).open(sealed)


def test_a_rekeyer_that_cannot_open_the_past_carries_what_it_holds():
    held, new = os.urandom(32), os.urandom(32)
    blob = past_for_rotation(NET, held_generation=2, held_secret=held, primary_past=os.urandom(80),
                             primary_generation=2, new_secret=new, new_generation=3)
    assert open_past(blob, new, NET, 3) == {2: held}


def test_the_sealed_past_is_bounded_at_max_generations():
    past = {g: g.to_bytes(4, "big") * 8 for g in range(MAX_GENERATIONS + 5)}
    gen = MAX_GENERATIONS + 5
    blob = seal_past(past, b"s" * 32, NET, gen)
    assert len(blob) <= MAX_PAST_BYTES
    opened = open_past(blob, b"s" * 32, NET, gen)
    assert len(opened) == MAX_GENERATIONS and min(opened) == 5  # the oldest ones are what falls off
    with pytest.raises(KeyringError, match="wrong size"):
        open_past(b"x" * (MAX_PAST_BYTES + 1), b"s" * 32, NET, gen)


def test_learn_never_replaces_a_secret_already_held_and_needs_the_sealing_secret():
    s0, s1 = os.urandom(32), os.urandom(32)
    ring = Keyring(NET, 1, s1)
    assert ring.learn(seal_past({0: s0}, s1, NET, 1), 1) == 1
    assert ring.learn(seal_past({0: os.urandom(32), 1: os.urandom(32)}, s1, NET, 1), 1) == 0
    assert ring.secrets() == {0: s0, 1: s1}
    assert ring.learn(seal_past({0: s0}, s1, NET, 7), 7) == 0  # we do not hold generation 7's secret
    with pytest.raises(KeyringError, match="older"):
        ring.advance(0, s0)


def test_chunk_refs_record_the_generation_and_old_refs_still_decode():
    key0, key3 = VolumeKey.derive(b"a" * 32, NET, "vol"), VolumeKey.derive(b"b" * 32, NET, "vol", generation=3)
    ref0, _ = chunks.prepare(key0, b"before", Scheme(1, 2))
    ref3, _ = chunks.prepare(key3, b"after", Scheme(1, 2))
    assert ref0.gen == 0 and len(ref0.to_wire()) == 6  # byte-identical to refs written before rotations
    assert ref3.gen == 3 and ChunkRef.from_wire(ref3.to_wire()) == ref3
    for bad in (0, -1, True, "3"):
        with pytest.raises(ValueError, match="generation"):
            ChunkRef.from_wire([*ref3.to_wire()[:6], bad])
    # the derivation of generation 0 is the one volumes were always sealed with
    assert VolumeKey.derive(b"a" * 32, NET, "vol", generation=0).aead_key == key0.aead_key
