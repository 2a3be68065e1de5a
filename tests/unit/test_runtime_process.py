"""Process-driver specifics: no orphans (stop and crash), limits, files, env expansion, run records."""

from __future__ import annotations

import os
import resource
import signal
import sys
from pathlib import Path

import psutil
import pytest
import trio

from mycelium.runtime import leftovers
from mycelium.runtime.conformance import service, wait_log, wait_status
from mycelium.runtime.driver import InstanceHandle, InstanceSpec, InstanceState, PortInUse, UnknownInstance
from mycelium.runtime.process import ProcessDriver, ProcessDriverConfig, _expand
from mycelium.runtime.spec import FileSpec, PortSpec, Resources

CONFIG = ProcessDriverConfig(stop_grace_s=2.0, log_poll_s=0.02, reap_grace_s=0.3,
                             cgroup_root=Path("/nonexistent-cgroup"))
WITH_CHILD = ("import subprocess, sys, time\n"
              "child = subprocess.Popen(['sleep', '60'])\n"
              "print(child.pid, flush=True)\n"
              "time.sleep(60)")
STUBBORN_WITH_CHILD = "import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n" + WITH_CHILD


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.fixture
def started_pids():
    """Pids a test saw; whatever happens, none survives the test."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
        leftovers.collect_zombie(pid)


async def _main_and_child(driver, handle, pids) -> list[int]:
    lines = await wait_log(driver, handle, b"")
    status = await wait_status(driver, handle, lambda s: s.pid is not None, "a pid")
    pids.extend([status.pid, int(lines[0])])
    return pids


async def test_stop_kills_the_whole_group(tmp_path, started_pids):
    async with ProcessDriver.open(tmp_path, CONFIG) as driver:
        handle = await driver.start(InstanceSpec("tree-0", service("tree", WITH_CHILD)))
        main, child = await _main_and_child(driver, handle, started_pids)
        assert alive(main) and alive(child)
        assert os.getpgid(child) == main, "the instance should lead its own process group"
        await driver.stop(handle, grace_s=2)
        assert not alive(main) and not alive(child)
        assert not (tmp_path / "tree-0" / leftovers.RUN_FILE).exists()


async def test_stragglers_are_killed_when_the_main_process_exits(tmp_path, started_pids):
    code = "import subprocess\nchild = subprocess.Popen(['sleep', '60'])\nprint(child.pid, flush=True)"
    async with ProcessDriver.open(tmp_path, CONFIG) as driver:
        handle = await driver.start(InstanceSpec("quit-0", service("quit", code)))
        lines = await wait_log(driver, handle, b"")
        started_pids.append(int(lines[0]))
        await wait_status(driver, handle, lambda s: s.state is InstanceState.EXITED, "exited")
        with trio.fail_after(5):
            while alive(started_pids[0]):
                await trio.sleep(0.02)


@pytest.mark.parametrize("code", [WITH_CHILD, STUBBORN_WITH_CHILD], ids=["polite", "ignores-sigterm"])
async def test_a_restarted_driver_kills_the_leftovers_of_a_crashed_one(tmp_path, started_pids, code):
    async with trio.open_nursery() as nursery:
        crashed = ProcessDriver(tmp_path, nursery, CONFIG)
        handle = await crashed.start(InstanceSpec("web-0", service("web", code)))
        main, child = await _main_and_child(crashed, handle, started_pids)
        assert (tmp_path / "web-0" / leftovers.RUN_FILE).exists()
        nursery.cancel_scope.cancel()  # the daemon dies: nothing is stopped
    assert alive(main) and alive(child), "the simulated crash should leave the group running"
    async with ProcessDriver.open(tmp_path, CONFIG) as driver:
        assert any("web-0" in message and "leftover" in message for message in driver.reaped), driver.reaped
        assert not alive(main) and not alive(child)
        assert not (tmp_path / "web-0" / leftovers.RUN_FILE).exists()
        assert await driver.instances() == []


async def test_cancelling_the_owner_still_stops_a_process_that_ignores_sigterm(tmp_path, started_pids):
    """Regression: a cancelled caller (daemon shutdown) used to cancel the supervision tasks too, so
    the shielded aclose() saw the instance as done after SIGTERM and never sent SIGKILL."""
    config = ProcessDriverConfig(stop_grace_s=0.3, log_poll_s=0.02, reap_grace_s=0.3,
                                 cgroup_root=Path("/nonexistent-cgroup"))
    with trio.move_on_after(30) as scope:
        async with ProcessDriver.open(tmp_path, config) as driver:
            handle = await driver.start(InstanceSpec("mule-0", service("mule", STUBBORN_WITH_CHILD)))
            main, child = await _main_and_child(driver, handle, started_pids)
            scope.deadline = trio.current_time()  # cancel the owner, as `mycelium down` does
            await trio.sleep_forever()
    assert not alive(main) and not alive(child)


async def test_a_recycled_pid_is_not_killed(tmp_path):
    """A run record whose start time does not match the live process is someone else's pid."""
    (tmp_path / "old-0").mkdir()
    me = os.getpid()
    record = leftovers.RunRecord("old-0", me, os.getpgid(me), leftovers.start_time(me) + 3600)
    leftovers.write_record(tmp_path / "old-0", record)
    (tmp_path / "bad-0").mkdir()
    (tmp_path / "bad-0" / leftovers.RUN_FILE).write_text("{not json")
    async with ProcessDriver.open(tmp_path, CONFIG) as driver:
        assert not any("old-0" in m for m in driver.reaped)
        assert any("bad-0" in m and "unreadable" in m for m in driver.reaped)
    assert not (tmp_path / "old-0" / leftovers.RUN_FILE).exists()


