"""The data channel: the mesh's TLS channel and the in-memory one pass one conformance suite; the TLS
listener refuses strangers at the handshake."""

from __future__ import annotations

import secrets
import socket
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio

from mycelium.identity import NodeKey
from mycelium.mesh.channel import ChannelRefused
from mycelium.mesh.channel_tls import make_certificate, pinned_context
from mycelium.mesh.channel_wire import stripe_label
from mycelium.mesh.config import MeshConfig
from mycelium.mesh.host import Mesh, MeshError
from mycelium.testing.mesh import wait_until
from mycelium.testing.channel_conformance import CHECKS, ChannelPair, NotApplicable
from mycelium.testing.channels import MemoryChannelNetwork


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


@asynccontextmanager
async def tls_pair(**overrides: object) -> AsyncIterator[ChannelPair]:
    cfg = MeshConfig.local(**overrides)
    network_id, secret = f"net-{secrets.token_hex(4)}", secrets.token_bytes(32)
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

        async def start(net: str, sec: bytes) -> Mesh:
            mesh = Mesh(cfg, NodeKey.generate(), net, sec)
            await nursery.start(run, mesh)
            return mesh

        a, b = await start(network_id, secret), await start(network_id, secret)
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


PAIRS = {"tls": tls_pair, "memory": memory_pair}


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("provider", list(PAIRS))
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
