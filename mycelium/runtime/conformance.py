"""The conformance suite every workload driver must pass (modelled on trio's `_check_streams.py`).

    await check_driver(lambda: ProcessDriver.open(tmp_path))

`make_driver()` returns an async context manager yielding a fresh driver; each check opens its own and
the context manager must stop everything on exit. The checks use small Python programs (argv lists
run with `python`), real processes and real time, with short backoffs so the whole suite takes a few
seconds. They are plain async functions raising AssertionError, listed in CHECKS, so a test can
parametrize over them and see which one fails.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import trio

from mycelium.runtime.driver import (
    Driver, DriverError, InstanceHandle, InstanceSpec, InstanceState, InstanceStatus, PortInUse, UnknownInstance,
)
from mycelium.runtime.spec import HealthCheck, PortSpec, Resources, RestartPolicy, ServiceSpec

MakeDriver = Callable[[], AbstractAsyncContextManager[Driver]]
WAIT_S = 10.0  # longest wait for a state; generous for a loaded 2-core CI machine
PY = sys.executable
SLEEP_FOREVER = "import time\nwhile True: time.sleep(1)"


def service(name: str, code: str | None = None, *, argv: tuple[str, ...] = (), policy: str = "never",
            **changes: Any) -> ServiceSpec:
    """A test service running Python `code` (or `argv`), with fast backoff and crash-loop detection."""
    restart = RestartPolicy(policy=policy, backoff_initial_ms=30, backoff_max_ms=150, backoff_factor=2,
                            crash_loop_after=3, min_uptime_ms=3000)
    changes.setdefault("resources", Resources(100, 512 * 2**20))
    return ServiceSpec(name=name, command=argv or (PY, "-c", code or SLEEP_FOREVER), restart=restart,
                       **changes)


async def wait_status(driver: Driver, handle: InstanceHandle, predicate: Callable[[InstanceStatus], bool],
                      what: str, timeout_s: float | None = None) -> InstanceStatus:
    status = await driver.status(handle)
    with trio.move_on_after(WAIT_S if timeout_s is None else timeout_s):
        while not predicate(status):
            await trio.sleep(0.02)
            status = await driver.status(handle)
        return status
    raise AssertionError(f"timed out waiting for {what}; last status: {status}")


async def collect_logs(driver: Driver, handle: InstanceHandle) -> list[bytes]:
    return [line async for line in driver.logs(handle)]


async def wait_log(driver: Driver, handle: InstanceHandle, needle: bytes) -> list[bytes]:
    with trio.move_on_after(WAIT_S):
        while True:
            lines = await collect_logs(driver, handle)
            if any(needle in line for line in lines):
                return lines
            await trio.sleep(0.02)
    raise AssertionError(f"{needle!r} never appeared in the logs of {handle.instance_id}")


# --------------------------------------------------------------------------- the checks


async def check_start_status_stop(make_driver: MakeDriver) -> None:
    async with make_driver() as driver:
        handle = await driver.start(InstanceSpec("life-0", service("life")))
        status = await wait_status(driver, handle, lambda s: s.state is InstanceState.RUNNING, "running")
        assert status.pid, status
        assert handle in await driver.instances()
        final = await driver.stop(handle, grace_s=5)
        assert final.state is InstanceState.EXITED and final.pid is None and final.final, final
        assert final.exit_code == -15, f"a plain process should die of SIGTERM, not {final.exit_code}"
        assert handle not in await driver.instances()
        try:
            await driver.status(handle)
        except UnknownInstance:
            pass
        else:
            raise AssertionError("status of a stopped instance should raise UnknownInstance")


async def check_exit_code(make_driver: MakeDriver) -> None:
    async with make_driver() as driver:
        handle = await driver.start(InstanceSpec("code-0", service("code", "raise SystemExit(3)")))
        status = await wait_status(driver, handle, lambda s: s.exit_code is not None, "an exit")
        status = await wait_status(driver, handle, lambda s: s.state is InstanceState.EXITED, "exited")
        assert status.exit_code == 3 and status.restarts == 0, status


async def check_missing_program(make_driver: MakeDriver) -> None:
    async with make_driver() as driver:
        spec = service("missing", argv=("/nonexistent/mycelium-no-such-program",))
        handle = await driver.start(InstanceSpec("missing-0", spec))
        status = await wait_status(driver, handle, lambda s: s.state is InstanceState.EXITED, "exited")
        assert status.exit_code == 127 and "cannot start" in status.message, status


async def check_restart_with_backoff(make_driver: MakeDriver) -> None:
    async with make_driver() as driver:
        spec = service("flaky", "raise SystemExit(1)", policy="on-failure")
        handle = await driver.start(InstanceSpec("flaky-0", spec))
        status = await wait_status(driver, handle, lambda s: s.restarts >= 2, "two restarts")
        assert status.exit_code == 1, status
        assert "restarting in" in status.message or status.state is not InstanceState.EXITED, status


async def check_on_failure_does_not_restart_success(make_driver: MakeDriver) -> None:
    async with make_driver() as driver:
        spec = service("done", "print('done', flush=True)", policy="on-failure")
        handle = await driver.start(InstanceSpec("done-0", spec))
        status = await wait_status(driver, handle, lambda s: "not restarting" in s.message, "finished")
        assert status.state is InstanceState.EXITED and status.exit_code == 0 and status.restarts == 0, status
        assert status.final, "an instance its policy will not restart is final"


async def check_crash_loop(make_driver: MakeDriver) -> None:
    async with make_driver() as driver:
        spec = service("crash", argv=("false",), policy="always")
        handle = await driver.start(InstanceSpec("crash-0", spec))
        status = await wait_status(driver, handle, lambda s: s.state is InstanceState.CRASH_LOOP, "crash_loop")
        assert status.restarts >= 2 and "crash loop" in status.message, status
        with trio.fail_after(3):
            final = await driver.stop(handle, grace_s=1)
        assert final.state is InstanceState.EXITED, final


async def _check_health(make_driver: MakeDriver, kind: str) -> None:
    code = ("import http.server, os\n"
            "http.server.ThreadingHTTPServer(('127.0.0.1', int(os.environ['PORT'])),"
            " http.server.SimpleHTTPRequestHandler).serve_forever()")
    check = HealthCheck(kind, port="http", path="/", period_ms=100, timeout_ms=1000)  # type: ignore[arg-type]
    spec = service(f"web-{kind}", code, ports=(PortSpec("http", 0),), health=check)
    async with make_driver() as driver:
        handle = await driver.start(InstanceSpec(f"web-{kind}-0", spec))
        assert (await driver.status(handle)).state in (InstanceState.STARTING, InstanceState.HEALTHY)
        await wait_status(driver, handle, lambda s: s.state is InstanceState.HEALTHY, f"{kind} healthy")


async def check_health_tcp(make_driver: MakeDriver) -> None:
    await _check_health(make_driver, "tcp")


async def check_health_http(make_driver: MakeDriver) -> None:
    await _check_health(make_driver, "http")


async def check_health_exec_failing(make_driver: MakeDriver) -> None:
    check = HealthCheck("exec", command=("false",), period_ms=50, timeout_ms=1000, failure_threshold=2)
    async with make_driver() as driver:
        handle = await driver.start(InstanceSpec("sick-0", service("sick", health=check)))
        status = await wait_status(driver, handle, lambda s: s.state is InstanceState.UNHEALTHY, "unhealthy")
        assert status.pid, "policy never: an unhealthy instance keeps running"


async def check_unhealthy_is_restarted(make_driver: MakeDriver) -> None:
    check = HealthCheck("exec", command=("false",), period_ms=50, timeout_ms=1000, failure_threshold=2)
    async with make_driver() as driver:
        handle = await driver.start(InstanceSpec("sick-1", service("sick", policy="always", health=check)))
        status = await wait_status(driver, handle, lambda s: s.restarts >= 1, "a restart after failed checks")
        assert "health" in status.message, status


async def check_logs(make_driver: MakeDriver) -> None:
    code = ("import sys, time\nprint('out-line', flush=True)\nprint('err-line', file=sys.stderr, flush=True)\n"
            "for i in range(3):\n    time.sleep(0.05); print(f'tick-{i}', flush=True)")
    async with make_driver() as driver:
        handle = await driver.start(InstanceSpec("talk-0", service("talk", code)))
        with trio.fail_after(WAIT_S):
            followed = [line async for line in driver.logs(handle, follow=True)]
        assert followed[:2] == [b"out-line", b"err-line"] or set(followed[:2]) == {b"out-line", b"err-line"}
        assert followed[2:] == [b"tick-0", b"tick-1", b"tick-2"], followed
        assert await collect_logs(driver, handle) == followed


async def check_port_zero(make_driver: MakeDriver) -> None:
    code = ("import os, time\nprint(os.environ['PORT'], os.environ['MYCELIUM_PORT_WEB'],"
            " os.environ['MYCELIUM_PORT_ADMIN'], flush=True)\ntime.sleep(60)")
    spec = service("ports", code, ports=(PortSpec("web", 0), PortSpec("admin", 0)))
    async with make_driver() as driver:
        handle = await driver.start(InstanceSpec("ports-0", spec))
        status = await driver.status(handle)
        web, admin = status.ports["web"], status.ports["admin"]
        assert web and admin and web != admin, status
        lines = await wait_log(driver, handle, f"{web} {web} {admin}".encode())
        assert lines[0] == f"{web} {web} {admin}".encode(), lines


async def check_fixed_port_in_use(make_driver: MakeDriver) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        spec = service("fixed", ports=(PortSpec("http", port),))
        async with make_driver() as driver:
            try:
                await driver.start(InstanceSpec("fixed-0", spec))
            except PortInUse as exc:
                assert str(port) in str(exc) and "in use" in str(exc), exc
            else:
                raise AssertionError(f"start should refuse port {port}, which is taken")
            assert await driver.instances() == []


async def check_sigterm_ignored(make_driver: MakeDriver) -> None:
    code = ("import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            "print('ready', flush=True)\ntime.sleep(60)")
    async with make_driver() as driver:
        handle = await driver.start(InstanceSpec("stubborn-0", service("stubborn", code)))
        await wait_log(driver, handle, b"ready")
        began = trio.current_time()
        with trio.fail_after(5):
            final = await driver.stop(handle, grace_s=0.3)
        assert trio.current_time() - began >= 0.25, "stopped before the grace period ended"
        assert final.exit_code == -9, f"expected death by SIGKILL, got {final}"


async def check_start_twice_refused(make_driver: MakeDriver) -> None:
    async with make_driver() as driver:
        spec = InstanceSpec("twice-0", service("twice"))
        await driver.start(spec)
        try:
            await driver.start(spec)
        except DriverError:
            pass
        else:
            raise AssertionError("starting a running instance id again should raise DriverError")


CHECKS = [
    check_start_status_stop, check_exit_code, check_missing_program, check_restart_with_backoff,
    check_on_failure_does_not_restart_success, check_crash_loop, check_health_tcp, check_health_http,
    check_health_exec_failing, check_unhealthy_is_restarted, check_logs, check_port_zero,
    check_fixed_port_in_use, check_sigterm_ignored, check_start_twice_refused,
]


async def check_driver(make_driver: MakeDriver) -> None:
    """Run every check; the first failing one raises AssertionError naming what went wrong."""
    for check in CHECKS:
        await check(make_driver)
