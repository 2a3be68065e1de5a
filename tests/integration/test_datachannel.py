"""The data channel: the mesh's TLS channel (classic, and with the post-quantum inner layer of a --pq
network) and the in-memory one pass one conformance suite; the TLS listener refuses strangers at the
handshake; a PQ channel detects a byte altered inside TLS and refuses an open without ML-KEM."""

from __future__ import annotations

import secrets
import socket
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio

from mycelium.identity import NodeKey
from mycelium.mesh.channel import ChannelClosed, ChannelRefused
from mycelium.mesh.channel_tls import make_certificate, pinned_context
from mycelium.mesh.channel_wire import stripe_label
from mycelium.mesh.config import MeshConfig
from mycelium.mesh.host import Mesh, MeshError
from mycelium.testing.mesh import wait_until
from mycelium.testing.channel_conformance import CHECKS, ChannelPair, NotApplicable
from mycelium.testing.channels import MemoryChannelNetwork
from mycelium.signatures import NETWORK_SCHEMES, PQ_KEYS, Scheme


async def _tamper_proxy(target: tuple[str, int], offset: int, *, task_status: trio.TaskStatus) -> None:
    """TCP proxy to `target` flipping one bit at `offset` of what each client sends."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")

    async def pump(src: trio.SocketStream, dst: trio.SocketStream, flip_at: int | None) -> None:
        pos = 0
        try:
            async for data in src:
                if flip_at is not None and pos <= flip_at < pos + len(data):
                    changed = bytearray(data)
                    changed[flip_at - pos] ^= 0x01
                    data = bytes(changed)
                pos += len(data)
                await dst.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await trio.aclose_forcefully(dst)

    async def handle(client: trio.SocketStream) -> None:
        server = await trio.open_tcp_stream(*target)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pump, client, server, offset)
            nursery.start_soon(pump, server, client, None)

    task_status.started(("127.0.0.1", listeners[0].socket.getsockname()[1]))
    await trio.serve_listeners(handle, listeners)


def _pq_network(keys: list[NodeKey]) -> str:
    """A --pq network's id with its members' ML-DSA keys pinned, as its genesis and Primary would."""
    network_id = f"pq-{secrets.token_hex(4)}"
    NETWORK_SCHEMES.bind(network_id, Scheme.HYBRID)
    for key in keys:
        PQ_KEYS.pin(network_id, key.node_id, key.pq_public)
    return network_id


@asynccontextmanager
async def tls_pair(*, pq: bool = False, **overrides: object) -> AsyncIterator[ChannelPair]:
    cfg = MeshConfig.local(**overrides)
    keys = [NodeKey.generate(), NodeKey.generate()]
    network_id = _pq_network(keys) if pq else f"net-{secrets.token_hex(4)}"
    secret = secrets.token_bytes(32)
    scopes: dict[str, trio.CancelScope] = {}
    stopped: dict[str, trio.Event] = {}
    async with trio.open_nursery() as nursery:

        async def run(mesh: Mesh, *, task_status: trio.TaskStatus) -> None:
            stopped[mesh.node_id] = trio.Event()
            try:
                with trio.CancelScope() as scopes[mesh.node_id]:
                    await mesh.run(task_status=task_status)
            finally:
                stopped[mesh.node_id].set()

        async def start(net: str, sec: bytes, key: NodeKey | None = None) -> Mesh:
            mesh = Mesh(cfg, key or NodeKey.generate(), net, sec)
            await nursery.start(run, mesh)
            return mesh

        a, b = await start(network_id, secret, keys[0]), await start(network_id, secret, keys[1])
        await a.connect(b.listen_addresses()[0])
        await wait_until(lambda: b.node_id in a.admitted_peers() and a.node_id in b.admitted_peers(), timeout_s=20)

        async def kill(node_id: str) -> None:
            scopes[node_id].cancel()
            await stopped[node_id].wait()

        async def stranger(net: str, sec: bytes) -> Mesh:
            mesh = await start(net, sec)
            try:
                await mesh.connect(b.listen_addresses()[0])
            except MeshError:
                pass  # refused, as it should be; the channel must be refused too
            return mesh

        async def tamper(offset: int) -> None:
            assert b.channels.port is not None
            a.channels.dial_overrides[b.node_id] = await nursery.start(
                _tamper_proxy, ("127.0.0.1", b.channels.port), offset)

        try:
            yield ChannelPair(
                a=a, b=b, a_id=a.node_id, b_id=b.node_id, kill=kill,
                outsider=lambda: stranger(network_id, secrets.token_bytes(32)),
                foreigner=lambda: stranger(f"net-{secrets.token_hex(4)}", secrets.token_bytes(32)),
                tamper=tamper,
            )
        finally:
            nursery.cancel_scope.cancel()


@asynccontextmanager
async def memory_pair() -> AsyncIterator[ChannelPair]:
    async with trio.open_nursery() as nursery:
        net = MemoryChannelNetwork(nursery)
        a, b = net.provider("node-a"), net.provider("node-b")

        async def kill(node_id: str) -> None:
            net.kill(node_id)

        async def elsewhere(name: str) -> object:
            return MemoryChannelNetwork(nursery).provider(name)

        try:
            yield ChannelPair(a=a, b=b, a_id="node-a", b_id="node-b", kill=kill,
                              outsider=lambda: elsewhere("outsider"), foreigner=lambda: elsewhere("foreigner"))
        finally:
            nursery.cancel_scope.cancel()


@asynccontextmanager
async def tls_pq_pair() -> AsyncIterator[ChannelPair]:
    async with tls_pair(pq=True) as pair:
        yield pair


PAIRS = {"tls": tls_pair, "tls-pq": tls_pq_pair, "memory": memory_pair}


# the PQ channel's back-pressure check repeats the classic one with sealing on (8 s): a long variant
SLOW = {("tls-pq", "check_back_pressure")}
CASES = [pytest.param(provider, check, id=f"{provider}-{check.__name__}",
                      marks=[pytest.mark.slow] if (provider, check.__name__) in SLOW else [])
         for provider in PAIRS for check in CHECKS]


@pytest.mark.parametrize("provider, check", CASES)
async def test_channel_conformance(provider, check):
    try:
        await check(PAIRS[provider])
    except NotApplicable as exc:
        pytest.skip(f"{provider}: {exc}")


@pytest.mark.parametrize("stripes", [1, 3])
async def test_tls_striping_keeps_order(stripes):
    async with tls_pair() as pair:
        async def echo(peer, channel):
            while True:
                await channel.send(await channel.receive())
        pair.b.serve_channels("echo", echo)
        channel = await pair.a.open_channel(pair.b_id, "echo", stripes=stripes)
        messages = [bytes([i]) * (i * 150_000) for i in range(20)]
        async with trio.open_nursery() as nursery:
            async def send_all():
                for m in messages:
                    await channel.send(m)
            nursery.start_soon(send_all)
            for m in messages:
                assert await channel.receive() == m
        await channel.aclose()
        await wait_until(lambda: pair.a.channels.open_count == 0 and pair.b.channels.open_count == 0, timeout_s=10)


def _raw_tls_attempt(port: int, label: str, pinned_der: bytes) -> str:
    """A stranger's TLS client with its own fresh certificate; returns how it ended."""
    ctx = pinned_context(False, make_certificate(), pinned_der)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        try:
            with ctx.wrap_socket(raw, server_hostname=label) as tls:
                tls.sendall(b"x")
                return "refused" if tls.recv(1) == b"" else "accepted"
        except (ssl.SSLError, OSError):
            return "refused"


