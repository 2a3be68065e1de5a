"""The receiving end of bench/transfer.py's two-process figures, as its own Python process.

    python -m bench.transfer_peer <network_id> <secret hex>

Opens one mesh (MeshConfig.local()) of that network, serves the "bench-sink" data channel and a
plain TCP sink, prints one line `<node id> <mesh address> <tcp port>` on stdout, and runs until its
stdin closes. The sinks are the in-process figures' own (`_sink` for the channel; the TCP sink reads
`receive_some(1 MiB)` until it has the 8-byte length it was told and answers b"done"), so the two
layouts differ only in where the receiver runs: here, in a process with its own GIL, as nodes run."""

from __future__ import annotations

import sys
from functools import partial

import trio

MIB = 1024 * 1024


async def _tcp_sink(stream: trio.SocketStream) -> None:
    header = b""
    while len(header) < 8:
        chunk = await stream.receive_some(8 - len(header))
        if not chunk:
            return
        header += chunk
    expected, got = int.from_bytes(header, "big"), 0
    while got < expected:
        data = await stream.receive_some(MIB)
        if not data:
            return
        got += len(data)
    await stream.send_all(b"done")


async def main(network_id: str, secret: bytes) -> None:
    from bench.transfer import _sink
    from mycelium.identity import NodeKey
    from mycelium.mesh.config import MeshConfig
    from mycelium.mesh.host import open_mesh

    async with open_mesh(MeshConfig.local(), NodeKey.generate(), network_id, secret) as mesh:
        mesh.serve_channels("bench-sink", _sink)
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(partial(trio.serve_tcp, _tcp_sink, 0, host="127.0.0.1"))
            port = listeners[0].socket.getsockname()[1]
            print(mesh.node_id, mesh.listen_addresses()[0], port, flush=True)
            await trio.to_thread.run_sync(sys.stdin.read)  # until the bench closes our stdin (or dies)
            nursery.cancel_scope.cancel()


if __name__ == "__main__":
    from bench.__main__ import _quiet_logs

    _quiet_logs()
    trio.run(main, sys.argv[1], bytes.fromhex(sys.argv[2]))