async def test_rlimits_are_applied_and_reported_without_cgroup_v2(tmp_path):
    code = ("import resource, time\nprint(resource.getrlimit(resource.RLIMIT_AS)[0], flush=True)\n"
            "time.sleep(60)")
    spec = service("limited", code, resources=Resources(cpu_millicores=250, memory_bytes=300 * 2**20))
    async with ProcessDriver.open(tmp_path, CONFIG) as driver:
        handle = await driver.start(InstanceSpec("limited-0", spec))
        lines = await wait_log(driver, handle, b"")
        assert int(lines[0]) == 300 * 2**20
        status = await driver.status(handle)
        assert status.limits.startswith("rlimit only (no cgroup v2 at /nonexistent-cgroup)")
        assert "CPU time not enforced" in status.limits and "nice +10" in status.limits


async def test_cgroup_v2_limits_when_the_hierarchy_is_writable(tmp_path):
    root = tmp_path / "cgroup"
    root.mkdir()
    (root / "cgroup.controllers").write_text("cpu memory\n")
    config = ProcessDriverConfig(stop_grace_s=2.0, log_poll_s=0.02, cgroup_root=root)
    spec = service("boxed", resources=Resources(cpu_millicores=500, memory_bytes=64 * 2**20))
    async with ProcessDriver.open(tmp_path / "state", config) as driver:
        handle = await driver.start(InstanceSpec("boxed-0", spec))
        status = await wait_status(driver, handle, lambda s: s.pid is not None, "a pid")
        group = root / "mycelium" / "boxed-0"
        assert (group / "memory.max").read_text() == str(64 * 2**20)
        assert (group / "cpu.max").read_text() == "50000 100000"
        assert (group / "cgroup.procs").read_text() == str(status.pid)
        assert status.limits.startswith("cgroup v2")


async def test_files_env_and_argument_expansion(tmp_path):
    code = ("import os, sys, time\nprint(open('conf/app.txt').read().strip(), sys.argv[1], os.environ['GREETING'],"
            " os.environ['MYCELIUM_INSTANCE'], os.environ['MYCELIUM_SERVICE'], flush=True)\ntime.sleep(60)")
    spec = service("files", argv=(sys.executable, "-c", code, "port=$(PORT)"), ports=(PortSpec("http", 0),),
                   files=(FileSpec("conf/app.txt", "from-a-file\n"),), env=(("GREETING", "hi"),))
    async with ProcessDriver.open(tmp_path, CONFIG) as driver:
        handle = await driver.start(InstanceSpec("files-0", spec))
        port = (await driver.status(handle)).ports["http"]
        await wait_log(driver, handle, f"from-a-file port={port} hi files-0 files".encode())


def test_expand():
    env = {"PORT": "8080"}
    assert _expand("--port=$(PORT)", env) == "--port=8080"
    assert _expand("$(MISSING)", env) == "$(MISSING)"
    assert _expand("$$(PORT)", env) == "$(PORT)"


async def test_two_instances_cannot_share_a_fixed_port(tmp_path):
    import socket
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    spec = service("fixed", "import time\ntime.sleep(60)", ports=(PortSpec("http", port),))
    async with ProcessDriver.open(tmp_path, CONFIG) as driver:
        await driver.start(InstanceSpec("fixed-0", spec))
        with pytest.raises(PortInUse, match=f"port {port} \\(http\\) of service fixed"):
            await driver.start(InstanceSpec("fixed-1", spec))


async def test_logs_survive_stop_and_unknown_instances_are_reported(tmp_path):
    async with ProcessDriver.open(tmp_path, CONFIG) as driver:
        handle = await driver.start(InstanceSpec("say-0", service("say", "print('bye', flush=True)")))
        await wait_status(driver, handle, lambda s: s.state is InstanceState.EXITED, "exited")
        await driver.stop(handle)
        assert [line async for line in driver.logs(handle)] == [b"bye"]
        with pytest.raises(UnknownInstance):
            await driver.status(handle)
        with pytest.raises(UnknownInstance, match="no instance nope-0"):
            _ = [line async for line in driver.logs(InstanceHandle("process", "nope-0"))]


def test_instance_ids_must_be_safe_directory_names():
    with pytest.raises(ValueError, match="instance id"):
        InstanceSpec("../etc", service("x"))


async def test_rlimit_fallback_does_not_touch_the_parent(tmp_path):
    before = resource.getrlimit(resource.RLIMIT_AS)
    async with ProcessDriver.open(tmp_path, CONFIG) as driver:
        await driver.start(InstanceSpec("limit-0", service("limit", "print(1)")))
    assert resource.getrlimit(resource.RLIMIT_AS) == before
