"""The data channel's reassembly: messages split into chunks, spread over k FIFO stripes, delivered
in any interleaving the window allows, come back whole and in order; hostile chunks are refused."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mycelium.mesh import channel_wire as wire
from mycelium.mesh.channel_wire import CLOSE, CLOSED, END, Reassembler, WireError

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch):
    monkeypatch.setattr(wire, "CHUNK_BYTES", 7)  # many chunks per message, cheap examples


@given(
    messages=st.lists(st.binary(max_size=40), max_size=25),
    stripes=st.integers(1, 4),
    window=st.integers(1, 6),
    picks=st.lists(st.integers(0, 3), max_size=400),
    order=st.lists(st.integers(0, 3), max_size=400),
)
@SETTINGS
def test_any_interleaving_reassembles_in_order(messages, stripes, window, picks, order):
    # the sender: one FIFO of chunks, each writer (stripe) takes the next one
    chunks, seq = [], 0
    for m in messages:
        parts = wire.split_message(m, seq)
        seq += len(parts)
        chunks += [(s, f, bytes(v)) for s, f, v in parts]
    chunks.append((seq, CLOSE, b""))
    lanes: list[list] = [[] for _ in range(stripes)]
    for i, chunk in enumerate(chunks):
        lanes[(picks[i] if i < len(picks) else i) % stripes].append(chunk)
    # the receiver: any stripe whose head the window admits may deliver next
    r = Reassembler(window=window, max_message=10_000)
    out: list = []
    step = 0
    while any(lanes):
        ready = [lane for lane in lanes if lane and r.admits(lane[0][0])]
        assert ready, "no stripe can make progress: the window deadlocked"
        lane = ready[(order[step] if step < len(order) else 0) % len(ready)]
        out += r.push(*lane.pop(0))
        assert r.pending <= window
        step += 1
    assert out == list(messages) + [CLOSED]


def test_duplicate_beyond_window_and_after_close_are_refused():
    r = Reassembler(window=2, max_message=100)
    assert r.push(0, 0, b"ab") == []
    with pytest.raises(WireError):
        r.push(0, END, b"x")  # twice
    with pytest.raises(WireError):
        r.push(5, END, b"x")  # beyond the window
    assert r.push(1, END, b"c") == [b"abc"]
    assert r.push(2, CLOSE, b"") == [CLOSED]
    with pytest.raises(WireError):
        r.push(3, END, b"late")


def test_a_message_over_the_limit_is_refused():
    r = Reassembler(window=4, max_message=10)
    r.push(0, 0, b"x" * 7)
    with pytest.raises(WireError):
        r.push(1, END, b"y" * 7)


def test_close_inside_a_message_is_refused():
    r = Reassembler(window=4, max_message=10)
    r.push(0, 0, b"half")
    with pytest.raises(WireError):
        r.push(1, CLOSE, b"")


@given(st.binary(min_size=wire.HEADER_BYTES, max_size=wire.HEADER_BYTES))
@SETTINGS
def test_header_decoding_never_crashes(raw):
    try:
        seq, flags, length = wire.decode_header(raw)
    except WireError:
        return
    assert length <= wire.CHUNK_BYTES and flags & ~(END | CLOSE | wire.STRIPE_END) == 0


@given(st.binary(max_size=600))
@SETTINGS
def test_open_messages_never_crash_on_garbage(raw):
    for kind in (wire.OpenRequest, wire.OpenAnswer):
        try:
            kind.decode(raw)
        except WireError:
            pass


def test_open_messages_round_trip():
    req = wire.OpenRequest("storage", 3, b"c" * 300, b"s" * 64)
    assert wire.OpenRequest.decode(req.encode()) == req
    ans = wire.OpenAnswer(port=4702, cert=b"d" * 300, sig=b"t" * 64, channel_id=b"i" * 16)
    assert wire.OpenAnswer.decode(ans.encode()) == ans
    assert wire.OpenAnswer.decode(wire.OpenAnswer(refused="busy").encode()).refused == "busy"
    label = wire.stripe_label(b"i" * 16, "d", 3)
    assert wire.parse_stripe_label(label) == (b"i" * 16, "d", 3)
    assert wire.parse_stripe_label("x" + label) is None and wire.parse_stripe_label(None) is None
