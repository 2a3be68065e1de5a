"""The shipped examples really run on the process driver and answer over HTTP."""

from __future__ import annotations

from pathlib import Path

import trio

from mycelium.runtime.conformance import wait_status
from mycelium.runtime.driver import InstanceSpec, InstanceState
from mycelium.runtime.manifest import load_deployable
from mycelium.runtime.process import ProcessDriver, ProcessDriverConfig

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
CONFIG = ProcessDriverConfig(stop_grace_s=2.0, log_poll_s=0.02)


async def http_get(port: int, path: str) -> bytes:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(f"GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n".encode())
        reply = b""
        while chunk := await stream.receive_some(65536):
            reply += chunk
    return reply


async def _serve(tmp_path: Path, manifest: str, path: str) -> bytes:
    spec = load_deployable(EXAMPLES / manifest)
    async with ProcessDriver.open(tmp_path, CONFIG) as driver:
        handle = await driver.start(InstanceSpec(f"{spec.name}-0", spec))
        status = await wait_status(driver, handle, lambda s: s.state is InstanceState.HEALTHY, "healthy",
                                   timeout_s=15)
        return await http_get(status.ports["http"], path)


async def test_static_web_serves_its_page(tmp_path):
    reply = await _serve(tmp_path, "static-web.yaml", "/")
    assert reply.startswith(b"HTTP/1.0 200") and b"Hello from Mycelium" in reply


async def test_echo_answers_and_names_its_replica(tmp_path):
    reply = await _serve(tmp_path, "echo.yaml", "/hello")
    assert reply.startswith(b"HTTP/1.0 200") and reply.endswith(b"echo hello (from echo-0)\n")
