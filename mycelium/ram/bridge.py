"""Carry a QEMU migration stream over the data channel: a local Unix socket at each end (trio shell).

    source QEMU --unix--> [bridge_out: listens at src_path] ==DataChannel==> [bridge_in] --unix--> target QEMU

QEMU speaks to a socket; the data channel carries whole messages. Each direction is cut into messages of
at most `CHUNK` bytes; an empty message marks the end of that direction (the channel has no half-close).
Both directions flow, since postcopy's return path (the target asking for pages) runs backwards.
"""

from __future__ import annotations

import os

import trio

from mycelium.mesh.channel import ChannelClosed, ChannelProvider, DataChannel

PURPOSE = "ram-migrate"
CHUNK = 1 << 20


async def _sock_to_channel(sock: trio.SocketStream, channel: DataChannel, counter: list[int]) -> None:
    while True:
        data = await sock.receive_some(CHUNK)
        if not data:
            await channel.send(b"")
            return
        counter[0] += len(data)
        await channel.send(data)


async def _channel_to_sock(channel: DataChannel, sock: trio.SocketStream) -> None:
    while True:
        data = await channel.receive()
        if not data:
            try:
                await sock.send_eof()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # QEMU closed first: nothing left to tell it
            return
        await sock.send_all(data)


async def splice(sock: trio.SocketStream, channel: DataChannel) -> int:
    """Both directions until each has ended (or either side broke). Returns bytes carried outwards."""
    counter = [0]
    try:
        async with trio.open_nursery() as n:
            n.start_soon(_sock_to_channel, sock, channel, counter)
            n.start_soon(_channel_to_sock, channel, sock)
    except* (ChannelClosed, trio.BrokenResourceError, trio.ClosedResourceError):
        pass  # one end went away: the migration itself reports failure through QMP
    finally:
        with trio.CancelScope(shield=True):
            await sock.aclose()
            await channel.aclose()
    return counter[0]


async def bridge_out(provider: ChannelProvider, target_node: str, src_path: str, tag: str,
                     *, task_status=trio.TASK_STATUS_IGNORED) -> int:
    """Listen at `src_path` for the source QEMU, then carry its stream to `target_node` (tagged `tag`)."""
    if os.path.exists(src_path):
        os.unlink(src_path)
    listener = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
    await listener.bind(src_path)
    listener.listen(1)
    task_status.started()
    try:
        conn, _ = await listener.accept()
    finally:
        listener.close()
        os.unlink(src_path)
    sock = trio.SocketStream(conn)
    channel = await provider.open_channel(target_node, PURPOSE)
    await channel.send(tag.encode())
    return await splice(sock, channel)


class BridgeIn:
    """On the target node: inbound migration channels, each naming (by tag) the Unix path of the
    incoming QEMU registered for it with `expect(tag, path)`."""

    MAX_EXPECTED = 16

    def __init__(self, provider: ChannelProvider) -> None:
        self._expected: dict[str, str] = {}
        self.carried: dict[str, int] = {}
        provider.serve_channels(PURPOSE, self._handle)

    def expect(self, tag: str, dst_path: str) -> None:
        if len(self._expected) >= self.MAX_EXPECTED:
            raise RuntimeError(f"{self.MAX_EXPECTED} incoming migrations are already expected")
        self._expected[tag] = dst_path

    async def _handle(self, peer: str, channel: DataChannel) -> None:
        try:
            tag = (await channel.receive()).decode(errors="replace")
        except ChannelClosed:
            return
        path = self._expected.pop(tag, None)
        if path is None:
            await channel.aclose()
            return
        sock = await trio.open_unix_socket(path)
        self.carried[tag] = await splice(sock, channel)
