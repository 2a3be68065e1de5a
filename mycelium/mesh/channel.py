"""The data channel's interface: bulk bytes between two admitted members, off py-libp2p's streams.

py-libp2p's Python Noise + Yamux carries one stream at a few percent of plain TCP (DESIGN: The data
channel), so storage shares, RAM pages and migration streams ask the mesh for a `DataChannel` to a
node id instead. This module is the contract every user of bulk transfer codes against; the mesh's
implementation (TLS 1.3 bound to both node identities, striped over several connections) lives beside
it, and `mycelium.testing.channels` has an in-memory pair with the same behaviour for tests.

    channel = await mesh.open_channel(node_id, purpose="storage")   # ChannelRefused if not a member
    await channel.send(message)          # one whole message (bytes), framed; back-pressure: waits
    message = await channel.receive()    # the next whole message; ChannelClosed at the end
    await channel.aclose()

    mesh.serve_channels("storage", handler)   # handler(node_id, channel) runs per inbound channel;
                                              # the channel is closed when the handler returns

Messages arrive whole and in order; a message is at most `MAX_MESSAGE_BYTES` (a larger one raises
ChannelError and the channel lives on). A channel is never shared by concurrent senders without the
caller's own lock. Failures: ChannelRefused (not an admitted member, purpose not served, busy),
ChannelUnreachable (agreed, but no data path could be set up), ChannelClosed (closed, peer died,
path broke or was tampered with; whole messages received before stay readable). The mesh's
`open_channel` also takes `stripes=k` (TLS connections per direction; default MeshConfig.channel_stripes).
Conformance: `mycelium.testing.channel_conformance.CHECKS`, run against both providers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

MAX_MESSAGE_BYTES = 64 * 1024 * 1024  # one framed message; larger payloads are split by the caller


class ChannelError(Exception):
    """Base of every data-channel failure."""


class ChannelRefused(ChannelError):
    """The peer is not an admitted member of this network, or refused the purpose."""


class ChannelUnreachable(ChannelError):
    """The peer agreed over libp2p, but no data path to it could be set up (dial or TLS failed)."""


class ChannelClosed(ChannelError):
    """The channel ended: the peer closed it, died, or the path broke mid-message."""


class DataChannel(Protocol):
    peer: str  # node id of the other end

    async def send(self, message: bytes) -> None: ...

    async def receive(self) -> bytes: ...

    async def aclose(self) -> None: ...


ChannelHandler = Callable[[str, DataChannel], Awaitable[None]]


class ChannelProvider(Protocol):
    """What the mesh offers; storage and RAM replication depend on this, never on the mesh class."""

    async def open_channel(self, node_id: str, purpose: str) -> DataChannel: ...

    def serve_channels(self, purpose: str, handler: ChannelHandler) -> None: ...
