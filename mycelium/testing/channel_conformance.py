"""The conformance suite every `ChannelProvider` passes (modelled on trio's `_check_streams.py`).

    await check_channel(make_pair)

`make_pair()` returns an async context manager yielding a fresh `ChannelPair`: two admitted members
`a` and `b` of one network, plus ways to kill a node, to get a non-member and a member of another
network, and (where there is a wire) to flip one byte on it. Each check opens its own pair; the
context manager stops everything on exit. The checks are plain async functions raising
AssertionError, listed in CHECKS, so a test can parametrize over them; a check that cannot apply to
a provider (no wire to tamper with) raises `NotApplicable`.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

import trio

from mycelium.mesh.channel import MAX_MESSAGE_BYTES, ChannelClosed, ChannelError, ChannelRefused
from mycelium.testing.deadlines import hang_after

WAIT_S = 20.0  # longest wait for anything; generous for a loaded 2-core CI machine
BUFFER_BOUND = 160 * 1024 * 1024  # a sender blocked by a reader that never reads has queued at most this


class NotApplicable(Exception):
    """This check does not apply to this provider (the reason says why)."""


@dataclass
class ChannelPair:
    a: Any  # ChannelProvider of node a
    b: Any  # ChannelProvider of node b (a and b are admitted members of one network)
    a_id: str
    b_id: str
    kill: Callable[[str], Awaitable[None]]  # the node dies: its channels break with no goodbye
    outsider: Callable[[], Awaitable[Any]]  # a provider on a node that is no member of this network
    foreigner: Callable[[], Awaitable[Any]]  # a provider on a member of another network
    tamper: Callable[[int], Awaitable[None]] | None = None  # from now on, a's channels to b get one byte
    #   flipped at this offset of each connection a dials (None: the provider has no wire)


MakePair = Callable[[], AbstractAsyncContextManager[ChannelPair]]


async def _echo(peer: str, channel: Any) -> None:
    while True:
        await channel.send(await channel.receive())


def _messages(seed: int, count: int, max_size: int) -> list[bytes]:
    rng = random.Random(seed)
    out = []
    for i in range(count):
        size = rng.choice([0, 1, 2, 100, 4096, rng.randrange(max_size)])
        out.append(i.to_bytes(4, "big") + rng.randbytes(size))
    return out


async def check_order_and_content(make_pair: MakePair) -> None:
    """Messages of mixed sizes (chunk boundaries included) come back whole, intact, in order."""
    async with make_pair() as pair:
        pair.b.serve_channels("echo", _echo)
        channel = await pair.a.open_channel(pair.b_id, "echo")
        assert channel.peer == pair.b_id, f"channel.peer is {channel.peer!r}, expected {pair.b_id!r}"
        mib = 1024 * 1024
        messages = _messages(1, 120, 300_000) + [b"m" * (mib - 1), b"n" * mib, b"o" * (mib + 1), bytes(3 * mib + 7)]
        with hang_after(WAIT_S):
            async with trio.open_nursery() as nursery:
                async def send_all() -> None:
                    for m in messages:
                        await channel.send(m)
                nursery.start_soon(send_all)
                for i, expected in enumerate(messages):
                    got = await channel.receive()
                    assert got == expected, f"message {i}: got {len(got)} bytes, expected {len(expected)} (or other content)"
        await channel.aclose()


async def check_tiny_messages(make_pair: MakePair) -> None:
    """Thousands of empty and one-byte messages: none lost, merged or reordered."""
    count = 3000
    results: trio.MemorySendChannel[bytes]
    results, results_out = trio.open_memory_channel[bytes](1)

    async def digest_all(peer: str, channel: Any) -> None:
        h = hashlib.sha256()
        for _ in range(count):
            m = await channel.receive()
            h.update(len(m).to_bytes(4, "big") + m)
        await results.send(h.digest())

    async with make_pair() as pair:
        pair.b.serve_channels("digest", digest_all)
        channel = await pair.a.open_channel(pair.b_id, "digest")
        expected = hashlib.sha256()
        with hang_after(WAIT_S):
            for i in range(count):
                m = b"" if i % 3 == 0 else bytes([i % 256])
                expected.update(len(m).to_bytes(4, "big") + m)
                await channel.send(m)
            assert await results_out.receive() == expected.digest(), "tiny messages were lost, merged or reordered"
        await channel.aclose()


async def check_largest_message(make_pair: MakePair) -> None:
    """A message of exactly MAX_MESSAGE_BYTES passes; one byte more is refused locally, the channel lives on."""
    async def hash_each(peer: str, channel: Any) -> None:
        while True:
            await channel.send(hashlib.sha256(await channel.receive()).digest())

    async with make_pair() as pair:
        pair.b.serve_channels("hash", hash_each)
        channel = await pair.a.open_channel(pair.b_id, "hash")
        big = random.Random(2).randbytes(MAX_MESSAGE_BYTES)
        with hang_after(3 * WAIT_S):
            await channel.send(big)
            assert await channel.receive() == hashlib.sha256(big).digest(), "the largest message arrived altered"
        try:
            await channel.send(big + b"!")
        except ChannelClosed:
            raise AssertionError("an oversized message broke the channel instead of being refused") from None
        except ChannelError:
            pass
        else:
            raise AssertionError(f"a message of MAX_MESSAGE_BYTES + 1 = {MAX_MESSAGE_BYTES + 1} bytes was accepted")
        with hang_after(WAIT_S):
            await channel.send(b"still here")
            assert await channel.receive() == hashlib.sha256(b"still here").digest()
        await channel.aclose()


async def check_concurrent_channels(make_pair: MakePair) -> None:
    """Several channels at once, both directions, each keeps to its own messages."""
    async with make_pair() as pair:
        pair.a.serve_channels("echo", _echo)
        pair.b.serve_channels("echo", _echo)

        async def run_one(provider: Any, peer: str, seed: int) -> None:
            channel = await provider.open_channel(peer, "echo")
            messages = _messages(seed, 30, 200_000)
            async with trio.open_nursery() as nursery:
                async def send_all() -> None:
                    for m in messages:
                        await channel.send(m)
                nursery.start_soon(send_all)
                for i, expected in enumerate(messages):
                    assert await channel.receive() == expected, f"channel {seed}: message {i} wrong"
            await channel.aclose()

        with hang_after(2 * WAIT_S):
            async with trio.open_nursery() as nursery:
                for seed in range(5):
                    nursery.start_soon(run_one, pair.a, pair.b_id, 10 + seed)
                nursery.start_soon(run_one, pair.b, pair.a_id, 99)


async def check_back_pressure(make_pair: MakePair) -> None:
    """A reader that does not read stops the sender within a bounded amount of buffering; then all arrives."""
    release = trio.Event()
    got: list[bytes] = []
    done = trio.Event()
    count, size = 400, 1024 * 1024

    async def slow(peer: str, channel: Any) -> None:
        await release.wait()
        for _ in range(count):
            got.append((await channel.receive())[:8])
        done.set()

    async with make_pair() as pair:
        pair.b.serve_channels("slow", slow)
        channel = await pair.a.open_channel(pair.b_id, "slow")
        sent = 0
        payload = bytes(size - 8)

        async def send_all() -> None:
            nonlocal sent
            for i in range(count):
                await channel.send(i.to_bytes(8, "big") + payload)
                sent += size

        async with trio.open_nursery() as nursery:
            nursery.start_soon(send_all)
            with hang_after(WAIT_S):
                last = -1
                while sent != last and sent <= BUFFER_BOUND:  # until the sender stops making progress
                    last = sent
                    await trio.sleep(0.5)
            assert sent <= BUFFER_BOUND, f"the sender queued {sent} bytes nobody read (bound {BUFFER_BOUND})"
            assert sent < count * size, "everything was sent although nobody read: no back-pressure"
            release.set()
            with hang_after(3 * WAIT_S):
                await done.wait()
        assert got == [i.to_bytes(8, "big") for i in range(count)], "messages lost or reordered after back-pressure"
        await channel.aclose()


async def check_close_is_clean(make_pair: MakePair) -> None:
    """The peer gets every message sent before aclose, then ChannelClosed; both ends refuse further use."""
    report: trio.MemorySendChannel[Any]
    report, reports = trio.open_memory_channel[Any](10)

    async def collect(peer: str, channel: Any) -> None:
        received = []
        try:
            while True:
                received.append(await channel.receive())
        except ChannelClosed:
            await report.send(received)
        try:
            for _ in range(1000):
                await channel.send(b"after close")
                await trio.sleep(0.001)
        except ChannelClosed:
            await report.send("send refused")

    async with make_pair() as pair:
        pair.b.serve_channels("collect", collect)
        channel = await pair.a.open_channel(pair.b_id, "collect")
        sent = [b"one", b"", b"three" * 50_000]
        for m in sent:
            await channel.send(m)
        await channel.aclose()
        with hang_after(WAIT_S):
            assert await reports.receive() == sent, "messages sent before aclose were lost"
            assert await reports.receive() == "send refused", "sending on a channel the peer closed kept working"
        for attempt in (channel.send(b"x"), channel.receive()):
            try:
                await attempt
            except ChannelClosed:
                continue
            raise AssertionError("a closed channel still worked")


async def check_peer_dies(make_pair: MakePair) -> None:
    """When the peer dies mid-transfer, receive and send end in ChannelClosed, not a hang."""
    first = trio.Event()

    async def sink(peer: str, channel: Any) -> None:
        await channel.receive()
        first.set()
        await trio.sleep_forever()

    async with make_pair() as pair:
        pair.b.serve_channels("sink", sink)
        channel = await pair.a.open_channel(pair.b_id, "sink")
        await channel.send(b"hello")
        with hang_after(WAIT_S):
            await first.wait()
        await pair.kill(pair.b_id)
        with hang_after(WAIT_S):
            try:
                await channel.receive()
            except ChannelClosed:
                pass
            else:
                raise AssertionError("received a message from a dead peer")
            try:
                while True:
                    await channel.send(bytes(256 * 1024))
            except ChannelClosed:
                pass
        with hang_after(WAIT_S):
            await channel.aclose()


async def check_unserved_purpose_refused(make_pair: MakePair) -> None:
    async with make_pair() as pair:
        pair.b.serve_channels("echo", _echo)
        try:
            await pair.a.open_channel(pair.b_id, "nothing-here")
        except ChannelRefused:
            return
        raise AssertionError("a channel for a purpose the peer does not serve was opened")


async def _check_stranger_refused(make_pair: MakePair, which: str) -> None:
    served = []

    async def record(peer: str, channel: Any) -> None:
        served.append(peer)

    async with make_pair() as pair:
        pair.b.serve_channels("echo", record)
        stranger = await getattr(pair, which)()
        with hang_after(WAIT_S):
            try:
                await stranger.open_channel(pair.b_id, "echo")
            except ChannelRefused:
                pass
            else:
                raise AssertionError(f"the {which} opened a channel to a member")
        assert not served, f"a handler ran for the {which}"


async def check_non_member_refused(make_pair: MakePair) -> None:
    """A node that does not hold this network's secret gets no channel."""
    await _check_stranger_refused(make_pair, "outsider")


