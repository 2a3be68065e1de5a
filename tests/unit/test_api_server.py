"""The control API server in-process over a real Unix socket, driven by the real client."""

import tempfile
from pathlib import Path

import pytest
import trio

from mycelium.api import protocol
from mycelium.api.client import ApiError, ControlClient, DaemonNotRunning, DaemonUnreachable
from mycelium.api.server import ApiError as ServerApiError
from mycelium.api.server import ControlServer, metrics_handler
from mycelium.observability.metrics import NodeMetrics


@pytest.fixture
def sock_path():
    with tempfile.TemporaryDirectory(prefix="myc-api-", dir="/tmp") as d:
        yield Path(d) / "control.sock"


async def _serve(nursery, path):
    metrics = NodeMetrics()
    server = ControlServer(path, metrics)

    async def echo(req):
        return 200, {"method": req.method, "body": req.body, "query": req.query}

    async def refuse(_req):
        raise ServerApiError(409, "refused", "not now", "try later")

    async def crash(_req):
        raise RuntimeError("our bug")

    server.route("GET", "/v1/echo", echo)
    server.route("POST", "/v1/echo", echo)
    server.route("GET", "/v1/refuse", refuse)
    server.route("GET", "/v1/crash", crash)
    server.route("GET", protocol.METRICS, metrics_handler(metrics))
    await nursery.start(server.serve)
    return metrics


async def _raw(path, data: bytes) -> bytes:
    stream = await trio.open_unix_socket(str(path))
    await stream.send_all(data)
    chunks = []
    while chunk := await stream.receive_some(65536):
        chunks.append(chunk)
    await stream.aclose()
    return b"".join(chunks)


async def test_round_trip_errors_and_metrics(sock_path):
    async with trio.open_nursery() as nursery:
        await _serve(nursery, sock_path)
        assert (sock_path.stat().st_mode & 0o777) == 0o600
        client = ControlClient(sock_path)
        got = await trio.to_thread.run_sync(lambda: client.post("/v1/echo", {"a": 1}))
        assert got == {"method": "POST", "body": {"a": 1}, "query": {}}
        got = await trio.to_thread.run_sync(lambda: client.get("/v1/echo?x=1&y"))
        assert got["query"] == {"x": "1", "y": ""}
        with pytest.raises(ApiError) as refused:
            await trio.to_thread.run_sync(lambda: client.get("/v1/refuse"))
        assert (refused.value.status, refused.value.message, refused.value.hint) == (409, "not now", "try later")
        with pytest.raises(ApiError) as crashed:
            await trio.to_thread.run_sync(lambda: client.get("/v1/crash"))
        assert crashed.value.status == 500 and "internal error" in crashed.value.message
        with pytest.raises(ApiError) as missing:
            await trio.to_thread.run_sync(lambda: client.get("/v1/nope"))
        assert missing.value.status == 404 and "/v1/echo" in missing.value.hint
        # still serving after all that
        assert (await trio.to_thread.run_sync(lambda: client.get("/v1/echo")))["method"] == "GET"
        text = await trio.to_thread.run_sync(lambda: client.get(protocol.METRICS))
        assert b'mycelium_api_requests_total{path="/v1/crash",status="500"} 1.0' in text
        nursery.cancel_scope.cancel()
    assert not sock_path.exists(), "the socket is removed on shutdown"


async def test_version_mismatch_names_both_versions(sock_path):
    async with trio.open_nursery() as nursery:
        await _serve(nursery, sock_path)
        reply = await _raw(sock_path, b"GET /v1/echo HTTP/1.1\r\nhost: x\r\nmycelium-api: 99\r\n\r\n")
        assert reply.startswith(b"HTTP/1.1 400")
        assert b"version 99" in reply and b"speaks 1" in reply
        reply = await _raw(sock_path, b"GET /v1/echo HTTP/1.1\r\nhost: x\r\n\r\n")
        assert b"version none" in reply
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    "raw, expect",
    [
        (b"NOT HTTP AT ALL\r\n\r\n", b"malformed HTTP"),
        (b"POST /v1/echo HTTP/1.1\r\nhost: x\r\nmycelium-api: 1\r\ncontent-length: 3\r\n\r\n{x}", b"not JSON"),
        (b"POST /v1/echo HTTP/1.1\r\nhost: x\r\nmycelium-api: 1\r\ncontent-length: 2000000\r\n\r\n" + b"x" * 1_100_000, b"body over"),
        (b"POST /v1/echo HTTP/1.1\r\nhost: x\r\nmycelium-api: 1\r\ntransfer-encoding: chunked\r\n\r\n"
         + b"100000\r\n" + b"y" * 0x100000 + b"\r\n" + b"100000\r\n" + b"y" * 0x100000 + b"\r\n0\r\n\r\n", b"body over"),
        (b"GET /v1/echo HTTP/1.1\r\nhost: x\r\nmycelium-api: 1\r\nx-junk: " + b"a" * 300_000 + b"\r\n\r\n", b"HTTP/1.1 400"),
    ],
)
async def test_malformed_requests_get_400_and_the_server_survives(sock_path, raw, expect):
    async with trio.open_nursery() as nursery:
        metrics = await _serve(nursery, sock_path)
        reply = await _raw(sock_path, raw)
        assert expect in reply
        client = ControlClient(sock_path)
        assert (await trio.to_thread.run_sync(lambda: client.get("/v1/echo")))["method"] == "GET"
        assert b"mycelium_api_bad_requests_total" in metrics.exposition()
        nursery.cancel_scope.cancel()


