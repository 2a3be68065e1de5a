"""A stand-in kubelet for FakeKube, for tests only: runs each Pod's container as a local process
through the process driver (so restart policy, probes, logs and grace periods behave as the process
driver's do, and the k3s driver's API round trip can be tested end to end without K3s).

Differences from a real kubelet, on purpose: no images (the container's command runs on the host),
no pod network namespace (each container port is given a free host port, passed as $PORT /
$MYCELIUM_PORT_<NAME> and used by the probes), backoff from the pod's `mycelium.io/restart`
annotation (a real kubelet uses 10 s doubling to 5 min), no pid or container id in the status.

It runs its own trio loop in a thread; FakeKube's request threads call into it.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import trio

from mycelium.runtime.driver import InstanceHandle, InstanceSpec, InstanceState, InstanceStatus, UnknownInstance
from mycelium.runtime.process import ProcessDriver
from mycelium.runtime.spec import HealthCheck, PortSpec, RestartPolicy, ServiceSpec

_POLICY = {"Always": "always", "OnFailure": "on-failure", "Never": "never"}


def _service(pod: dict) -> ServiceSpec:
    c = pod["spec"]["containers"][0]
    names = {p["containerPort"]: p["name"] for p in c.get("ports", [])}
    env = tuple(sorted((e["name"], e["value"]) for e in c.get("env", [])
                       if e["name"] != "PORT" and not e["name"].startswith("MYCELIUM_PORT_")))
    probe = c.get("readinessProbe")
    health = None
    if probe:
        common = dict(period_ms=probe.get("periodSeconds", 10) * 1000, timeout_ms=probe.get("timeoutSeconds", 1) * 1000,
                      failure_threshold=probe.get("failureThreshold", 3), success_threshold=probe.get("successThreshold", 1))
        if "exec" in probe:
            health = HealthCheck("exec", command=tuple(probe["exec"]["command"]), **common)
        elif "tcpSocket" in probe:
            health = HealthCheck("tcp", port=names.get(probe["tcpSocket"]["port"], probe["tcpSocket"]["port"]), **common)
        else:
            g = probe["httpGet"]
            health = HealthCheck("http", port=names.get(g["port"], g["port"]), path=g.get("path", "/"), **common)
    raw = (pod["metadata"].get("annotations") or {}).get("mycelium.io/restart")
    backoff = json.loads(raw) if raw else [1000, 60000, 2, 5, 10000]
    policy = _POLICY[pod["spec"].get("restartPolicy", "Always")]
    return ServiceSpec(
        name=pod["metadata"]["labels"].get("mycelium.io/service", "pod"),
        command=tuple(c.get("command", ())) + tuple(c.get("args", ())), env=env,
        ports=tuple(PortSpec(p["name"], p["hostPort"] if p.get("hostPort") else 0) for p in c.get("ports", [])),
        health=health, restart=RestartPolicy(policy, *backoff))


def pod_status(st: InstanceStatus, has_probe: bool) -> dict:
    """A Pod's status as a kubelet would write it, from the process driver's view of the container."""
    ready = st.state is InstanceState.HEALTHY or (st.state is InstanceState.RUNNING and not has_probe)
    cs: dict = {"name": "main", "ready": ready, "restartCount": st.restarts, "image": "host", "imageID": "",
                "started": st.pid is not None}
    if st.exit_code is not None:
        cs["lastState"] = {"terminated": {"exitCode": st.exit_code, "reason": "Error" if st.exit_code else "Completed"}}
    if st.state is InstanceState.CRASH_LOOP:
        cs["state"] = {"waiting": {"reason": "CrashLoopBackOff", "message": st.message}}
    elif st.pid is not None:
        cs["state"] = {"running": {"startedAt": "2026-01-01T00:00:00Z"}}
        if st.message and "lastState" in cs:  # why it restarted (a real kubelet says it in events)
            cs["lastState"]["terminated"]["message"] = st.message
    elif st.final:
        cs["state"] = {"terminated": {"exitCode": st.exit_code if st.exit_code is not None else 0,
                                      "reason": "Error" if st.exit_code else "Completed", "message": st.message}}
    else:
        cs["state"] = {"waiting": {"reason": "ContainerCreating" if st.exit_code is None else "BackOff",
                                   "message": st.message}}
    phase = "Running" if st.pid is not None else ("Succeeded" if st.final and st.exit_code == 0 else
                                                  "Failed" if st.final else "Pending")
    conditions = [{"type": "Ready", "status": "True" if ready else "False"}]
    return {"phase": phase, "conditions": conditions, "containerStatuses": [cs],
            "hostIP": "127.0.0.1", "podIP": "127.0.0.1"}


class FakeKubelet:
    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir)
        self._token: trio.lowlevel.TrioToken | None = None
        self._driver: ProcessDriver | None = None
        self._stop: trio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=lambda: trio.run(self._main), daemon=True)
        self._thread.start()
        self._ready.wait(30)

    async def _main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._stop = trio.Event()
        async with ProcessDriver.open(self.state_dir) as driver:
            self._driver = driver
            self._ready.set()
            await self._stop.wait()

    def _call(self, fn, *args):
        return trio.from_thread.run(fn, *args, trio_token=self._token)

    def run_pod(self, pod: dict) -> None:
        spec = InstanceSpec(pod["metadata"]["name"], _service(pod))
        self._call(self._driver.start, spec)

    def status(self, pod: dict) -> dict:
        try:
            st = self._call(self._driver.status, InstanceHandle("process", pod["metadata"]["name"]))
        except UnknownInstance:
            return {"phase": "Unknown"}
        return pod_status(st, "readinessProbe" in pod["spec"]["containers"][0])

    def kill_pod(self, pod: dict, grace_s: float) -> dict:
        st = self._call(self._driver.stop, InstanceHandle("process", pod["metadata"]["name"]), grace_s)
        return pod_status(st, False)

    def logs(self, name: str) -> bytes:
        async def collect():
            return [line async for line in self._driver.logs(InstanceHandle("process", name))]
        try:
            return b"".join(line + b"\n" for line in self._call(collect))
        except UnknownInstance:
            return b""

    def close(self) -> None:
        if self._token is not None:
            trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
        self._thread.join(30)