async def test_tls_listener_refuses_a_stranger_even_with_a_live_channel_id():
    """Knowing a channel id (it travels in clear in the SNI) is not enough: the certificate is pinned."""
    async with tls_pair() as pair:
        b = pair.b
        gate = trio.Event()

        async def hold(peer, channel):
            await gate.wait()
        b.serve_channels("hold", hold)
        # a real pending open request from a, whose connections have not arrived yet
        from mycelium.mesh.channel_wire import OpenAnswer, OpenRequest
        a = pair.a
        request = OpenRequest("hold", 1, a.channels._identity().der, a.channels._signature())
        answer = OpenAnswer.decode(await a.request(b.node_id, "channel", request.encode(), timeout_s=10))
        assert answer.refused is None
        before = b.counters.channel_refused
        for label in (stripe_label(answer.channel_id, "u", 0), stripe_label(bytes(16), "u", 0), "junk"):
            assert await trio.to_thread.run_sync(_raw_tls_attempt, b.channels.port, label, answer.cert) == "refused"
        await wait_until(lambda: b.counters.channel_refused >= before + 3, timeout_s=10)
        gate.set()


async def test_open_refused_when_the_peer_is_unknown():
    async with tls_pair() as pair:
        with pytest.raises(ChannelRefused):
            await pair.a.open_channel(NodeKey.generate().node_id, "echo")


# --------------------------------------------------------------------------- post-quantum channels


async def _hold(peer, channel):
    await trio.sleep_forever()


