"""Bulk transfer: the mesh's data channel (1 and k stripes) beside its floors, all in one run.

Method (in-process, loopback; both ends in one Python process, as the figures in the issue were
taken): one sender pushes `mib` MiB in 1 MiB messages to one receiver that counts them; throughput
= bytes / time from the first send to the receiver's last byte. Figures, in the order measured:

    transfer_plain_tcp        trio TCP stream, send_all / receive_some(1 MiB): the floor
    transfer_aead_chacha20    ChaCha20-Poly1305 sealing 1 MiB blocks, one core (cryptography)
    transfer_aead_aes128gcm   AES-128-GCM sealing 1 MiB blocks, one core (what TLS 1.3 may pick)
    transfer_libp2p_stream    one py-libp2p stream (Noise + Yamux) between two meshes: rpc requests
                              of 16 MiB (max_request_bytes), each on its own stream
    transfer_datachannel_<k>  mesh.open_channel(stripes=k) between the same two meshes (TLS 1.3)
    transfer_datachannel_pq_<k>  the same between two meshes of a --pq network: ML-KEM-768 in the
                              signed open, every chunk sealed again (ChaCha20-Poly1305) inside TLS;
                              measured right after the classic figure of the same k, in pairs
                              (classic, pq, pq, classic …) so load drifts hit both alike
    transfer_plain_tcp_2proc, transfer_datachannel_2proc_<k>
                              the same TCP floor and channel with the receiver in its own process
                              (bench/transfer_peer.py), as two nodes run them; the channel's
                              baseline is the two-process TCP of the same run

Each channel and libp2p figure has plain TCP as its baseline and its ratio in params; the target
(issue 15) is a data channel at ≥ 50 % of plain TCP. A PQ figure's baseline is the classic channel
of the same k and run (its mean over the rounds).
"""

from __future__ import annotations

import os
import secrets
import time

import trio

from bench.report import Figure, baseline, note, rounded

MIB = 1024 * 1024


def measure(*, mib: int = 256, stripes: tuple[int, ...] = (1, 2, 4), libp2p_mib: int = 32, pq_rounds: int = 2) -> list[Figure]:
    figs = trio.run(_measure, mib, stripes, min(libp2p_mib, mib), pq_rounds)
    return figs + trio.run(_two_processes, mib, stripes)


