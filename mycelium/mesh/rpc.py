"""Request/response between admitted peers: one new stream per request, one frame each way.

Request frame: the payload. Response frame: one status byte, then the body (the handler's answer,
or a UTF-8 explanation for any other status). Large payloads (snapshots, Seed spores, chunks) are
safe because nothing else ever writes on the stream.
"""

from __future__ import annotations

import mycelium.mesh.libp2p_setup  # noqa: F401,I001 - before libp2p: fixes its logging

from collections.abc import Awaitable, Callable
from enum import IntEnum
from typing import TYPE_CHECKING

import trio
from libp2p.exceptions import BaseLibp2pError
from libp2p.peer.id import ID

from mycelium.identity import NodeId
from mycelium.mesh.framing import FrameError, read_frame, write_frame
from mycelium.mesh.membership import Offense
from mycelium.mesh.protocols import check_name
from mycelium.mesh.open_stream import open_stream

if TYPE_CHECKING:
    from mycelium.mesh.context import MeshContext

Handler = Callable[[NodeId, bytes], Awaitable[bytes]]


class Status(IntEnum):
    """Response status byte. Append only."""

    OK = 0
    BAD_REQUEST = 1  # the handler raised BadRequest: the peer sent something invalid
    INTERNAL_ERROR = 2  # the handler failed (a bug on the serving side)
    RATE_LIMITED = 3  # over the per-peer request rate; retry later
    BUSY = 4  # too many requests in progress on the serving node; retry later


class BadRequest(Exception):
    """Raised by a handler when the request is invalid; the peer is told why and penalised."""


class RequestError(Exception):
    """An outbound request failed; subclasses say how."""


class PeerNotAdmitted(RequestError):
    """The peer is not connected or has not passed the membership handshake."""


class RequestTimeout(RequestError):
    """No complete answer within the timeout."""


class RequestRefused(RequestError):
    """The peer refused to serve (rate limit, busy, unknown protocol); retry later or elsewhere."""


class RemoteError(RequestError):
    """The peer's handler rejected the request or failed; `status` says which."""

    def __init__(self, status: Status, message: str) -> None:
        super().__init__(f"{status.name.lower()}: {message}")
        self.status = status