async def test_pq_channel_is_sealed_and_classic_is_not():
    async with tls_pair(pq=True) as pq, tls_pair() as classic:
        for pair, sealed in ((pq, True), (classic, False)):
            pair.b.serve_channels("echo", _hold)
            channel = await pair.a.open_channel(pair.b_id, "echo")
            assert (channel.sealing is not None) is sealed
            await wait_until(lambda p=pair: p.b.channels.open_count == 1, timeout_s=10)
            inbound = next(iter(pair.b.channels._open))
            assert (inbound.sealing is not None) is sealed
            if sealed:  # each end sends with the key the other receives with, and the directions differ
                assert channel.sealing.send == inbound.sealing.receive
                assert channel.sealing.receive == inbound.sealing.send
                assert channel.sealing.send != channel.sealing.receive
            await channel.aclose()


async def test_pq_inner_layer_detects_a_byte_altered_inside_tls(monkeypatch):
    """TLS carries the altered chunk faithfully (the flip happens before TLS sees it): only the inner
    layer can notice, and it ends the channel without delivering the message."""
    from mycelium.mesh import channel_pq

    real_seal = channel_pq.ChunkSealer.seal

    def flipping_seal(self, seq, flags, payload):
        header, body = real_seal(self, seq, flags, payload)
        if seq == 1:
            changed = bytearray(body)
            changed[len(changed) // 2] ^= 0x01
            body = bytes(changed)
        return header, body

    monkeypatch.setattr(channel_pq.ChunkSealer, "seal", flipping_seal)
    outcome, outcomes = trio.open_memory_channel[str](2)
    message = secrets.token_bytes(3 * 1024 * 1024)  # chunks 0, 1, 2: chunk 1 is altered

    async def check(peer, channel):
        try:
            got = await channel.receive()
        except ChannelClosed as exc:
            await outcome.send(f"closed: {exc}")
            return
        await outcome.send("intact" if got == message else "altered")

    async with tls_pair(pq=True) as pair:
        pair.b.serve_channels("check", check)
        channel = await pair.a.open_channel(pair.b_id, "check", stripes=1)
        await channel.send(message)
        with trio.fail_after(60):
            result = await outcomes.receive()
        assert result.startswith("closed") and "inner layer: chunk 1 failed authentication" in result, result


async def _refusal_of(pair: ChannelPair, request) -> str:
    from mycelium.mesh.channel_wire import OpenAnswer

    answer = OpenAnswer.decode(await pair.a.request(pair.b_id, "channel", request.encode(), timeout_s=30))
    assert answer.refused is not None, "an open without ML-KEM was accepted in a post-quantum network"
    return answer.refused


async def test_pq_open_without_kem_is_refused_with_the_reason():
    from mycelium.mesh.channel_pq import KemOffer, open_binding
    from mycelium.mesh.channel_wire import OpenRequest

    async with tls_pair(pq=True) as pair:
        served = []

        async def record(peer, channel):
            served.append(peer)

        pair.b.serve_channels("echo", record)
        a, net = pair.a, pair.a.network_id
        cert = a.channels._identity().der
        # a peer that skips the KEM: what a version without it sends (a valid hybrid signature)
        skipped = OpenRequest("echo", 1, cert, a.channels._signature())
        # the KEM stripped on the way from a request signed with it
        offer = KemOffer()
        signed = OpenRequest("echo", 1, cert, a.channels._node_key.sign_for(net, open_binding(net, cert, offer.public)),
                             kem=offer.public)
        stripped = OpenRequest(signed.purpose, signed.stripes, signed.cert, signed.sig)
        before = pair.b.counters.channel_refused
        for request in (skipped, stripped):
            why = await _refusal_of(pair, request)
            assert "post-quantum" in why and "ML-KEM-768" in why, why
        assert pair.b.counters.channel_refused == before + 2
        assert not served and pair.b.channels._pending == {}


async def test_pq_answer_without_kem_is_refused_by_the_opener():
    from mycelium.mesh.channel_wire import OpenAnswer

    async with tls_pair(pq=True) as pair:
        pair.b.serve_channels("echo", _hold)
        real = pair.b.rpc._handlers["channel"]

        async def strip_ct(peer, data):
            answer = OpenAnswer.decode(await real(peer, data))
            return OpenAnswer(port=answer.port, cert=answer.cert, sig=answer.sig, channel_id=answer.channel_id).encode()

        pair.b.rpc._handlers["channel"] = strip_ct
        with pytest.raises(ChannelRefused, match="post-quantum.*ML-KEM-768"):
            await pair.a.open_channel(pair.b_id, "echo")
        assert pair.a.channels.open_count == 0
