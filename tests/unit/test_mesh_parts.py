"""Pure parts of the mesh: protocol ids, redial backoff, peer book, frames, peer-exchange parsing."""

from __future__ import annotations

import random

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from mycelium.encoding import canonical
from mycelium.identity import NodeKey
from mycelium.mesh.counters import MeshCounters
from mycelium.mesh.discovery import AddressError, parse_exchange, split_p2p_address
from mycelium.mesh.framing import FrameError, read_frame, write_frame
from mycelium.mesh.peers import MAX_ADDRESSES_PER_PEER, PeerBook
from mycelium.mesh.protocols import NetworkProtocols, ProtocolNameError
from mycelium.mesh.redial import RedialSchedule
from mycelium.mesh.rpc import BadRequest

NET = "0123456789abcdef" + "f" * 48
NODE = NodeKey.from_seed(b"\x05" * 32).node_id


def test_protocol_ids_and_topics_carry_the_short_network_id() -> None:
    p = NetworkProtocols(NET)
    assert p.membership == "/mycelium/0123456789abcdef/membership/1.0.0"
    assert p.rpc("snapshot") == "/mycelium/0123456789abcdef/rpc/snapshot/1.0.0"
    assert p.topic("latent") == "mycelium/0123456789abcdef/latent"
    assert p.rpc_name(p.rpc("snapshot")) == "snapshot"
    assert p.rpc_name(NetworkProtocols("9" * 64).rpc("snapshot")) is None
    for bad in ["", "Upper", "a/b", "x" * 65, "../up"]:
        with pytest.raises(ProtocolNameError):
            p.rpc(bad)


@settings(max_examples=100, deadline=None)
@given(outcomes=st.lists(st.booleans(), max_size=30), seed=st.integers(0, 2**32))
def test_redial_delays_double_with_jitter_and_reset_on_success(outcomes: list[bool], seed: int) -> None:
    sched = RedialSchedule(base_s=1, max_s=60, jitter=0.2, rng=random.Random(seed))
    now, failures = 0.0, 0
    for failed in outcomes:
        if failed:
            failures += 1
            delay = sched.failed("p", now)
            nominal = min(60, 2 ** (failures - 1))
            assert nominal * 0.8 <= delay <= nominal * 1.2
            assert not sched.due("p", now + delay * 0.99) and sched.due("p", now + delay)
            now += delay
        else:
            sched.succeeded("p")
            failures = 0
            assert sched.due("p", now) and sched.failures("p") == 0


def test_a_new_address_allows_one_attempt_now_without_forgetting_the_failures() -> None:
    sched = RedialSchedule(base_s=1, max_s=60, jitter=0.0, rng=random.Random(1))
    for _ in range(5):
        sched.failed("p", 0.0)  # backoff 16 s now
    assert not sched.due("p", 1.0)
    sched.new_address("p")
    assert sched.due("p", 1.0) and sched.failures("p") == 5
    assert sched.failed("p", 1.0) == 32  # that attempt failed too: the backoff went on growing
    sched.new_address("never-failed")
    assert sched.due("never-failed", 0.0) and sched.failures("never-failed") == 0


def test_redial_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        RedialSchedule(base_s=0, max_s=1, jitter=0, rng=random.Random(1))


def test_peer_book_bounds_addresses_and_evicts_strangers_first() -> None:
    book = PeerBook(max_peers=3)
    member = book.get("m")
    member.member = True
    member.add_addresses([f"/ip4/10.0.0.{i}/tcp/1" for i in range(40)])
    assert len(member.addresses) == MAX_ADDRESSES_PER_PEER and member.addresses[-1] == "/ip4/10.0.0.39/tcp/1"
    assert not member.add_addresses(["/ip4/10.0.0.39/tcp/1"])
    for name in "abcd":
        book.get(name)
    assert book.find("m") is not None and len(book.records()) <= 3


def test_split_p2p_address() -> None:
    assert split_p2p_address(f"/ip4/127.0.0.1/tcp/4701/p2p/{NODE}") == (NODE, "/ip4/127.0.0.1/tcp/4701")
    with pytest.raises(AddressError, match="/p2p/"):
        split_p2p_address("/ip4/127.0.0.1/tcp/4701")
    with pytest.raises(AddressError, match="not a multiaddr"):
        split_p2p_address("hello")


