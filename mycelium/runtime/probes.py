"""Health probes for process instances: exec (exit code 0), tcp (connect), http (status 200-399).

Each probe is bounded by the check's timeout and returns (ok, detail); it never raises for a failing
service — a refused connection or a missing program is a failed probe, reported in `detail`.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from pathlib import Path

import trio

from mycelium.runtime.spec import HealthCheck

PROBE_HOST = "127.0.0.1"  # instances are probed on loopback: the probe runs on the node itself
MAX_STATUS_LINE = 4096


async def probe(check: HealthCheck, ports: Mapping[str, int], env: Mapping[str, str], cwd: Path) -> tuple[bool, str]:
    with trio.move_on_after(check.timeout_ms / 1000):
        try:
            if check.kind == "exec":
                return await _exec(check, env, cwd)
            port = check.port if isinstance(check.port, int) else ports.get(check.port, 0)
            if not port:
                return False, f"no port named {check.port!r} is assigned"
            if check.kind == "tcp":
                stream = await trio.open_tcp_stream(PROBE_HOST, port)
                await stream.aclose()
                return True, f"tcp {port} accepts connections"
            return await _http(port, check.path)
        except OSError as exc:
            return False, f"{check.kind} probe failed: {exc.strerror or exc}"
    return False, f"{check.kind} probe timed out after {check.timeout_ms} ms"


async def _exec(check: HealthCheck, env: Mapping[str, str], cwd: Path) -> tuple[bool, str]:
    result = await trio.run_process(list(check.command), check=False, env=dict(env), cwd=str(cwd),
                                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL, start_new_session=True)
    if result.returncode == 0:
        return True, "exec probe exited 0"
    return False, f"exec probe {check.command[0]!r} exited with code {result.returncode}"


async def _http(port: int, path: str) -> tuple[bool, str]:
    stream = await trio.open_tcp_stream(PROBE_HOST, port)
    async with stream:
        request = f"GET {path} HTTP/1.0\r\nHost: {PROBE_HOST}:{port}\r\nUser-Agent: mycelium-probe\r\n\r\n"
        await stream.send_all(request.encode())
        head = b""
        while b"\r\n" not in head and len(head) < MAX_STATUS_LINE:
            chunk = await stream.receive_some(1024)
            if not chunk:
                break
            head += chunk
    parts = head.split(b"\r\n", 1)[0].split(b" ")
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        return False, f"http probe on port {port}: not an HTTP response"
    status = int(parts[1])
    return 200 <= status < 400, f"http probe GET {path} on port {port}: status {status}"
