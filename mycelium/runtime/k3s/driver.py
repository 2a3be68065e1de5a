"""The `k3s` workload driver: each instance is a Pod pinned to this node, through the Kubernetes API.

    async with K3sDriver.open(api_client, node_id) as driver:   # same interface as ProcessDriver
        handle = await driver.start(InstanceSpec("web-0", spec))

Pods live in one namespace (`myc-instances`, labelled as ours) and carry the instance id as name and
label; the kubelet supervises them (restart policy, probes, logs, grace periods). Status comes from
the Pod's container status: running + ready → healthy (running when no probe), waiting
CrashLoopBackOff → crash_loop, terminated → exited with its exit code. `stop` deletes the Pod with
the grace period and waits until it is gone. Pods expose no pid, so `InstanceStatus.pid` is None;
ports are the container ports (fixed ports are also hostPorts, checked free on this node first).
Every API call runs in a worker thread (the client is synchronous). Pods are read raw: the client's
strict models refuse some of what kubelets write.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import trio
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from mycelium.runtime.driver import (
    DriverError, InstanceHandle, InstanceSpec, InstanceState, InstanceStatus, UnknownInstance,
)
from mycelium.runtime.k3s.manager.objects import INSTANCE_LABEL, MANAGED_BY, container_ports, instance_pod
from mycelium.runtime.ports import assign_ports

NAMESPACE = "myc-instances"
POLL_S = 0.05  # status polling while waiting for a Pod to go


@dataclass(slots=True)
class _Instance:
    spec: InstanceSpec
    ports: dict[str, int]
    has_probe: bool


def _ready(cs: dict) -> bool:
    return bool(cs.get("ready"))


def map_status(instance_id: str, pod: dict, ports: dict[str, int], has_probe: bool, version: str) -> InstanceStatus:
    """InstanceStatus from a Pod as a kubelet reports it."""
    st = pod.get("status") or {}
    containers = st.get("containerStatuses") or []
    if not containers:
        return InstanceStatus(instance_id, InstanceState.STARTING, version, ports=ports,
                              message=st.get("message", "") or f"pod {st.get('phase', 'Pending').lower()}")
    cs = containers[0]
    state, last = cs.get("state") or {}, (cs.get("lastState") or {}).get("terminated") or {}
    restarts = cs.get("restartCount", 0)
    exit_code = last.get("exitCode")
    if "running" in state:
        s = (InstanceState.HEALTHY if has_probe and _ready(cs) else InstanceState.RUNNING if not has_probe
             else InstanceState.STARTING)
        return InstanceStatus(instance_id, s, version, restarts, exit_code, None, ports,
                              message=last.get("message", ""))
    if "terminated" in state:
        t = state["terminated"]
        return InstanceStatus(instance_id, InstanceState.EXITED, version, restarts, t.get("exitCode"), None, ports,
                              message=t.get("message") or t.get("reason", ""), final=True)
    waiting = state.get("waiting") or {}
    s = InstanceState.CRASH_LOOP if waiting.get("reason") == "CrashLoopBackOff" else (
        InstanceState.EXITED if exit_code is not None else InstanceState.STARTING)
    return InstanceStatus(instance_id, s, version, restarts, exit_code, None, ports,
                          message=waiting.get("message") or waiting.get("reason", ""))


class K3sDriver:
    name = "k3s"

    def __init__(self, api: client.ApiClient, node: str, namespace: str = NAMESPACE) -> None:
        self.api = api
        self.core = client.CoreV1Api(api)
        self.node = node
        self.namespace = namespace
        self._instances: dict[str, _Instance] = {}

    @classmethod
    @asynccontextmanager
    async def open(cls, api: client.ApiClient, node: str, namespace: str = NAMESPACE) -> AsyncIterator[K3sDriver]:
        driver = cls(api, node, namespace)
        await driver._ensure_namespace()
        try:
            yield driver
        finally:
            with trio.CancelScope(shield=True):
                async with trio.open_nursery() as nursery:
                    for iid in list(driver._instances):
                        nursery.start_soon(driver.stop, InstanceHandle(cls.name, iid), 10.0)

    async def _ensure_namespace(self) -> None:
        body = {"apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": self.namespace, "labels": {MANAGED_BY[0]: MANAGED_BY[1]}}}
        try:
            await trio.to_thread.run_sync(self.core.create_namespace, body)
        except ApiException as exc:
            if exc.status != 409:  # 409: already there
                raise DriverError(f"cannot create namespace {self.namespace}: {exc.status} {exc.reason}") from exc

    async def _pod(self, name: str) -> dict | None:
        def read():
            resp = self.core.read_namespaced_pod(name, self.namespace, _preload_content=False)
            data = resp.read()
            resp.release_conn()
            return json.loads(data)
        try:
            return await trio.to_thread.run_sync(read)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise DriverError(f"cannot read pod {name}: {exc.status} {exc.reason}") from exc

    # ------------------------------------------------------------------ the Driver interface
    async def start(self, spec: InstanceSpec) -> InstanceHandle:
        iid = spec.instance_id
        if iid in self._instances:
            raise DriverError(f"instance {iid} is already running; stop it first")
        service = spec.service
        fixed = {p.name: p.port for p in service.ports if p.port}
        if fixed:
            assign_ports(service.__class__(name=service.name, ports=tuple(p for p in service.ports if p.port)),
                         set(), "0.0.0.0")  # PortInUse when a fixed (host) port is taken on this node
        pod = instance_pod(iid, service, self.node, self.namespace)
        try:
            await trio.to_thread.run_sync(lambda: self.core.create_namespaced_pod(self.namespace, pod,
                                                                                   _preload_content=False).release_conn())
        except ApiException as exc:
            if exc.status == 409:
                raise DriverError(f"instance {iid} already has a pod in {self.namespace}; stop it first") from exc
            raise DriverError(f"the API server refused pod {iid}: {exc.status} {exc.reason}: {str(exc.body)[:200]}") from exc
        self._instances[iid] = _Instance(spec, dict(container_ports(service)), service.health is not None)
        return InstanceHandle(self.name, iid)

    async def status(self, handle: InstanceHandle) -> InstanceStatus:
        inst = self._instances.get(handle.instance_id)
        if inst is None:
            raise UnknownInstance(f"no instance {handle.instance_id} on the k3s driver")
        pod = await self._pod(handle.instance_id)
        if pod is None:
            return InstanceStatus(handle.instance_id, InstanceState.EXITED, inst.spec.service.version(),
                                  ports=inst.ports, message="pod is gone (deleted outside mycelium?)", final=True)
        return map_status(handle.instance_id, pod, inst.ports, inst.has_probe, inst.spec.service.version())

    async def stop(self, handle: InstanceHandle, grace_s: float = 10.0) -> InstanceStatus:
        inst = self._instances.get(handle.instance_id)
        if inst is None:
            raise UnknownInstance(f"no instance {handle.instance_id} on the k3s driver")
        grace = max(1, -(-int(grace_s * 1000) // 1000))  # whole seconds, at least 1 (0 means "force")

        def delete():
            resp = self.core.delete_namespaced_pod(handle.instance_id, self.namespace, grace_period_seconds=grace,
                                                   _preload_content=False)
            data = resp.read()
            resp.release_conn()
            return json.loads(data)
        try:
            last = await trio.to_thread.run_sync(delete)
        except ApiException as exc:
            if exc.status != 404:
                raise DriverError(f"cannot delete pod {handle.instance_id}: {exc.status} {exc.reason}") from exc
            last = {}
        while (pod := await self._pod(handle.instance_id)) is not None:  # a real API server: until the kubelet is done
            last = pod
            await trio.sleep(POLL_S)
        final = map_status(handle.instance_id, last, inst.ports, inst.has_probe, inst.spec.service.version())
        del self._instances[handle.instance_id]
        return InstanceStatus(final.instance_id, InstanceState.EXITED, final.version, final.restarts,
                              final.exit_code, None, final.ports, final.limits, final.message or "stopped", final=True)

    async def instances(self) -> list[InstanceHandle]:
        return [InstanceHandle(self.name, iid) for iid in sorted(self._instances)]

    async def logs(self, handle: InstanceHandle, *, follow: bool = False) -> AsyncIterator[bytes]:
        seen = 0
        while True:
            def read():
                resp = self.core.read_namespaced_pod_log(handle.instance_id, self.namespace, _preload_content=False)
                data = resp.read()
                resp.release_conn()
                return data
            try:
                data = await trio.to_thread.run_sync(read)
            except ApiException as exc:
                if exc.status == 404:
                    return
                raise DriverError(f"cannot read logs of {handle.instance_id}: {exc.status} {exc.reason}") from exc
            lines = data.splitlines()
            for line in lines[seen:]:
                yield line
            seen = max(seen, len(lines))
            if not follow:
                return
            status = await self.status(handle) if handle.instance_id in self._instances else None
            if status is None or status.final or status.state is InstanceState.EXITED:
                tail = (await trio.to_thread.run_sync(read)).splitlines()  # what it wrote before exiting
                for line in tail[seen:]:
                    yield line
                return
            await trio.sleep(0.1)