def test_parse_exchange_accepts_good_and_refuses_bad() -> None:
    good = canonical([{"id": NODE, "addrs": ["/ip4/127.0.0.1/tcp/1", "nonsense"]}])
    assert parse_exchange(good, 8) == [(NODE, ["/ip4/127.0.0.1/tcp/1"])]
    for bad in [
        b"\xc1",
        canonical({"id": NODE}),
        canonical([{"id": "nobody", "addrs": []}]),
        canonical([{"id": NODE, "addrs": "x"}]),
        canonical([{"id": NODE, "addrs": [1]}]),
        canonical([{"id": NODE, "addrs": []}] * 9),
    ]:
        with pytest.raises(BadRequest):
            parse_exchange(bad, 8)


@settings(max_examples=150, deadline=None)
@given(data=st.binary(max_size=2000))
def test_parse_exchange_never_crashes(data: bytes) -> None:
    try:
        parse_exchange(data, 8)
    except BadRequest:
        pass


class FakeStream:
    """A one-way in-memory stream that returns short reads, like yamux."""

    def __init__(self, data: bytes = b"", chunk: int = 7) -> None:
        self.buffer = bytearray(data)
        self.chunk = chunk

    async def write(self, data: bytes) -> None:
        self.buffer += data

    async def read(self, n: int | None = None) -> bytes:
        await trio.lowlevel.checkpoint()
        if not self.buffer:
            raise EOFError
        take = min(n or self.chunk, self.chunk)
        out, self.buffer[:take] = bytes(self.buffer[:take]), b""
        return out


async def test_frames_round_trip_with_short_reads() -> None:
    stream = FakeStream()
    payloads = [b"", b"x", bytes(range(256)) * 500]
    for p in payloads:
        await write_frame(stream, p, max_size=1 << 20)
    for p in payloads:
        assert await read_frame(stream, max_size=1 << 20) == p
    with pytest.raises(FrameError) as closed:
        await read_frame(stream, max_size=10)
    assert closed.value.kind == "closed" and not closed.value.is_peer_fault


async def test_frame_errors_are_classified() -> None:
    with pytest.raises(FrameError) as too_large:
        await read_frame(FakeStream((11).to_bytes(4, "big") + b"x" * 11), max_size=10)
    assert too_large.value.kind == "too_large" and too_large.value.is_peer_fault
    with pytest.raises(FrameError) as truncated:
        await read_frame(FakeStream((5).to_bytes(4, "big") + b"abc"), max_size=10)
    assert truncated.value.kind == "truncated"
    with pytest.raises(ValueError):
        await write_frame(FakeStream(), b"x" * 11, max_size=10)


def test_counters_snapshot_is_flat() -> None:
    c = MeshCounters()
    c.garbage += 2
    c.handshake_failed_by_reason["bad_proof"] += 1
    snap = c.snapshot()
    assert snap["garbage"] == 2 and snap["handshake_failed_bad_proof"] == 1
    assert all(isinstance(v, int) for v in snap.values())


def test_taken_port_falls_back_or_fails_clearly() -> None:
    import socket

    from mycelium.mesh.ports import PortTaken, claim_listen_addresses

    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        taken = (f"/ip4/127.0.0.1/tcp/{port}",)
        addrs, warnings = claim_listen_addresses(taken, fallback=True)
        assert addrs == ["/ip4/127.0.0.1/tcp/0"] and str(port) in warnings[0]
        with pytest.raises(PortTaken, match="--listen"):
            claim_listen_addresses(taken, fallback=False)
    finally:
        holder.close()
    assert claim_listen_addresses((f"/ip4/127.0.0.1/tcp/{port}",), fallback=False) == (
        [f"/ip4/127.0.0.1/tcp/{port}"],
        [],
    )


def test_wildcard_addresses_are_advertised_per_interface() -> None:
    from mycelium.mesh.ports import advertised_addresses

    bound = ["/ip4/0.0.0.0/tcp/4701", "/ip6/::/tcp/4701", "/ip4/10.1.2.3/tcp/9"]
    assert advertised_addresses(bound, ["192.0.2.7", "10.1.2.3"], []) == [
        "/ip4/192.0.2.7/tcp/4701",
        "/ip4/10.1.2.3/tcp/4701",
        "/ip6/::1/tcp/4701",
        "/ip4/10.1.2.3/tcp/9",
    ]
    assert advertised_addresses(["/ip4/0.0.0.0/tcp/1"], [], []) == ["/ip4/127.0.0.1/tcp/1"]