def test_client_distinguishes_not_running_from_unreachable(tmp_path):
    with pytest.raises(DaemonNotRunning) as absent:
        ControlClient(tmp_path / "control.sock").get("/v1/status")
    assert "up --detach" in absent.value.hint
    import socket

    path = Path(tempfile.mkdtemp(prefix="myc-", dir="/tmp")) / "s.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))  # bound but never listening: like a socket left by a killed daemon
    stale.close()
    with pytest.raises(DaemonNotRunning):
        ControlClient(path).get("/v1/status")
    silent = socket.socket(socket.AF_UNIX)
    path.unlink()
    silent.bind(str(path))
    silent.listen(1)  # accepts but never answers: a hung daemon
    try:
        with pytest.raises(DaemonUnreachable, match="did not answer"):
            ControlClient(path, timeout_s=0.3).get("/v1/status")
    finally:
        silent.close()


def test_each_layers_errors_map_to_a_status_by_type_not_by_text():
    from mycelium.api.errors import api_error
    from mycelium.daemon import NoPrimaryYet, SessionNotRunning
    from mycelium.identity import IdentityError, InvalidName, TokenError
    from mycelium.ledger.operations import NotAuthorized, OperationError
    from mycelium.roles.readonly import ReadOnlyMode

    cases = [
        (SessionNotRunning(), 503, "starting"),
        (NoPrimaryYet(), 409, "not_admitted"),
        (ReadOnlyMode("no quorum"), 409, "read_only"),
        (NotAuthorized("x is not allowed"), 403, "refused"),
        (OperationError("an admin would say"), 409, "refused"),  # the text mentions "admin": still 409
        (TokenError("bad"), 400, "bad_token"),
        (InvalidName("bad"), 400, "refused"),
        (IdentityError("the name of a network"), 409, "refused"),  # "name" in the text: still 409
    ]
    for exc, status, code in cases:
        answer = api_error(exc)
        assert (answer.status, answer.code, answer.message) == (status, code, str(exc)), exc
    assert api_error(KeyError("a bug")) is None  # unknown: the server answers 500 and logs it


async def test_a_starting_session_is_waited_out_then_reported(sock_path):
    """503 "starting" (the network session is (re)starting and nothing was done) is asked again for
    up to starting_wait_s: a command right after `network create` succeeds; a session that never
    starts is still reported, with the daemon's message."""
    metrics = NodeMetrics()
    server = ControlServer(sock_path, metrics)
    calls = {"n": 0}

    async def set_param(req):
        calls["n"] += 1
        if calls["n"] <= 2:
            raise ServerApiError(503, "starting", "the node's network session is not running yet", "retry in a moment")
        return 200, {"applied": req.body}

    async def never(_req):
        raise ServerApiError(503, "starting", "the node's network session is not running yet", "retry in a moment")

    async def busy(_req):
        calls["busy"] = calls.get("busy", 0) + 1
        raise ServerApiError(503, "unavailable", "storage is not ready", "")

    server.route("POST", "/v1/set", set_param)
    server.route("GET", "/v1/never", never)
    server.route("GET", "/v1/busy", busy)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        client = ControlClient(sock_path, starting_wait_s=5)
        got = await trio.to_thread.run_sync(lambda: client.post("/v1/set", {"max_validators": 4}))
        assert got == {"applied": {"max_validators": 4}} and calls["n"] == 3
        impatient = ControlClient(sock_path, starting_wait_s=0.5)
        with pytest.raises(ApiError) as never_started:
            await trio.to_thread.run_sync(lambda: impatient.get("/v1/never"))
        assert never_started.value.status == 503 and "not running yet" in never_started.value.message
        with pytest.raises(ApiError) as other:  # other 503s are not asked again
            await trio.to_thread.run_sync(lambda: ControlClient(sock_path, starting_wait_s=5).get("/v1/busy"))
        assert other.value.code == "unavailable" and calls["busy"] == 1
        nursery.cancel_scope.cancel()
