"""The data channel's post-quantum inner layer (pure): the key schedule binds everything in the
transcript and separates the directions; sealed chunks open only unaltered, at their own seq, under
their own direction's key; nonces never repeat; the framing of sealed chunks is checked; classic
open messages are byte for byte what they were."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mycelium.encoding import canonical
from mycelium.mesh import channel_pq as pq
from mycelium.mesh import channel_wire as wire
from mycelium.mesh.channel_wire import CLOSE, END, STRIPE_END, TAG_BYTES, WireError

SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])

transcripts = st.builds(
    pq.Transcript,
    network_id=st.text(min_size=1, max_size=20),
    channel_id=st.binary(min_size=16, max_size=16),
    opener=st.text(min_size=1, max_size=12),
    acceptor=st.text(min_size=1, max_size=12),
    opener_cert=st.binary(min_size=1, max_size=40),
    acceptor_cert=st.binary(min_size=1, max_size=40),
    ek=st.binary(min_size=1, max_size=40),
    ct=st.binary(min_size=1, max_size=40),
)
secrets32 = st.binary(min_size=32, max_size=32)
seqs = st.integers(0, 2**64 - 1)
data_flags = st.sampled_from([0, END])


@given(shared=secrets32, t=transcripts)
@SETTINGS
def test_both_ends_derive_mirrored_keys_and_the_directions_differ(shared, t):
    keys = pq.schedule(shared, t)
    opener_send, opener_receive = keys.for_opener()
    acceptor_send, acceptor_receive = keys.for_acceptor()
    assert opener_send == acceptor_receive and opener_receive == acceptor_send
    assert keys.up.key != keys.down.key and keys.up.iv != keys.down.iv
    assert len(keys.up.key) == 32 and len(keys.up.iv) == 12


@given(shared=secrets32, other=secrets32, t=transcripts, field=st.sampled_from(
    [f.name for f in dataclasses.fields(pq.Transcript)]), data=st.data())
@SETTINGS
def test_every_transcript_field_and_the_secret_change_the_keys(shared, other, t, field, data):
    keys = pq.schedule(shared, t)
    old = getattr(t, field)
    new = data.draw((st.text(max_size=20) if isinstance(old, str) else st.binary(max_size=40)).filter(lambda v: v != old))
    assert pq.schedule(shared, dataclasses.replace(t, **{field: new})) != keys
    if other != shared:
        assert pq.schedule(other, t) != keys


@given(iv=st.binary(min_size=12, max_size=12), a=seqs, b=seqs)
@SETTINGS
def test_nonces_are_distinct_for_distinct_seqs(iv, a, b):
    assert (pq.nonce(iv, a) == pq.nonce(iv, b)) == (a == b)
    assert len(pq.nonce(iv, a)) == 12


@given(shared=secrets32, t=transcripts, seq=seqs, flags=data_flags, payload=st.binary(max_size=300))
@SETTINGS
def test_a_sealed_chunk_opens_to_its_payload_and_its_framing_checks(shared, t, seq, flags, payload):
    send, receive = pq.schedule(shared, t).for_opener()
    header, body = pq.ChunkSealer(send).seal(seq, flags, payload)
    assert wire.decode_header(header, TAG_BYTES) == (seq, flags, len(payload) + TAG_BYTES)
    assert len(body) == len(payload) + TAG_BYTES and (len(payload) < 8 or payload not in body)
    _, acceptor_receive = pq.schedule(shared, t).for_acceptor()
    assert pq.ChunkOpener(acceptor_receive).open(seq, flags, body) == payload


@given(shared=secrets32, t=transcripts, seq=seqs, flags=data_flags, payload=st.binary(max_size=200), data=st.data())
@SETTINGS
def test_any_alteration_fails_the_inner_tag(shared, t, seq, flags, payload, data):
    keys = pq.schedule(shared, t)
    _, body = pq.ChunkSealer(keys.up).seal(seq, flags, payload)
    opener = pq.ChunkOpener(keys.up)
    kind = data.draw(st.sampled_from(["bit", "seq", "flags", "truncate", "direction"]))
    args = [seq, flags, body]
    if kind == "bit":
        i = data.draw(st.integers(0, len(body) - 1))
        args[2] = body[:i] + bytes([body[i] ^ (1 << data.draw(st.integers(0, 7)))]) + body[i + 1 :]
    elif kind == "seq":  # a chunk replayed or moved to another place in the stream
        args[0] = data.draw(seqs.filter(lambda s: s != seq))
    elif kind == "flags":  # END forged or removed, or the chunk turned into a CLOSE
        args[1] = data.draw(st.sampled_from([0, END, CLOSE, END | CLOSE]).filter(lambda f: f != flags))
    elif kind == "truncate":
        args[2] = body[: data.draw(st.integers(0, len(body) - 1))]
    else:  # reflected back to its sender: the other direction's key
        opener = pq.ChunkOpener(keys.down)
    with pytest.raises(WireError, match="inner layer"):
        opener.open(*args)


def test_sealed_framing_bounds():
    big = wire.CHUNK_BYTES
    assert wire.decode_header(wire.encode_header(0, END, big + TAG_BYTES), TAG_BYTES)[2] == big + TAG_BYTES
    assert wire.decode_header(wire.encode_header(3, CLOSE, TAG_BYTES), TAG_BYTES) == (3, CLOSE, TAG_BYTES)
    assert wire.decode_header(wire.encode_header(0, STRIPE_END, 0), TAG_BYTES) == (0, STRIPE_END, 0)
    for seq, flags, length, tag in [(0, END, big + TAG_BYTES + 1, TAG_BYTES), (0, END, TAG_BYTES - 1, TAG_BYTES),
                                    (1, CLOSE, 0, TAG_BYTES), (1, CLOSE, TAG_BYTES, 0), (0, STRIPE_END, TAG_BYTES, TAG_BYTES),
                                    (0, END, big + 1, 0)]:
        with pytest.raises(WireError):
            wire.decode_header(wire.encode_header(seq, flags, length), tag)


def test_kem_agrees_and_refuses_wrong_sizes():
    offer = pq.KemOffer()
    shared, ct = pq.encapsulate(offer.public)
    assert len(offer.public) == wire.KEM_PUBLIC_BYTES and len(ct) == wire.KEM_CIPHERTEXT_BYTES
    assert offer.shared(ct) == shared
    assert pq.KemOffer().shared(ct) != shared  # another key pair: ML-KEM's implicit rejection
    for bad in (offer.public[:-1], b""):
        with pytest.raises(WireError):
            pq.encapsulate(bad)
    with pytest.raises(WireError):
        offer.shared(ct[:-1])


def test_classic_open_messages_are_unchanged_and_pq_ones_round_trip():
    req = wire.OpenRequest("storage", 2, b"c" * 300, b"s" * 64)
    assert req.encode() == canonical({"v": 1, "purpose": "storage", "stripes": 2, "cert": b"c" * 300, "sig": b"s" * 64})
    ans = wire.OpenAnswer(port=4702, cert=b"d" * 300, sig=b"t" * 64, channel_id=b"i" * 16)
    assert ans.encode() == canonical({"v": 1, "port": 4702, "cert": b"d" * 300, "sig": b"t" * 64, "id": b"i" * 16})
    pq_req = dataclasses.replace(req, sig=b"s" * 3373, kem=b"k" * wire.KEM_PUBLIC_BYTES)
    assert wire.OpenRequest.decode(pq_req.encode()) == pq_req
    pq_ans = dataclasses.replace(ans, sig=b"t" * 3373, ct=b"x" * wire.KEM_CIPHERTEXT_BYTES)
    assert wire.OpenAnswer.decode(pq_ans.encode()) == pq_ans
    with pytest.raises(WireError):
        wire.OpenRequest.decode(dataclasses.replace(pq_req, kem=b"k" * 10).encode())
    with pytest.raises(WireError):
        wire.OpenAnswer.decode(dataclasses.replace(pq_ans, ct=b"x" * 10).encode())


def test_the_bindings_cover_the_kem_values():
    ek, ct = b"e" * wire.KEM_PUBLIC_BYTES, b"c" * wire.KEM_CIPHERTEXT_BYTES
    assert pq.open_binding("n", b"cert", ek) != pq.open_binding("n", b"cert", ek[:-1] + b"x")
    assert pq.open_binding("n", b"cert", ek) != wire.binding_payload("n", b"cert")
    base = pq.answer_binding("n", b"cert", b"i" * 16, ct, ek)
    assert base != pq.answer_binding("n", b"cert", b"i" * 16, ct[:-1] + b"x", ek)
    assert base != pq.answer_binding("n", b"cert", b"i" * 16, ct, ek[:-1] + b"x")
    assert base != pq.answer_binding("n", b"cert", b"j" * 16, ct, ek)