async def _two_processes(mib: int, stripes: tuple[int, ...]) -> list[Figure]:
    """The receiver in its own process (bench/transfer_peer.py), as two nodes run: plain TCP, then the
    data channel at each k, each twice in alternation (tcp, channel…, channel…, tcp) against load drift."""
    import subprocess
    import sys

    from mycelium.identity import NodeKey
    from mycelium.mesh.config import MeshConfig
    from mycelium.mesh.host import open_mesh
    from mycelium.testing.mesh import wait_until

    network_id, secret = f"bench-{secrets.token_hex(4)}", secrets.token_bytes(32)
    peer = subprocess.Popen([sys.executable, "-m", "bench.transfer_peer", network_id, secret.hex()],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        line = await trio.to_thread.run_sync(peer.stdout.readline)
        if not line:
            raise RuntimeError(f"bench.transfer_peer exited ({peer.wait()}) before it printed its address")
        node_id, address, port = line.split()
        async with open_mesh(MeshConfig.local(), NodeKey.generate(), network_id, secret) as mesh:
            await mesh.connect(address)
            await wait_until(lambda: node_id in mesh.admitted_peers(), timeout_s=30)

            async def tcp() -> float:
                stream = await trio.open_tcp_stream("127.0.0.1", int(port))
                block = os.urandom(MIB)
                start = time.perf_counter()
                await stream.send_all((mib * MIB).to_bytes(8, "big"))
                for _ in range(mib):
                    await stream.send_all(block)
                answer = b""
                while len(answer) < 4 and (chunk := await stream.receive_some(4 - len(answer))):
                    answer += chunk
                if answer != b"done":
                    raise RuntimeError(f"the TCP sink answered {answer!r}, not b'done'")
                elapsed = time.perf_counter() - start
                await stream.aclose()
                return mib * MIB / elapsed / 1e6

            async def channel(k: int) -> float:
                note(f"transfer: two processes, data channel, {k} stripe(s), {mib} MiB")
                ch = await mesh.open_channel(node_id, "bench-sink", stripes=k)
                return await timed_send(ch, mib, (mib * MIB).to_bytes(8, "big"))

            note(f"transfer: two processes, plain TCP, {mib} MiB")
            tcp_rates = [await tcp()]
            rates = {k: [await channel(k)] for k in stripes}
            for k in reversed(stripes):
                rates[k].append(await channel(k))
            tcp_rates.append(await tcp())
    finally:
        if peer.stdin is not None:
            peer.stdin.close()
        try:
            peer.wait(timeout=10)
        except subprocess.TimeoutExpired:
            peer.kill()
            peer.wait()
    tcp_mean = sum(tcp_rates) / len(tcp_rates)
    method = ("two processes: the receiver is bench/transfer_peer.py (its own interpreter and GIL), the "
              "sender this process; each figure the mean of two rounds in alternation")
    figs = [Figure("transfer_plain_tcp_2proc", rounded(tcp_mean, 1), "MB/s",
                   {"mib": mib, "message_mib": 1, "rounds": [rounded(v, 1) for v in tcp_rates], "method": method})]
    floor = baseline("plain_tcp_2proc", rounded(tcp_mean, 1), "MB/s")
    for k in stripes:
        value = sum(rates[k]) / len(rates[k])
        figs.append(_channel_figure(f"transfer_datachannel_2proc_{k}", value, k, mib, tcp_mean, floor,
                                    rounds=[rounded(v, 1) for v in rates[k]], method=method))
    return figs


async def _measure(mib: int, stripes: tuple[int, ...], libp2p_mib: int, pq_rounds: int) -> list[Figure]:
    figs: list[Figure] = []
    note(f"transfer: plain TCP, {mib} MiB")
    tcp = await _plain_tcp(mib)
    figs.append(Figure("transfer_plain_tcp", rounded(tcp, 1), "MB/s", {"mib": mib, "message_mib": 1}))
    floor = baseline("plain_tcp", rounded(tcp, 1), "MB/s")
    for name, fn in (("chacha20", _chacha), ("aes128gcm", _aesgcm)):
        value = await trio.to_thread.run_sync(fn, mib)
        figs.append(Figure(f"transfer_aead_{name}", rounded(value, 1), "MB/s", {"mib": mib, "block_mib": 1}))
    from mycelium.signatures import PQ_KEYS
    from mycelium.testing.mesh import open_meshes

    async with open_meshes(2, f"bench-{secrets.token_hex(4)}", secrets.token_bytes(32)) as (a, b):
        await _connect(a, b)
        note(f"transfer: one py-libp2p stream, {libp2p_mib} MiB")
        value = await _libp2p(a, b, libp2p_mib)
        figs.append(Figure("transfer_libp2p_stream", rounded(value, 1), "MB/s",
                           {"mib": libp2p_mib, "request_mib": min(16, libp2p_mib), "ratio_to_tcp": rounded(value / tcp, 3)}, floor))
        b.serve_channels("bench-sink", _sink)
        if pq_rounds < 1:
            for k in stripes:
                value = await _channel_rate(a, b, k, mib)
                figs.append(_channel_figure(f"transfer_datachannel_{k}", value, k, mib, tcp, floor))
            return figs
        async with open_meshes(2, _pq_network(), secrets.token_bytes(32)) as (pa, pb):
            for mesh in (pa, pb):  # pinned as the genesis and a certified Primary would pin them
                PQ_KEYS.pin(pa.network_id, mesh.node_id, mesh.channels._node_key.pq_public)
            await _connect(pa, pb)
            pb.serve_channels("bench-sink", _sink)
            for k in stripes:
                rates: dict[bool, list[float]] = {False: [], True: []}
                for r in range(pq_rounds):
                    for pq in ((False, True) if r % 2 == 0 else (True, False)):
                        rates[pq].append(await _channel_rate(pa if pq else a, pb if pq else b, k, mib, pq))
                classic = sum(rates[False]) / len(rates[False])
                pq_value = sum(rates[True]) / len(rates[True])
                figs.append(_channel_figure(f"transfer_datachannel_{k}", classic, k, mib, tcp, floor,
                                            rounds=[rounded(v, 1) for v in rates[False]]))
                figs.append(_channel_figure(f"transfer_datachannel_pq_{k}", pq_value, k, mib, tcp,
                                            baseline(f"transfer_datachannel_{k}", rounded(classic, 1), "MB/s"),
                                            rounds=[rounded(v, 1) for v in rates[True]],
                                            ratio_to_classic=rounded(pq_value / classic, 3)))
    return figs


async def _connect(a, b) -> None:  # noqa: ANN001
    from mycelium.testing.mesh import wait_until

    await a.connect(b.listen_addresses()[0])
    await wait_until(lambda: b.node_id in a.admitted_peers() and a.node_id in b.admitted_peers(), timeout_s=30)


def _pq_network() -> str:
    from mycelium.signatures import NETWORK_SCHEMES, Scheme

    network_id = f"bench-pq-{secrets.token_hex(4)}"
    NETWORK_SCHEMES.bind(network_id, Scheme.HYBRID)
    return network_id


async def _sink(peer: str, channel) -> None:  # noqa: ANN001
    expected = int.from_bytes(await channel.receive(), "big")
    got = 0
    while got < expected:
        got += len(await channel.receive())
    await channel.send(b"done")


async def _channel_rate(a, b, k: int, mib: int, pq: bool = False) -> float:  # noqa: ANN001
    note(f"transfer: data channel{' (pq)' if pq else ''}, {k} stripe(s), {mib} MiB")
    channel = await a.open_channel(b.node_id, "bench-sink", stripes=k)
    assert (channel.sealing is not None) is pq
    return await timed_send(channel, mib, (mib * MIB).to_bytes(8, "big"))


async def timed_send(channel, mib: int, first: bytes | None = None) -> float:  # noqa: ANN001
    """MB/s of `mib` 1 MiB messages (after `first`, if any) until the peer answers b"done"; closes."""
    message = os.urandom(MIB)
    start = time.perf_counter()
    if first is not None:
        await channel.send(first)
    for _ in range(mib):
        await channel.send(message)
    assert await channel.receive() == b"done"
    elapsed = time.perf_counter() - start
    await channel.aclose()
    return mib * MIB / elapsed / 1e6


def _channel_figure(name: str, value: float, k: int, mib: int, tcp: float, base: dict, **extra: object) -> Figure:
    return Figure(name, rounded(value, 1), "MB/s", {"mib": mib, "stripes": k, "message_mib": 1,
                                                    "ratio_to_tcp": rounded(value / tcp, 3), "target_ratio": 0.5,
                                                    **extra}, base)


async def _plain_tcp(mib: int) -> float:
    got = 0
    done = trio.Event()

    async def handler(stream: trio.SocketStream) -> None:
        nonlocal got
        while got < mib * MIB:
            data = await stream.receive_some(MIB)
            if not data:
                break
            got += len(data)
        done.set()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(trio.serve_tcp, handler, 0)
        port = listeners[0].socket.getsockname()[1]
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        block = os.urandom(MIB)
        start = time.perf_counter()
        for _ in range(mib):
            await stream.send_all(block)
        await done.wait()
        elapsed = time.perf_counter() - start
        await stream.aclose()
        nursery.cancel_scope.cancel()
    return mib * MIB / elapsed / 1e6


def _seal_rate(aead, mib: int) -> float:  # noqa: ANN001
    block = os.urandom(MIB)
    nonce = bytes(12)
    start = time.perf_counter()
    for i in range(mib):
        aead.encrypt(i.to_bytes(12, "big") if i else nonce, block, None)
    return mib * MIB / (time.perf_counter() - start) / 1e6


def _chacha(mib: int) -> float:
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

    return _seal_rate(ChaCha20Poly1305(ChaCha20Poly1305.generate_key()), mib)


def _aesgcm(mib: int) -> float:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    return _seal_rate(AESGCM(AESGCM.generate_key(bit_length=128)), mib)


async def _libp2p(a, b, mib: int) -> float:  # noqa: ANN001
    size = min(16, mib) * MIB

    async def swallow(peer: str, data: bytes) -> bytes:
        return len(data).to_bytes(8, "big")

    b.register_handler("bench-swallow", swallow)
    payload = os.urandom(size)
    start = time.perf_counter()
    sent = 0
    while sent < mib * MIB:
        answer = await a.request(b.node_id, "bench-swallow", payload, timeout_s=300)
        assert int.from_bytes(answer, "big") == size
        sent += size
    return sent / (time.perf_counter() - start) / 1e6
