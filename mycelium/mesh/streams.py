"""Message streams: one long-lived one-way libp2p stream per (peer, name), many messages on it.

A request/response costs a new Yamux stream, a multistream-select negotiation and an answer per
message (`mycelium.mesh.rpc`); consensus sends small messages to the same few peers all the time.
Here the first send to a peer opens `/mycelium/<net>/stream/<name>/1.0.0` and keeps it; every later
batch is written on it as length-prefixed frames in ONE `write` call, under a per-stream lock —
py-libp2p 0.8.1's Yamux interleaves two concurrent writers on one stream at 64 KiB frame
boundaries, so a stream only ever has one writer at a time. The receiver admits the stream once
(`admit_stream`), then hands each frame to the handler in order, one at a time (back-pressure, not
a token bucket: see `_serve`); nothing is answered.

    mesh.register_stream_handler(name, async fn(peer, bytes) -> Any)   # return value ignored
    await mesh.send_messages(peer, name, [bytes, …], timeout_s)         # RequestError on failure

A broken stream is dropped and the batch raises; the next batch opens a new stream. Frames over
`max_request_bytes` are refused (the sender's caller error; the receiver counts garbage).
"""

from __future__ import annotations

import mycelium.mesh.libp2p_setup  # noqa: F401,I001 - before libp2p: fixes its logging

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import trio
from libp2p.exceptions import BaseLibp2pError
from libp2p.peer.id import ID

from mycelium.identity import NodeId
from mycelium.mesh.framing import HEADER_SIZE, FrameError, read_frame
from mycelium.mesh.membership import Offense
from mycelium.mesh.protocols import check_name
from mycelium.mesh.rpc import PeerNotAdmitted, RequestRefused, RequestTimeout
from mycelium.mesh.open_stream import open_stream

if TYPE_CHECKING:
    from mycelium.mesh.context import MeshContext

StreamHandler = Callable[[NodeId, bytes], Awaitable[Any]]


class MessageStreams:
    def __init__(self, mesh: MeshContext) -> None:
        self._mesh = mesh
        self._handlers: dict[str, StreamHandler] = {}
        self._out: dict[tuple[NodeId, str], Any] = {}  # open outbound streams (≤ peers × names)
        self._locks: dict[tuple[NodeId, str], trio.Lock] = {}

    def protocol(self, name: str) -> str:
        return f"/mycelium/{self._mesh.protocols.short_id}/stream/{check_name(name)}/1.0.0"

    def register(self, name: str, handler: StreamHandler) -> str:
        if name in self._handlers:
            raise ValueError(f"a stream handler for {name!r} is already registered")
        self._handlers[name] = handler
        host = self._mesh.libp2p_host
        if host is not None:
            host.set_stream_handler(self.protocol(name), self._stream_handler(name))
        return self.protocol(name)

    def install(self, host: Any) -> None:
        for name in self._handlers:
            host.set_stream_handler(self.protocol(name), self._stream_handler(name))

    def forget(self, node_id: NodeId) -> None:
        """The peer disconnected: its streams are gone (called by the mesh)."""
        for key in [k for k in self._out if k[0] == node_id]:
            self._out.pop(key, None)
            if not self._locks[key].locked():
                del self._locks[key]

    # -- sending ------------------------------------------------------------------------------

    async def send(self, node: NodeId, name: str, messages: list[bytes], timeout_s: float) -> None:
        mesh, cfg = self._mesh, self._mesh.config
        for m in messages:
            if len(m) > cfg.max_request_bytes:
                raise ValueError(f"message of {len(m)} bytes exceeds max_request_bytes={cfg.max_request_bytes}")
        record = mesh.book.find(node)
        if mesh.libp2p_host is None or record is None or not (record.admitted and record.connected):
            raise PeerNotAdmitted(f"peer {node} is not an admitted, connected member of this network")
        key = (node, name)
        lock = self._locks.setdefault(key, trio.Lock())
        data = b"".join(len(m).to_bytes(HEADER_SIZE, "big") + m for m in messages)
        async with lock:  # one writer per stream (the Yamux hazard above)
            try:
                with trio.fail_after(timeout_s):
                    # A kept stream may have died with a connection we never saw end (a reconnect that
                    # raced the old connection's close): it is dropped and the batch goes once more on
                    # a fresh stream. A fresh stream that fails is the peer's failure.
                    while True:
                        stream = self._out.get(key)
                        kept = stream is not None
                        if stream is None:
                            try:
                                stream = await open_stream(mesh.libp2p_host, ID.from_base58(node), [self.protocol(name)])
                            except BaseLibp2pError as exc:
                                if _unsupported(exc):  # callers tell this apart: fall back to rpc for this peer
                                    raise RequestRefused(f"peer {node} takes no {name!r} stream: {exc}") from exc
                                raise RequestRefused(f"could not open a {name!r} stream to {node}: {exc}") from exc
                            self._out[key] = stream
                        try:
                            await stream.write(data)
                            break
                        except BaseLibp2pError as exc:
                            self._out.pop(key, None)
                            await _reset(stream)
                            if not kept:
                                raise RequestRefused(f"{name!r} stream to {node} broke: {exc}") from exc
            except trio.TooSlowError as exc:
                stream = self._out.pop(key, None)
                if stream is not None:
                    await _reset(stream)
                raise RequestTimeout(f"{name!r} stream to {node} stalled for {timeout_s} s") from exc
        mesh.counters.stream_messages_out += len(messages)

    # -- serving ------------------------------------------------------------------------------

    def _stream_handler(self, name: str) -> Callable[[Any], Awaitable[None]]:
        async def handle(stream: Any) -> None:
            await self._serve(name, stream)

        return handle

    async def _serve(self, name: str, stream: Any) -> None:
        mesh, cfg = self._mesh, self._mesh.config
        node = stream.muxed_conn.peer_id.to_base58()
        if not await mesh.admit_stream(node):
            await _reset(stream)
            return
        handler = self._handlers[name]
        while True:
            try:
                frame = await read_frame(stream, max_size=cfg.max_request_bytes)
            except FrameError as exc:
                if exc.is_peer_fault:
                    mesh.counters.garbage += 1
                    mesh.offend(node, Offense.GARBAGE)
                await _reset(stream)
                return
            # No token bucket here (unlike rpc): a sender writes whole batches with no answer to wait
            # for, so a per-message bucket would block an honest validator catching a peer up. Frames
            # are handled one at a time instead: a fast sender is slowed by Yamux's window, never
            # served faster than the handler runs, and the handler's own bounded queue drops excess.
            mesh.counters.stream_messages_in += 1
            try:
                await handler(node, frame)
            except Exception:  # a bug in our handler: log it, keep the stream
                mesh.counters.handler_errors += 1
                mesh.log.exception("mesh.stream.handler_failed", peer=node, stream=name)


def _unsupported(exc: BaseException | None) -> bool:
    while exc is not None:
        if "protocols not supported" in str(exc):
            return True
        exc = exc.__cause__
    return False


async def _reset(stream: Any) -> None:
    try:
        await stream.reset()
    except BaseLibp2pError:
        pass  # already gone