class RequestResponse:
    """The rpc half of a Mesh: handler registry, the serving side and `request()`."""

    def __init__(self, mesh: MeshContext) -> None:
        self._mesh = mesh
        self._handlers: dict[str, Handler] = {}
        self._in_flight = 0

    def register(self, name: str, handler: Handler) -> str:
        """Serve `name` with `handler(peer, request) -> response`; returns the protocol id."""
        check_name(name)
        if name in self._handlers:
            raise ValueError(f"a handler for {name!r} is already registered")
        self._handlers[name] = handler
        protocol = self._mesh.protocols.rpc(name)
        host = self._mesh.libp2p_host
        if host is not None:
            host.set_stream_handler(protocol, self._stream_handler(name))
        return protocol

    def install(self, host: object) -> None:
        """Register every handler on a freshly built libp2p host."""
        for name in self._handlers:
            host.set_stream_handler(self._mesh.protocols.rpc(name), self._stream_handler(name))  # type: ignore[attr-defined]

    def _stream_handler(self, name: str) -> Callable[[object], Awaitable[None]]:
        async def handle(stream: object) -> None:
            await self._serve(name, stream)

        return handle

    async def _serve(self, name: str, stream) -> None:  # type: ignore[no-untyped-def]
        mesh, cfg = self._mesh, self._mesh.config
        node = stream.muxed_conn.peer_id.to_base58()
        if not await mesh.admit_stream(node):
            await _reset(stream)
            return
        now = trio.current_time()
        if not mesh.limiter.allow(node, now):
            mesh.counters.rate_limited += 1
            mesh.offend(node, Offense.RATE_LIMITED)
            await self._answer(stream, Status.RATE_LIMITED, b"too many requests; slow down")
            return
        if self._in_flight >= cfg.max_inbound_requests:
            mesh.counters.overloaded += 1
            await self._answer(stream, Status.BUSY, b"serving too many requests; retry later")
            return
        self._in_flight += 1
        try:
            try:
                with trio.fail_after(cfg.request_timeout_s):
                    request = await read_frame(stream, max_size=cfg.max_request_bytes)
            except (FrameError, trio.TooSlowError) as exc:
                if isinstance(exc, trio.TooSlowError) or exc.is_peer_fault:
                    mesh.counters.garbage += 1
                    mesh.offend(node, Offense.GARBAGE)
                    mesh.log.info("mesh.rpc.garbage", peer=node, rpc=name, error=str(exc) or "slow request")
                await _reset(stream)
                return
            mesh.book.get(node).last_seen = mesh.wall_now()
            try:
                response = await self._handlers[name](node, request)
            except BadRequest as exc:
                mesh.counters.garbage += 1
                mesh.offend(node, Offense.GARBAGE)
                await self._answer(stream, Status.BAD_REQUEST, str(exc).encode()[:1024])
                return
            except Exception as exc:  # a bug in our handler: log it, tell the peer, keep serving
                mesh.counters.handler_errors += 1
                mesh.log.exception("mesh.rpc.handler_failed", peer=node, rpc=name)
                await self._answer(stream, Status.INTERNAL_ERROR, f"{type(exc).__name__}".encode())
                return
            if not isinstance(response, (bytes, bytearray)):
                mesh.counters.handler_errors += 1
                mesh.log.error("mesh.rpc.handler_returned_non_bytes", rpc=name, type=type(response).__name__)
                await self._answer(stream, Status.INTERNAL_ERROR, b"handler returned no bytes")
                return
            mesh.counters.requests_in += 1
            await self._answer(stream, Status.OK, bytes(response))
        finally:
            self._in_flight -= 1

    async def _answer(self, stream, status: Status, body: bytes) -> None:  # type: ignore[no-untyped-def]
        cfg = self._mesh.config
        try:
            with trio.fail_after(cfg.request_timeout_s):
                await write_frame(stream, bytes([status]) + body, max_size=cfg.max_request_bytes + 1)
                await stream.close()
        except (FrameError, BaseLibp2pError, trio.TooSlowError):
            # the requester went away or stalled; nothing more we can tell it
            await _reset(stream)

    async def request(self, node: NodeId, name: str, payload: bytes, timeout_s: float | None) -> bytes:
        mesh, cfg = self._mesh, self._mesh.config
        check_name(name)
        if len(payload) > cfg.max_request_bytes:
            raise ValueError(f"request of {len(payload)} bytes exceeds max_request_bytes={cfg.max_request_bytes}")
        host = mesh.libp2p_host
        record = mesh.book.find(node)
        if host is None or record is None or not (record.admitted and record.connected):
            mesh.counters.request_errors += 1
            raise PeerNotAdmitted(f"peer {node} is not an admitted, connected member of this network")
        timeout = cfg.request_timeout_s if timeout_s is None else timeout_s
        stream = None
        try:
            with trio.fail_after(timeout):
                try:
                    stream = await open_stream(host, ID.from_base58(node), [mesh.protocols.rpc(name)])
                except BaseLibp2pError as exc:
                    raise RequestRefused(f"peer {node} does not serve {name!r}: {exc}") from exc
                await write_frame(stream, payload, max_size=cfg.max_request_bytes)
                await stream.close()  # half-close: the request is complete
                frame = await read_frame(stream, max_size=cfg.max_request_bytes + 1)
        except trio.TooSlowError as exc:
            mesh.counters.request_errors += 1
            if stream is not None:
                await _reset(stream)
            raise RequestTimeout(f"{name!r} to {node} got no answer within {timeout} s") from exc
        except FrameError as exc:
            mesh.counters.request_errors += 1
            raise RequestRefused(f"{name!r} to {node} failed: the stream {exc}") from exc
        except RequestError:
            mesh.counters.request_errors += 1
            raise
        if not frame:
            mesh.counters.request_errors += 1
            raise RequestRefused(f"{name!r} to {node}: empty response frame")
        try:
            status = Status(frame[0])
        except ValueError:
            mesh.counters.request_errors += 1
            raise RemoteError(Status.INTERNAL_ERROR, f"unknown status {frame[0]}") from None
        if status is Status.OK:
            mesh.counters.requests_out += 1
            mesh.book.get(node).last_seen = mesh.wall_now()
            return frame[1:]
        mesh.counters.request_errors += 1
        message = frame[1:].decode("utf-8", "replace")
        if status in (Status.RATE_LIMITED, Status.BUSY):
            raise RequestRefused(f"{name!r} to {node}: {status.name.lower()}: {message}")
        raise RemoteError(status, message)


async def _reset(stream) -> None:  # type: ignore[no-untyped-def]
    try:
        await stream.reset()
    except BaseLibp2pError:
        pass  # the stream is already gone, which is what we wanted
