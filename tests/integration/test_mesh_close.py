"""A mesh closes even when a task of its own is stuck writing to a peer that stopped reading.

py-libp2p 0.8.1 resets a failed new stream inside CancelScope(shield=True) with no time limit; when
the peer no longer reads its socket, that write blocks in send_all for good and the mesh's nursery
never exits (bench pq hung that way on 2026-12-02: the other mesh's socket was left open, unread).
Here the peer is a real mesh in another process, stopped with SIGSTOP once connected, and the stuck
write is a shielded write on the connection's own TCP stream — the exact place py-libp2p blocked.
Closing must still end: the graceful close within its bound, then the sockets it left are closed."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import textwrap

import pytest

from mycelium.testing.deadlines import stretched

pytestmark = pytest.mark.integration

PEER = textwrap.dedent("""\
    import sys, trio
    from mycelium.identity import NodeKey
    from mycelium.mesh.config import MeshConfig
    from mycelium.mesh.host import open_mesh

    async def main():
        async with open_mesh(MeshConfig.local(), NodeKey.generate(), sys.argv[1], bytes.fromhex(sys.argv[2])) as mesh:
            print("ADDRESS", mesh.listen_addresses()[0], flush=True)
            await trio.to_thread.run_sync(sys.stdin.read)

    trio.run(main)
    """)


CLOSER = textwrap.dedent("""\
    import sys, trio
    from mycelium.identity import NodeKey
    from mycelium.mesh.config import MeshConfig
    from mycelium.mesh.host import _tcp_socket, open_mesh
    from mycelium.testing.mesh import wait_until

    async def main(network_id, secret, address, peer_pid):
        import os, signal
        peer_id = address.rsplit("/p2p/", 1)[1]
        stuck, ended = trio.Event(), []
        async with open_mesh(MeshConfig.local(close_timeout_s=1.0), NodeKey.generate(), network_id, secret) as mesh:
            await mesh.connect(address)
            await wait_until(lambda: peer_id in mesh.admitted_peers(), timeout_s=60)
            os.kill(peer_pid, signal.SIGSTOP)  # the peer's process stops reading its socket
            network = mesh.libp2p_host.get_network()
            (conn,) = next(c for p, c in network.connections.items() if p.to_base58() == peer_id)
            assert _tcp_socket(conn) is not None
            raw = conn.muxed_conn.secured_conn.conn.conn.stream  # TrioTCPStream, under the Noise session

            async def shielded_writer():
                with trio.CancelScope(shield=True):  # as py-libp2p's reset of a failed new stream
                    block = b"\\0" * (1 << 20)
                    for _ in range(4096):  # far more than any socket buffer holds
                        stuck.set()
                        await raw.write(block)
                ended.append("returned")

            mesh.spawn(shielded_writer)
            await stuck.wait()
            await trio.sleep(0.5)  # the send buffer fills and the writer blocks in send_all
            print("STUCK", ended, flush=True)
        print("CLOSED", ended, flush=True)

    trio.run(main, sys.argv[1], bytes.fromhex(sys.argv[2]), sys.argv[3], int(sys.argv[4]))
    """)


def _line(proc: subprocess.Popen, prefix: str) -> str:
    while True:
        line = proc.stdout.readline()
        assert line, f"the process exited ({proc.wait()}) before it printed {prefix!r}"
        if line.startswith(prefix):
            return line.strip()


def test_a_mesh_closes_though_a_write_to_a_peer_that_stopped_reading_is_stuck():
    network_id, secret = f"close-{secrets.token_hex(4)}", secrets.token_bytes(32)
    procs = []
    try:
        peer = subprocess.Popen([sys.executable, "-c", PEER, network_id, secret.hex()], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)
        procs.append(peer)
        address = _line(peer, "ADDRESS ").split()[1]
        closer = subprocess.Popen([sys.executable, "-c", CLOSER, network_id, secret.hex(), address, str(peer.pid)],
                                  stdout=subprocess.PIPE, text=True)
        procs.append(closer)
        assert _line(closer, "STUCK ") == "STUCK []"  # the write is stuck, and then the mesh closes:
        try:  # a hang detector (stretched on a busy box), not a budget: before the fix it never ended
            closer.wait(timeout=stretched(30))
        except subprocess.TimeoutExpired:
            raise AssertionError("the mesh did not close: a shielded write to a peer that stopped reading "
                                 "held its nursery open") from None
        assert _line(closer, "CLOSED ") == "CLOSED ['returned']" and closer.returncode == 0
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