async def check_other_network_refused(make_pair: MakePair) -> None:
    """A member of another network gets no channel."""
    await _check_stranger_refused(make_pair, "foreigner")


async def check_tampered_byte_detected(make_pair: MakePair) -> None:
    """One flipped byte on the wire ends the channel; the altered message is never delivered."""
    outcome: trio.MemorySendChannel[str]
    outcome, outcomes = trio.open_memory_channel[str](4)
    message = random.Random(3).randbytes(3 * 1024 * 1024)

    async def check(peer: str, channel: Any) -> None:
        try:
            got = await channel.receive()
        except ChannelClosed:
            await outcome.send("closed")
            return
        await outcome.send("intact" if got == message else "altered")

    async with make_pair() as pair:
        if pair.tamper is None:
            applicable = False
        else:
            applicable = True
            await _tampered_transfer(pair, outcomes, check, message)
    if not applicable:  # raised outside the pair, so its nursery does not wrap it in a group
        raise NotApplicable("this provider has no wire to tamper with")


async def _tampered_transfer(pair: ChannelPair, outcomes: Any, handler: Any, message: bytes) -> None:
    assert pair.tamper is not None
    await pair.tamper(200_000)
    pair.b.serve_channels("check", handler)
    channel = await pair.a.open_channel(pair.b_id, "check", stripes=1)
    await channel.send(message)
    with hang_after(WAIT_S):
        result = await outcomes.receive()
    assert result == "closed", f"a tampered transfer was delivered ({result})"
    with hang_after(WAIT_S):
        try:
            while True:
                await channel.send(b"more")
                await trio.sleep(0.01)
        except ChannelClosed:
            pass


CHECKS = [
    check_order_and_content,
    check_tiny_messages,
    check_largest_message,
    check_concurrent_channels,
    check_back_pressure,
    check_close_is_clean,
    check_peer_dies,
    check_unserved_purpose_refused,
    check_non_member_refused,
    check_other_network_refused,
    check_tampered_byte_detected,
]


async def check_channel(make_pair: MakePair) -> None:
    """Every check in turn (a test would rather parametrize over CHECKS to see which one fails)."""
    for check in CHECKS:
        try:
            await check(make_pair)
        except NotApplicable:
            continue
