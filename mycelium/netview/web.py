"""The page's HTTP server: HTTP/1.1 (h11) over a trio TCP listener, one request per connection.

    GET /                 the page (static/index.html)   GET /static/<file>   its script and style
    GET /api/snapshot     the network picture (snapshot.py)     GET /metrics   Prometheus text
Static files carry no data and need nothing; /api/* and /metrics need the session's token, as
`Authorization: Bearer <token>` (the page sends it; Prometheus' `authorization` does too) or
`?token=` — anything else gets 401 and a body that names no node, network or number.

The page's URL carries the token in its fragment (`/#token=…`), which browsers never send to a
server or in a Referer. On a loopback listener the Host header must name the loopback too, so a web
page elsewhere cannot reach this one through a DNS name rebound to 127.0.0.1.
"""

from __future__ import annotations

import hmac
import http
import ipaddress
import json
from importlib import resources
from typing import Any, Callable

import h11
import trio

from mycelium.observability.logs import get_logger

log = get_logger("mycelium.netview")

REQUEST_TIMEOUT_S = 10.0  # one request, from its first byte to our answer
SLOT_WAIT_S = 10.0  # a connection waits this long at most for one of the MAX_CONNECTIONS slots
MAX_REQUEST_BYTES = 16 * 1024  # the page only sends GETs
MAX_CONNECTIONS = 32  # served at once; more wait for a free slot (a page polls once a second)
STATIC_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}
SECURITY_HEADERS = [
    ("cache-control", "no-store"),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("x-frame-options", "DENY"),
    ("content-security-policy", "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'"),
]


def static_file(name: str) -> bytes | None:
    """A file shipped in mycelium/netview/static (package data), or None."""
    if "/" in name or name.startswith(".") or not any(name.endswith(ext) for ext in STATIC_TYPES):
        return None
    try:
        return resources.files("mycelium.netview").joinpath("static", name).read_bytes()
    except (FileNotFoundError, IsADirectoryError, OSError):
        return None


def token_ok(headers: dict[str, str], query: dict[str, str], token: str) -> bool:
    given = ""
    auth = headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        given = auth[7:].strip()
    elif "token" in query:
        given = query["token"]
    return bool(given) and hmac.compare_digest(given.encode(), token.encode())


def host_ok(host_header: str, bound_host: str) -> bool:
    """On a loopback listener only loopback names are accepted in Host (DNS-rebinding guard)."""
    try:
        loopback = ipaddress.ip_address(bound_host).is_loopback
    except ValueError:
        loopback = bound_host == "localhost"
    if not loopback:
        return True  # --ui-listen on another interface: the token alone guards the data
    name = host_header.rsplit(":", 1)[0] if not host_header.startswith("[") else host_header.split("]")[0] + "]"
    return name in ("127.0.0.1", "localhost", "[::1]") or name.startswith("127.")


class WebServer:
    def __init__(self, token: str, snapshot: Callable[[], dict], metrics: Callable[[], tuple[str, bytes]],
                 *, max_connections: int = MAX_CONNECTIONS) -> None:
        self.token = token
        self._snapshot = snapshot
        self._metrics = metrics
        self.bound_host = "127.0.0.1"
        self.port = 0
        self.unauthorized = 0  # requests refused for a missing or wrong token (bounded: a counter)
        self._slots = trio.Semaphore(max_connections)

    async def serve(self, host: str, port: int, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(port, host=host)
        self.bound_host = host
        self.port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            await nursery.start(trio.serve_listeners, self._serve_one, listeners)
            task_status.started(self.port)

    async def _serve_one(self, stream: trio.SocketStream) -> None:
        try:
            with trio.fail_after(SLOT_WAIT_S):  # connections waiting for a slot cannot pile up either
                await self._slots.acquire()
        except trio.TooSlowError:
            await stream.aclose()
            return
        try:
            with trio.fail_after(REQUEST_TIMEOUT_S):
                status, headers, body = await self._handle(stream)
                await stream.send_all(_response(status, headers, body))
        except (trio.TooSlowError, trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError):
            pass  # a slow, vanished or broken client: nothing to answer
        finally:
            self._slots.release()
            await stream.aclose()

    async def _handle(self, stream: trio.SocketStream) -> tuple[int, list, bytes]:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST_BYTES)
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError:
                return _error(400, "bad_request", "malformed HTTP request")
            if event is h11.NEED_DATA:
                conn.receive_data(await stream.receive_some(65536))
                continue
            if isinstance(event, h11.Request):
                break
            return _error(400, "bad_request", "not an HTTP request")  # the client closed before asking
        headers = {k.decode().lower(): v.decode("latin-1") for k, v in event.headers}
        target = event.target.decode("latin-1")
        path, _, qs = target.partition("?")
        query = dict(part.split("=", 1) if "=" in part else (part, "") for part in qs.split("&") if part)
        if not host_ok(headers.get("host", ""), self.bound_host):
            return _error(421, "wrong_host", "this page is served on the loopback address only")
        if event.method != b"GET":
            return _error(405, "method", "only GET is served here")
        if path == "/" or path == "/index.html":
            return 200, [("content-type", STATIC_TYPES[".html"])], static_file("index.html") or b""
        if path.startswith("/static/"):
            data = static_file(path[len("/static/"):])
            if data is None:
                return _error(404, "not_found", "no such file")
            ext = path[path.rfind("."):]
            return 200, [("content-type", STATIC_TYPES[ext])], data
        if path in ("/api/snapshot", "/metrics"):
            if not token_ok(headers, query, self.token):
                self.unauthorized += 1
                return _error(401, "unauthorized", "this needs the token from the URL `mycelium ui` printed",
                              extra=[("www-authenticate", 'Bearer realm="mycelium"')])
            if path == "/metrics":
                content_type, data = self._metrics()
                return 200, [("content-type", content_type)], data
            return 200, [("content-type", "application/json")], json.dumps(self._snapshot(), sort_keys=True).encode()
        return _error(404, "not_found", "no such page")


def _error(status: int, code: str, message: str, extra: list | None = None) -> tuple[int, list, bytes]:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    return status, [("content-type", "application/json"), *(extra or [])], body


def _response(status: int, headers: list, body: bytes) -> bytes:
    reason = http.HTTPStatus(status).phrase
    all_headers = [*headers, *SECURITY_HEADERS, ("content-length", str(len(body))), ("connection", "close")]
    head = f"HTTP/1.1 {status} {reason}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in all_headers) + "\r\n"
    return head.encode("latin-1") + body


def url_for(host: str, port: int, token: str) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "127.0.0.1") else (f"[{host}]" if ":" in host else host)
    return f"http://{shown}:{port}/#token={token}"


__all__ = ["WebServer", "url_for", "static_file", "token_ok", "host_ok"]
