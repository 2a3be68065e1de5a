"""Control API server: h11 (sans-IO HTTP/1.1) on a trio Unix-socket listener, one request per
connection. Handlers are plain async functions registered by path; they return (status, json-able)
or raise ApiError — or any layer's own error, which mycelium.api.errors maps to a status by its type.
Our bugs become 500 with a logged traceback; client mistakes become 4xx."""

from __future__ import annotations

import json
import os
import socket as stdsocket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable

import h11
import trio

from mycelium.api import protocol
from mycelium.observability.logs import get_logger
from mycelium.observability.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from mycelium.observability.metrics import NodeMetrics

log = get_logger("mycelium.api")


class ApiError(Exception):
    """A request we refuse: status, machine code, message for the user, and the next thing to do."""

    def __init__(self, status: int, code: str, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.hint = status, code, message, hint

    def body(self) -> dict:
        return {"error": {"code": self.code, "message": self.message, "hint": self.hint}}


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    query: dict[str, str]
    body: Any  # decoded JSON (dict) or None


Handler = Callable[[Request], Awaitable[tuple[int, Any]]]


@dataclass(frozen=True, slots=True)
class RawResponse:
    """A handler result that is not JSON (e.g. Prometheus text)."""

    content_type: str
    data: bytes


class ControlServer:
    def __init__(self, path: Path, metrics: NodeMetrics) -> None:
        self.path = path
        self.metrics = metrics
        self._routes: dict[tuple[str, str], Handler] = {}

    def route(self, method: str, path: str, handler: Handler) -> None:
        self._routes[(method, path)] = handler

    async def serve(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        sock = trio.socket.socket(stdsocket.AF_UNIX, stdsocket.SOCK_STREAM)
        try:
            self.path.unlink()  # a stale socket from a crashed daemon; the lock file proved we own the dir
        except FileNotFoundError:
            pass
        old_umask = os.umask(0o177)  # the socket is created 0600: only our user may drive the node
        try:
            await sock.bind(str(self.path))
        finally:
            os.umask(old_umask)
        sock.listen(64)
        listener = trio.SocketListener(sock)
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(trio.serve_listeners, self._serve_one, [listener])
                task_status.started()
        finally:
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass

    async def _serve_one(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=64 * 1024)
        try:
            with trio.fail_after(protocol.REQUEST_TIMEOUT_S):
                request = await self._read_request(conn, stream)
            status, headers, data = await self._dispatch(request)
        except _BadRequest as exc:
            self.metrics.api_errors.labels(reason=exc.reason).inc()
            status, headers, data = _json_response(
                400, ApiError(400, exc.reason, str(exc), "use the `mycelium` CLI of the same version").body()
            )
            try:
                await _send(conn, stream, status, headers, data)
                await stream.send_eof()  # the client sees the end of our answer and closes its side
                await _drain(stream)
            except (trio.BrokenResourceError, trio.ClosedResourceError, h11.LocalProtocolError):
                pass  # the client went away before reading its answer
            await stream.aclose()
            return
        except trio.TooSlowError:
            self.metrics.api_errors.labels(reason="timeout").inc()
            await stream.aclose()
            return
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return  # the client went away; nothing to answer
        try:
            await _send(conn, stream, status, headers, data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.LocalProtocolError):
            pass  # the client went away before reading its answer
        finally:
            await stream.aclose()

    async def _read_request(self, conn: h11.Connection, stream: trio.SocketStream) -> Request:
        req: h11.Request | None = None
        body = bytearray()
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                raise _BadRequest("malformed_http", f"malformed HTTP request: {exc}") from exc
            if event is h11.NEED_DATA:
                data = await stream.receive_some(65536)
                conn.receive_data(data)  # b"" marks EOF; h11 then reports the truncation
                continue
            if isinstance(event, h11.Request):
                req = event
                length = dict(req.headers).get(b"content-length", b"0")
                if length.isdigit() and int(length) > protocol.MAX_BODY_BYTES:
                    raise _BadRequest("body_too_large", f"request body over {protocol.MAX_BODY_BYTES} bytes")
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > protocol.MAX_BODY_BYTES:
                    raise _BadRequest("body_too_large", f"request body over {protocol.MAX_BODY_BYTES} bytes")
            elif isinstance(event, h11.EndOfMessage):
                break
            elif isinstance(event, h11.ConnectionClosed):
                raise _BadRequest("truncated", "connection closed before the request was complete")
        assert req is not None  # h11 yields Request before Data/EndOfMessage
        headers = {k.decode().lower(): v.decode("latin-1") for k, v in req.headers}
        target = req.target.decode("latin-1")
        path, _, qs = target.partition("?")
        query = dict(part.split("=", 1) if "=" in part else (part, "") for part in qs.split("&") if part)
        if path.startswith("/v"):
            version = headers.get(protocol.VERSION_HEADER)
            if version != str(protocol.API_VERSION):
                raise _BadRequest(
                    "version_mismatch",
                    f"client speaks control API version {version or 'none'}, this daemon speaks "
                    f"{protocol.API_VERSION}; run the `mycelium` that came with this daemon",
                )
        parsed: Any = None
        if body:
            try:
                parsed = json.loads(body)
            except (ValueError, UnicodeDecodeError) as exc:
                raise _BadRequest("malformed_json", f"request body is not JSON: {exc}") from exc
        return Request(req.method.decode(), path, query, parsed)

    async def _dispatch(self, request: Request) -> tuple[int, list, bytes]:
        handler = self._routes.get((request.method, request.path))
        if handler is None:
            known = sorted({p for (_, p) in self._routes})
            code = 405 if any(p == request.path for (_, p) in self._routes) else 404
            err = ApiError(code, "no_such_path", f"{request.method} {request.path} is not part of the API",
                           f"known paths: {', '.join(known)}")
            self.metrics.api_requests.labels(path="other", status=str(code)).inc()
            return _json_response(code, err.body())
        try:
            status, result = await handler(request)
        except ApiError as exc:
            status, result = exc.status, exc.body()
        except Exception as exc:
            from mycelium.api.errors import api_error  # the layers' error types, mapped by type

            mapped = api_error(exc)
            if mapped is not None:
                status, result = mapped.status, mapped.body()
            else:  # our bug: answer 500 and log it, but keep serving other requests
                log.exception("control API handler failed", path=request.path)
                status, result = 500, ApiError(
                    500, "internal", "the daemon hit an internal error handling this request",
                    "see the daemon log (daemon.log in the state dir); please report it",
                ).body()
        self.metrics.api_requests.labels(path=request.path, status=str(status)).inc()
        if isinstance(result, RawResponse):
            return status, [("content-type", result.content_type)], result.data
        return _json_response(status, result)


class _BadRequest(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _json_response(status: int, obj: Any) -> tuple[int, list, bytes]:
    return status, [("content-type", "application/json")], json.dumps(obj, sort_keys=True).encode() + b"\n"


async def _send(conn: h11.Connection, stream: trio.SocketStream, status: int, headers: list, data: bytes) -> None:
    headers = [*headers, ("content-length", str(len(data))), (protocol.VERSION_HEADER, str(protocol.API_VERSION)),
               ("connection", "close")]
    await stream.send_all(conn.send(h11.Response(status_code=status, headers=headers)))
    await stream.send_all(conn.send(h11.Data(data=data)))
    await stream.send_all(conn.send(h11.EndOfMessage()))


async def _drain(stream: trio.SocketStream, *, max_bytes: int = 4 << 20, max_s: float = 1.0) -> None:
    """Read and discard what the client is still sending (bounded), so that closing does not reset
    the connection before the client has read our error answer ("lingering close")."""
    with trio.move_on_after(max_s):
        seen = 0
        while seen < max_bytes:
            chunk = await stream.receive_some(65536)
            if not chunk:
                return
            seen += len(chunk)


def metrics_handler(metrics: NodeMetrics) -> Handler:
    async def handle(_request: Request) -> tuple[int, Any]:
        return 200, RawResponse(METRICS_CONTENT_TYPE, metrics.exposition())

    return handle
