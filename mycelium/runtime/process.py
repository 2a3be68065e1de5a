"""The embedded process driver: supervised processes on this machine (the default on any laptop).

Each instance runs in its own session and process group (`start_new_session`), in
`<state_dir>/<instance>/work` (the spec's files are written there before every start), with a clean
environment: PATH, HOME, LANG, the spec's env, MYCELIUM_SERVICE, MYCELIUM_INSTANCE, and for every
port $MYCELIUM_PORT_<NAME> (and $PORT = the first port). `$(VAR)` in command and args is replaced
by that variable, so `[python3, -m, http.server, "$(PORT)"]` works without a shell.
stdout and stderr go to `<instance>/logs/output.log`, rotated by size.

Supervision: restart policy with exponential backoff (RestartPolicy.backoff_ms); a run shorter than
minUptime is a quick failure, and crashLoopAfter quick failures in a row show as `crash_loop` until a
run lasts minUptime. A health check that fails failureThreshold times in a row marks the instance
unhealthy and, unless the policy is `never`, kills it so the restart policy takes over. When the main
process exits, whatever is left of its group is killed. Stop = SIGTERM to the group, SIGKILL after
the grace period. Leftovers of a crashed driver are killed at start (see `leftovers.py`).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from mycelium.runtime import leftovers
from mycelium.runtime.driver import (
    DriverError, InstanceHandle, InstanceSpec, InstanceState, InstanceStatus, UnknownInstance,
)
from mycelium.runtime.limits import LimitPlan, plan_limits, remove_cgroup
from mycelium.runtime.logfiles import RotatingLog, read_lines
from mycelium.runtime.ports import assign_ports
from mycelium.runtime.probes import probe

LOG_FILE = "output.log"


@dataclass(frozen=True, slots=True)
class ProcessDriverConfig:
    stop_grace_s: float = 10.0  # SIGTERM→SIGKILL grace on shutdown (stop() takes its own)
    log_max_bytes: int = 10 * 2**20  # rotate output.log past this size; × (log_keep + 1) on disk
    log_keep: int = 3  # rotated files kept per instance
    log_poll_s: float = 0.2  # how often `logs(follow=True)` looks for new output
    cgroup_root: Path = Path("/sys/fs/cgroup")  # cgroup v2 mount; limits fall back to rlimits
    reap_grace_s: float = 2.0  # SIGTERM→SIGKILL grace for leftovers of a crashed driver
    drain_s: float = 1.0  # keep reading output this long after the main process exited
    port_check_host: str = "0.0.0.0"  # where fixed ports are test-bound and free ports are picked
    startup_probe_ms: int = 250  # probe interval before the first healthy result (if < the period)


@dataclass(slots=True, eq=False)
class _Instance:
    spec: InstanceSpec
    dir: Path
    ports: dict[str, int]
    env: dict[str, str]
    limits: LimitPlan
    log: RotatingLog
    state: InstanceState = InstanceState.STARTING
    restarts: int = 0
    exit_code: int | None = None
    message: str = ""
    proc: trio.Process | None = None
    quick_failures: int = 0
    kill_reason: str = ""
    stopping: bool = False
    backoff: trio.CancelScope | None = None
    done: trio.Event = field(default_factory=trio.Event)

    @property
    def workdir(self) -> Path:
        return self.dir / "work"


class ProcessDriver:
    name = "process"

    def __init__(self, state_dir: Path, nursery: trio.Nursery, config: ProcessDriverConfig = ProcessDriverConfig()):
        self.state_dir = Path(state_dir)
        self.config = config
        self.reaped: list[str] = []  # what reap_leftovers() found, for the daemon's log
        self._nursery = nursery
        self._instances: dict[str, _Instance] = {}
        self.volumes: Any = None  # attach/detach of spec.volumes (storage.workload_mounts), set by the runner
        self.state_dir.mkdir(parents=True, exist_ok=True)

    @classmethod
    @asynccontextmanager
    async def open(cls, state_dir: Path, config: ProcessDriverConfig = ProcessDriverConfig()) -> AsyncIterator[ProcessDriver]:
        """The driver with its supervision nursery; on exit every instance is stopped.

        The supervision tasks run shielded from the caller's cancellation: when the caller is
        cancelled (daemon shutdown), `aclose` still needs them to see each process exit, otherwise
        a process that ignores SIGTERM would lose its supervisor before the SIGKILL and be orphaned.
        Only the shielded `aclose` on the way out (then an explicit cancel) ends them."""
        try:
            async with trio.open_nursery() as outer:
                nursery, supervision = await outer.start(_shielded_nursery)
                driver = cls(state_dir, nursery, config)
                try:
                    await driver.reap_leftovers()
                    yield driver
                finally:
                    with trio.CancelScope(shield=True):
                        await driver.aclose()
                    supervision.cancel()
        except BaseExceptionGroup as group:
            if len(group.exceptions) == 1:  # the caller's own error: hand it back unwrapped
                raise group.exceptions[0] from None
            raise

    async def reap_leftovers(self) -> list[str]:
        records, bad = leftovers.read_records(self.state_dir)
        self.reaped.extend(bad)
        for instance_dir, record in records:
            if record.instance_id in self._instances:
                continue
            found = await leftovers.reap(record, self.config.reap_grace_s)
            if found:
                self.reaped.append(found)
            leftovers.remove_record(instance_dir)
        return self.reaped

    # ------------------------------------------------------------------ the Driver interface

    async def start(self, spec: InstanceSpec) -> InstanceHandle:
        old = self._instances.get(spec.instance_id)
        if old is not None and not old.done.is_set():
            raise DriverError(f"instance {spec.instance_id} is already running; stop it first")
        if old is not None:
            self._forget(old)
        service = spec.service
        if not service.command:
            raise DriverError(f"service {service.name} has no command; the process driver runs commands "
                              "(an image needs the k3s driver)")
        ports = self._assign_ports(spec)
        instance_dir = self.state_dir / spec.instance_id
        try:
            (instance_dir / "work").mkdir(parents=True, exist_ok=True)
            log = RotatingLog(instance_dir / "logs" / LOG_FILE, max_bytes=self.config.log_max_bytes,
                              keep=self.config.log_keep)
        except OSError as exc:
            raise DriverError(f"cannot prepare {instance_dir} for instance {spec.instance_id}: {exc}; "
                              "check that the state directory is writable and the disk is not full") from exc
        inst = _Instance(spec, instance_dir, ports, {}, plan_limits(spec.instance_id, service.resources,
                                                                    self.config.cgroup_root), log)
        inst.env = self._environment(inst)
        await self._attach_volumes(inst)
        self._instances[spec.instance_id] = inst
        await self._nursery.start(self._supervise, inst)
        return InstanceHandle(self.name, spec.instance_id)

    async def stop(self, handle: InstanceHandle, grace_s: float | None = None) -> InstanceStatus:
        inst = self._get(handle)
        grace = self.config.stop_grace_s if grace_s is None else grace_s
        inst.stopping = True
        if inst.backoff is not None:
            inst.backoff.cancel()
        deadline = trio.current_time() + grace
        termed: trio.Process | None = None
        while not inst.done.is_set():
            proc = inst.proc
            if proc is not None and proc.returncode is None and proc is not termed:
                leftovers.signal_group(proc.pid, signal.SIGTERM)
                termed = proc
            if proc is not None and proc.returncode is None and trio.current_time() >= deadline:
                leftovers.signal_group(proc.pid, signal.SIGKILL)
            with trio.move_on_after(0.05):
                await inst.done.wait()
        final = self._status(inst)
        self._forget(inst)
        await self._detach_volumes(inst)
        return final

    async def _attach_volumes(self, inst: _Instance) -> None:
        for i, v in enumerate(inst.spec.service.volumes):
            try:
                if self.volumes is None:
                    raise DriverError("this node's runtime has no distributed store to mount volumes from")
                await self.volumes.attach(v.name, inst.workdir / v.path, self._nursery)
            except (DriverError, OSError, RuntimeError) as exc:  # storage's VolumeMountError is a RuntimeError
                for done in inst.spec.service.volumes[:i]:
                    await self.volumes.detach(done.name, inst.workdir / done.path)
                if isinstance(exc, DriverError):
                    raise
                raise DriverError(f"cannot mount volume {v.name!r} at {v.path} for {inst.spec.instance_id}: {exc}") from exc

    async def _detach_volumes(self, inst: _Instance) -> None:
        if self.volumes is not None:
            with trio.CancelScope(shield=True):
                for v in inst.spec.service.volumes:
                    await self.volumes.detach(v.name, inst.workdir / v.path)

    async def status(self, handle: InstanceHandle) -> InstanceStatus:
        return self._status(self._get(handle))

    async def instances(self) -> list[InstanceHandle]:
        return [InstanceHandle(self.name, iid) for iid in sorted(self._instances)]

    async def logs(self, handle: InstanceHandle, *, follow: bool = False) -> AsyncIterator[bytes]:
        inst = self._instances.get(handle.instance_id)
        path = self.state_dir / handle.instance_id / "logs" / LOG_FILE
        if inst is None and not path.exists():
            raise UnknownInstance(f"no instance {handle.instance_id} and no logs for it on this node")
        finished = (lambda: True) if inst is None else (lambda: inst.stopping or inst.done.is_set())
        async for line in read_lines(path, keep=self.config.log_keep, follow=follow, finished=finished,
                                     poll_s=self.config.log_poll_s):
            yield line

    async def aclose(self) -> None:
        async with trio.open_nursery() as nursery:
            for iid in list(self._instances):
                nursery.start_soon(self.stop, InstanceHandle(self.name, iid), self.config.stop_grace_s)

    # ------------------------------------------------------------------ supervision

    async def _supervise(self, inst: _Instance, task_status=trio.TASK_STATUS_IGNORED) -> None:
        policy = inst.spec.service.restart
        reported = False

        def spawned() -> None:
            nonlocal reported
            if not reported:
                reported = True
                task_status.started()

        try:
            while not inst.stopping:
                began = trio.current_time()
                inst.kill_reason = ""
                code = await self._run_once(inst, spawned)
                inst.exit_code = code
                uptime_s = trio.current_time() - began
                if inst.stopping:
                    inst.state, inst.message = InstanceState.EXITED, f"stopped (exit code {code})"
                    break
                why = inst.kill_reason or f"exited with code {code}"
                if policy.policy == "never" or (policy.policy == "on-failure" and code == 0):
                    inst.state = InstanceState.EXITED
                    inst.message = f"{why}; restart policy {policy.policy}: not restarting"
                    break
                quick = uptime_s * 1000 < policy.min_uptime_ms
                inst.quick_failures = inst.quick_failures + 1 if quick else 1
                delay_ms = policy.backoff_ms(inst.quick_failures)
                looping = inst.quick_failures >= policy.crash_loop_after
                inst.state = InstanceState.CRASH_LOOP if looping else InstanceState.EXITED
                inst.message = (f"{why} after {uptime_s:.1f} s; restarting in {delay_ms / 1000:.1f} s"
                                + (f" (crash loop: {inst.quick_failures} quick failures in a row)" if looping else ""))
                with trio.CancelScope() as inst.backoff:
                    await trio.sleep(delay_ms / 1000)
                inst.backoff = None
                if not inst.stopping:
                    inst.restarts += 1
            if inst.stopping and inst.state is not InstanceState.EXITED:
                inst.state, inst.message = InstanceState.EXITED, "stopped while waiting to restart"
        finally:
            spawned()
            inst.proc = None
            inst.done.set()

    async def _run_once(self, inst: _Instance, spawned) -> int:
        service = inst.spec.service
        argv = [_expand(a, inst.env) for a in (*service.command, *service.args)]
        try:
            self._write_files(inst)
            proc = await trio.lowlevel.open_process(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                cwd=str(inst.workdir), env=inst.env, start_new_session=True, preexec_fn=inst.limits.preexec)
        except (OSError, subprocess.SubprocessError) as exc:
            detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            inst.kill_reason = (f"cannot start {argv[0]!r}: {detail}; check spec.command and that the "
                                "program is installed on this node")
            _note(inst, inst.kill_reason)
            spawned()
            return 127
        inst.proc = proc
        started_at = leftovers.start_time(proc.pid)
        record = leftovers.RunRecord(inst.spec.instance_id, proc.pid, proc.pid, started_at or 0.0)
        if started_at is not None:
            try:
                leftovers.write_record(inst.dir, record)
            except OSError as exc:  # the process runs anyway; only crash-recovery is weakened
                inst.message = f"cannot write the run record ({exc}): a daemon crash could leave it orphaned"
        looping = inst.quick_failures >= service.restart.crash_loop_after
        inst.state = (InstanceState.CRASH_LOOP if looping else
                      InstanceState.STARTING if service.health else InstanceState.RUNNING)
        spawned()
        drained = trio.Event()
        async with trio.open_nursery() as run:
            run.start_soon(self._pump, inst, proc, drained)
            run.start_soon(self._watch_uptime, inst)
            if service.health is not None:
                run.start_soon(self._watch_health, inst, proc)
            await proc.wait()
            # stragglers in the group would leak and keep the output pipe open: kill them now
            leftovers.signal_group(proc.pid, signal.SIGKILL)
            with trio.move_on_after(self.config.drain_s):
                await drained.wait()
            run.cancel_scope.cancel()
        if not await leftovers.wait_group_gone(record, self.config.drain_s):
            _note(inst, f"process group {proc.pid} survived SIGKILL for {self.config.drain_s} s "
                  "(stuck in the kernel?); its run record is kept so a restart reaps it")
            return proc.returncode
        inst.proc = None
        leftovers.remove_record(inst.dir)
        return proc.returncode

    async def _pump(self, inst: _Instance, proc: trio.Process, drained: trio.Event) -> None:
        lost = 0
        try:
            while chunk := await proc.stdout.receive_some(65536):
                try:
                    inst.log.write(chunk)
                except OSError as exc:  # keep draining: a full pipe would block the process
                    lost += len(chunk)
                    inst.message = f"cannot write logs ({exc.strerror}); {lost} bytes of output dropped"
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass  # the pipe went away with the process: nothing more to read
        finally:
            drained.set()
            await proc.stdout.aclose()

    async def _watch_uptime(self, inst: _Instance) -> None:
        await trio.sleep(inst.spec.service.restart.min_uptime_ms / 1000)
        inst.quick_failures = 0
        if inst.state is InstanceState.CRASH_LOOP:
            inst.state = InstanceState.STARTING if inst.spec.service.health else InstanceState.RUNNING
            inst.message = "running steadily again after a crash loop"

    async def _watch_health(self, inst: _Instance, proc: trio.Process) -> None:
        check = inst.spec.service.health
        assert check is not None
        await trio.sleep(check.initial_delay_ms / 1000)
        successes = failures = 0
        failing_since = 0.0
        while True:
            ok, detail = await probe(check, inst.ports, inst.env, inst.workdir)
            now = trio.current_time()
            if ok:
                successes, failures = successes + 1, 0
            else:
                successes, failures = 0, failures + 1
                failing_since = now if failures == 1 else failing_since
            steady = inst.quick_failures < inst.spec.service.restart.crash_loop_after
            # Until its first success an instance is probed faster than its period; those quick
            # probes must not shrink its time to start: a process that is slow to come up (a busy
            # box, a Pi) gets failure_threshold x period before it is called unhealthy, as it would
            # at the configured rate.
            starting = inst.state in (InstanceState.STARTING, InstanceState.CRASH_LOOP)
            patience_s = check.failure_threshold * check.period_ms / 1000 if starting else 0.0
            if ok and successes >= check.success_threshold and steady:
                inst.state = InstanceState.HEALTHY
            elif not ok and failures >= check.failure_threshold and now - failing_since >= patience_s:
                inst.state, inst.message = InstanceState.UNHEALTHY, detail
                if inst.spec.service.restart.policy != "never" and not inst.stopping:
                    inst.kill_reason = f"killed after {failures} failed health checks ({detail})"
                    leftovers.signal_group(proc.pid, signal.SIGKILL)
                    return
            # until the first success, probe more often so a fresh instance turns healthy quickly
            starting = inst.state in (InstanceState.STARTING, InstanceState.CRASH_LOOP)
            period_ms = min(check.period_ms, self.config.startup_probe_ms) if starting else check.period_ms
            await trio.sleep(period_ms / 1000)

    # ------------------------------------------------------------------ helpers

    def _assign_ports(self, spec: InstanceSpec) -> dict[str, int]:
        taken = {p for other in self._instances.values() for p in other.ports.values()}
        return assign_ports(spec.service, taken, self.config.port_check_host)

    def _environment(self, inst: _Instance) -> dict[str, str]:
        env = {"PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"), "HOME": str(inst.workdir),
               "LANG": os.environ.get("LANG", "C.UTF-8")}
        env.update(inst.spec.service.env)
        env["MYCELIUM_SERVICE"] = inst.spec.service.name
        env["MYCELIUM_INSTANCE"] = inst.spec.instance_id
        for name, number in inst.ports.items():
            env[f"MYCELIUM_PORT_{name.upper().replace('-', '_')}"] = str(number)
        if inst.ports:
            env["PORT"] = str(next(iter(inst.ports.values())))
        return env

    def _write_files(self, inst: _Instance) -> None:
        root = inst.workdir.resolve()
        for f in inst.spec.service.files:
            target = (root / f.path).resolve()
            if root not in target.parents:
                raise OSError(f"file path {f.path!r} leaves the working directory")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(f.content)
            target.chmod(f.mode)

    def _status(self, inst: _Instance) -> InstanceStatus:
        return InstanceStatus(
            instance_id=inst.spec.instance_id, state=inst.state, version=inst.spec.service.version(),
            restarts=inst.restarts, exit_code=inst.exit_code,
            pid=inst.proc.pid if inst.proc is not None and inst.proc.returncode is None else None,
            ports=dict(inst.ports), limits=inst.limits.note, message=inst.message, final=inst.done.is_set())

    def _get(self, handle: InstanceHandle) -> _Instance:
        inst = self._instances.get(handle.instance_id)
        if inst is None:
            raise UnknownInstance(f"no instance {handle.instance_id} on the {self.name} driver")
        return inst

    def _forget(self, inst: _Instance) -> None:
        self._instances.pop(inst.spec.instance_id, None)
        inst.log.close()
        remove_cgroup(inst.limits)


async def _shielded_nursery(task_status=trio.TASK_STATUS_IGNORED) -> None:
    """A nursery that outside cancellation does not reach; hands out (nursery, its cancel scope)."""
    with trio.CancelScope(shield=True) as scope:
        async with trio.open_nursery() as nursery:
            task_status.started((nursery, scope))
            await trio.sleep_forever()


def _note(inst: _Instance, text: str) -> None:
    """A line from the supervisor in the instance's log, so `mycelium logs` shows why things happened."""
    try:
        inst.log.write(f"[mycelium] {text}\n".encode())
    except OSError:
        pass  # the same failure is already visible in the status message; logs are best effort


def _expand(arg: str, env: dict[str, str]) -> str:
    """Replace $(NAME) by env[NAME] (unknown names stay as written; $$(NAME) is a literal $(NAME))."""
    return re.sub(r"\$(\$?)\(([A-Za-z_][A-Za-z0-9_]*)\)",
                  lambda m: f"$({m.group(2)})" if m.group(1) else env.get(m.group(2), m.group(0)), arg)
