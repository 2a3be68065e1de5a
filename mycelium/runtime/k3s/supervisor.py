"""Runs `k3s server` or `k3s agent` for this node, as the cluster plan says, and reports whether
workloads can use it. The trio shell around supervision.Supervision.

Per change of plan: write the token file, K3s's config and the CNI config (config.py); if they
changed, restart K3s. The process: `<binary> <server|agent> --config <state>/k3s/config.yaml`,
output to `<state>/k3s/k3s.log` (rotated). Readiness: a server is ready when its API server's
`/readyz` answers "ok" through the kubeconfig K3s wrote (the kubernetes client's own TLS and client
certificate handling); an agent when its kubelet's `/healthz` answers (http://127.0.0.1:10248).
Anything else — no binary, not ready in time, crash loop — is reported as runtime `process` with
the reason, and the node's workloads stay on the process driver.

A new join token (network-secret rotation, token.py) on a server whose datastore already exists is
not written at once: once that server is ready, `k3s token rotate` moves it to the new token, then
the token file is rewritten and K3s restarted with it (retried every ROTATE_RETRY_S on failure,
with the old token kept meanwhile).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import trio
import yaml

from mycelium.runtime.k3s.config import NodeFiles, NodePaths, install_files
from mycelium.runtime.k3s.plan import K3sMode
from mycelium.runtime.k3s.supervision import K3sState, Supervision, SupervisorConfig
from mycelium.observability.logs import get_logger
from mycelium.runtime.k3s.token import read_token_file, rotate_argv, rotation_needed, write_token_file
from mycelium.runtime.logfiles import RotatingLog

log = get_logger("mycelium.k3s")
ROTATE_RETRY_S = 30.0  # a failed `k3s token rotate` is tried again after this
ROTATE_TIMEOUT_S = 60.0

KUBELET_HEALTHZ = "http://127.0.0.1:10248/healthz"
INSTALL_HINT = ("install K3s (a single static binary: https://github.com/k3s-io/k3s/releases, or "
                "`curl -sfL https://get.k3s.io | INSTALL_K3S_SKIP_START=true sh -`) and re-run "
                "./install.sh --k3s --k3s-binary /usr/local/bin/k3s")


@dataclass(frozen=True, slots=True)
class RuntimeReport:
    """What `mycelium status` shows about the workload runtime."""

    runtime: str  # "k3s" when K3s is ready for workloads, else "process"
    reason: str  # why (always set when runtime is "process")
    mode: str  # server | agent | none
    state: str  # K3sState value
    restarts: int = 0
    pid: int | None = None
    cluster: dict = field(default_factory=dict)  # datastore, servers, server_url


def server_readiness(kubeconfig: Path) -> tuple[bool, str]:
    """GET /readyz through the kubeconfig (blocking: run in a thread)."""
    if not kubeconfig.exists():
        return False, f"no kubeconfig at {kubeconfig} yet"
    from kubernetes import client, config  # the k3s extra; imported only where K3s runs

    try:
        api = config.new_client_from_config(str(kubeconfig))
        try:
            method, url, headers, _body, _ = api.param_serialize("GET", "/readyz", header_params={"Accept": "text/plain"},
                                                                 auth_settings=["BearerToken"])
            resp = api.call_api(method, url, header_params=headers, _request_timeout=5)
            resp.read()
            status, body = resp.status, (resp.data or b"").decode(errors="replace")
        finally:
            api.close()
    except (client.exceptions.ApiException, OSError, ValueError, config.ConfigException) as exc:
        return False, f"/readyz unreachable: {type(exc).__name__}: {str(exc)[:160]}"
    except Exception as exc:  # noqa: BLE001 - urllib3's connection/TLS errors: all mean "not ready"
        return False, f"/readyz unreachable: {type(exc).__name__}: {str(exc)[:160]}"
    return status == 200 and body.strip() == "ok", f"/readyz answered {status}: {body[:120]}"


def agent_readiness(url: str) -> tuple[bool, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            body = resp.read(200).decode(errors="replace")
            return resp.status == 200 and body.strip() == "ok", f"{url} answered {resp.status}: {body[:80]}"
    except (urllib.error.URLError, OSError) as exc:
        return False, f"{url} unreachable: {exc}"


class K3sSupervisor:
    def __init__(self, paths: NodePaths, binary: str | None, config: SupervisorConfig = SupervisorConfig(),
                 *, agent_healthz: str = KUBELET_HEALTHZ, env: dict[str, str] | None = None) -> None:
        self.paths = paths
        self.binary = binary
        self.config = config
        self.agent_healthz = agent_healthz
        self.env = env
        self.sup = Supervision(config)
        self.files: NodeFiles | None = None
        self.cluster: dict = {}
        self.proc: trio.Process | None = None
        self._changed = trio.Event()
        self._reason = "K3s has not been configured yet"
        self.rotation: tuple[str, str] | None = None  # (old, new) join token awaiting `k3s token rotate`
        self.rotation_error = ""
        self._rotation_retry_at = 0.0

    # ------------------------------------------------------------------------------ inputs
    def set_plan(self, files: NodeFiles, token: str, cluster: dict) -> None:
        """A new desired state (from the newest Primary). Restarts K3s when its files change."""
        self.cluster = dict(cluster)
        initialised = (self.paths.data_dir / "server" / "token").exists()  # K3s's own copy: the datastore exists
        self.rotation = rotation_needed(files.mode is K3sMode.SERVER, initialised,
                                        read_token_file(self.paths.token_file), token)
        changed = files.mode is not K3sMode.NONE and (
            (self.rotation is None and write_token_file(self.paths.token_file, token)) | install_files(files, self.paths))
        if self.files is None or changed or files.mode is not self.files.mode:
            self.files = files
            self._changed.set()

    def resolve_binary(self) -> str | None:
        """The k3s executable to run, or None when it is not there (reported as state missing)."""
        if not self.binary:
            return None
        return shutil.which(self.binary) or (self.binary if os.access(self.binary, os.X_OK) else None)

    def report(self) -> RuntimeReport:
        mode = self.files.mode.value if self.files else "none"
        state = self.sup.state
        pid = self.proc.pid if self.proc is not None and self.proc.returncode is None else None
        cluster = self.cluster
        if self.rotation is not None:
            cluster = {**cluster, "token_rotation": self.rotation_error or "pending: k3s token rotate once the server is ready"}
        if self.sup.usable:
            return RuntimeReport("k3s", f"k3s {mode} ready", mode, state.value, self.sup.restarts, pid, cluster)
        return RuntimeReport("process", self._why(), mode, state.value, self.sup.restarts, pid, cluster)

    def _why(self) -> str:
        state, log = self.sup.state, self.paths.root / "k3s.log"
        if state is K3sState.NONE or state is K3sState.MISSING:
            return self._reason
        if state is K3sState.STARTING:
            return f"k3s {self.files.mode.value} starting (not ready yet)"
        if state is K3sState.STOPPED:
            return self._reason
        return f"k3s {self.files.mode.value if self.files else ''} {self.sup.message} (see {log})"

    # ------------------------------------------------------------------------------ the loop
    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            await self._changed.wait()
            self._changed = trio.Event()
            files = self.files
            if files is None or files.mode is K3sMode.NONE:
                self.sup.state, self._reason = K3sState.NONE, (files.reason if files else "no plan")
                continue
            binary = self.resolve_binary()
            if not binary:
                self.sup.state = K3sState.MISSING
                self._reason = (f"no k3s binary at {self.binary!r}; {INSTALL_HINT}" if self.binary
                                else f"K3s is not enabled on this node; {INSTALL_HINT}")
                continue
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._supervise, binary, files.mode)
                await self._changed.wait()  # a new plan: stop this k3s and start again
                nursery.cancel_scope.cancel()
            # _changed stays set so the loop picks the new plan up at once

    async def _supervise(self, binary: str, mode: K3sMode) -> None:
        log = RotatingLog(self.paths.root / "k3s.log", max_bytes=self.config.log_max_bytes, keep=2)
        try:
            while True:
                code = await self._run_once(binary, mode, log)
                delay = self.sup.on_exit(trio.current_time(), code)
                await trio.sleep(delay)
        finally:
            log.close()

    async def _run_once(self, binary: str, mode: K3sMode, log: RotatingLog) -> int:
        argv = [binary, mode.value, "--config", str(self.paths.config)]
        try:
            proc = await trio.lowlevel.open_process(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                                    stderr=subprocess.STDOUT, start_new_session=True, env=self.env)
        except OSError as exc:
            log.write(f"cannot start {binary}: {exc}\n".encode())
            self.sup.on_start(trio.current_time())
            return 127
        self.proc = proc
        self.sup.on_start(trio.current_time())
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._pump, proc, log)
                nursery.start_soon(self._probe, mode, binary)
                await proc.wait()
                nursery.cancel_scope.cancel()
            return proc.returncode
        finally:
            if proc.returncode is None:
                with trio.CancelScope(shield=True):
                    await self._stop(proc)
            self.proc = None

    async def _stop(self, proc: trio.Process) -> None:
        proc.terminate()
        with trio.move_on_after(self.config.stop_grace_s):
            await proc.wait()
            return
        proc.kill()
        await proc.wait()

    async def _pump(self, proc: trio.Process, log: RotatingLog) -> None:
        while chunk := await proc.stdout.receive_some(65536):
            try:
                log.write(chunk)
            except OSError:
                pass  # a full disk must not block K3s on a full pipe; the output is lost, K3s runs on

    async def _probe(self, mode: K3sMode, binary: str) -> None:
        while True:
            if mode is K3sMode.SERVER:
                ready, detail = await trio.to_thread.run_sync(server_readiness, self.paths.kubeconfig)
            else:
                ready, detail = await trio.to_thread.run_sync(agent_readiness, self.agent_healthz)
            self.sup.on_ready(trio.current_time(), ready, detail)
            if ready and mode is K3sMode.SERVER and self.rotation is not None \
                    and trio.current_time() >= self._rotation_retry_at:
                await self._rotate(binary, *self.rotation)
            await trio.sleep(self.config.probe_interval_s)

    async def _rotate(self, binary: str, old: str, new: str) -> None:
        """`k3s token rotate` on this running server; then the new token file and a restart."""
        try:
            server_url = (yaml.safe_load(self.paths.kubeconfig.read_text())["clusters"][0]["cluster"]["server"])
        except (OSError, yaml.YAMLError, KeyError, IndexError, TypeError) as exc:
            server_url, why = "", f"no API server URL in {self.paths.kubeconfig}: {exc}"
        if server_url:
            env = dict(self.env if self.env is not None else os.environ, K3S_TOKEN=old)
            try:
                with trio.fail_after(ROTATE_TIMEOUT_S):
                    done = await trio.run_process(rotate_argv(binary, self.paths.data_dir, server_url, new),
                                                  env=env, capture_stdout=True, capture_stderr=True, check=False)
                out = (done.stdout + done.stderr).decode(errors="replace").strip()
                why = "" if done.returncode == 0 else f"k3s token rotate exited {done.returncode}: {out[-300:]}"
            except (OSError, trio.TooSlowError) as exc:
                why = f"k3s token rotate failed: {type(exc).__name__}: {exc}"
        if why:
            self.rotation_error = f"{why} (old token kept; retrying in {ROTATE_RETRY_S:.0f} s)"
            self._rotation_retry_at = trio.current_time() + ROTATE_RETRY_S
            log.warning("cannot rotate the K3s token", error=self.rotation_error)
            return
        write_token_file(self.paths.token_file, new)
        self.rotation, self.rotation_error = None, ""
        log.info("K3s join token rotated after a network-secret rotation; restarting k3s server with it")
        self._changed.set()  # the run loop restarts K3s with the new token file
