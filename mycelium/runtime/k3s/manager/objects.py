"""Kubernetes objects for the Primary's services: pure, deterministic, validated against the OpenAPI
schemas of the Kubernetes version K3s ships (tests: kubernetes-validate, strict).

Per service S placed on nodes P (node ids from the Primary):

    Namespace      myc-S                      one per service: quotas, policies and deletion per service
    ConfigMap      S-files                    the spec's files, mounted at /work (the working directory)
    Deployment     S   replicas = |P|         or a DaemonSet when the manifest says `replicas: all`
                   node affinity: mycelium.io/node In P (the node label K3s registers, config.py), and
                   pod anti-affinity on the hostname: one replica per node, as placement decided
    Service        S   ClusterIP on the declared ports (only when there are ports)
    NetworkPolicy  S   ingress to the declared ports only; nothing else reaches the pods

Ports declared as 0 ("pick one") get 8080, 8081, … inside the pod (each pod has its own network
namespace), passed as $PORT / $MYCELIUM_PORT_<NAME> like the process driver does; Kubernetes expands
`$(PORT)` in command and args itself. A spec without an image runs its command in `default_image`.
Every object carries the ownership labels and the hash of what generated it (`mycelium.io/spec-hash`):
the reconciler updates an object only when that hash changes, and touches nothing without the labels.
Pure: no I/O.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from mycelium.runtime.k3s.config import NODE_LABEL
from mycelium.runtime.k3s.handover import INSTANCE_LABEL, SERVICE_LABEL, VERSION_LABEL, k3s_refusal
from mycelium.runtime.spec import ServiceSpec

KUBERNETES_VERSION = "1.36.0"  # the schema version objects are validated against (see README: K3s)
MANAGED_BY = ("app.kubernetes.io/managed-by", "mycelium")
SPEC_HASH = "mycelium.io/spec-hash"
FIRST_AUTO_PORT = 8080
WORKDIR = "/work"


@dataclass(frozen=True, slots=True)
class ManagerConfig:
    default_image: str = "docker.io/library/python:3.11-slim-bookworm"  # runs specs that give only a command
    namespace_prefix: str = "myc-"


def namespace_for(service: str, config: ManagerConfig = ManagerConfig()) -> str:
    name = config.namespace_prefix + service
    if len(name) <= 63:
        return name
    return f"{name[:54]}-{hashlib.blake2b(service.encode(), digest_size=4).hexdigest()}"


def _labels(service: str) -> dict[str, str]:
    return {MANAGED_BY[0]: MANAGED_BY[1], SERVICE_LABEL: service}


def _meta(name: str, service: str, namespace: str | None = None) -> dict:
    meta: dict = {"name": name, "labels": _labels(service)}
    if namespace is not None:
        meta["namespace"] = namespace
    return meta


def _seal(obj: dict) -> dict:
    """Stamp the hash of the object's generated content into its annotations."""
    digest = hashlib.blake2b(json.dumps(obj, sort_keys=True).encode(), digest_size=10).hexdigest()
    obj["metadata"].setdefault("annotations", {})[SPEC_HASH] = digest
    return obj


def _seconds(ms: int) -> int:
    return max(1, -(-ms // 1000))


def container_ports(spec: ServiceSpec) -> list[tuple[str, int]]:
    out, auto = [], FIRST_AUTO_PORT
    for p in spec.ports:
        if p.port:
            out.append((p.name, p.port))
        else:
            out.append((p.name, auto))
            auto += 1
    return out


def _env(spec: ServiceSpec, ports: list[tuple[str, int]]) -> list[dict]:
    env = {"MYCELIUM_SERVICE": spec.name}
    if ports:
        env["PORT"] = str(ports[0][1])
    for name, port in ports:
        env[f"MYCELIUM_PORT_{name.upper().replace('-', '_')}"] = str(port)
    env.update(dict(spec.env))
    return [{"name": k, "value": v} for k, v in sorted(env.items())]


def _probe(spec: ServiceSpec, ports: list[tuple[str, int]]) -> dict | None:
    h = spec.health
    if h is None:
        return None
    by_name = dict(ports)
    port = by_name.get(h.port, h.port) if isinstance(h.port, str) else h.port
    if h.kind == "exec":
        action: dict = {"exec": {"command": list(h.command)}}
    elif h.kind == "tcp":
        action = {"tcpSocket": {"port": port}}
    else:
        action = {"httpGet": {"path": h.path, "port": port}}
    return {**action, "periodSeconds": _seconds(h.period_ms), "timeoutSeconds": _seconds(h.timeout_ms),
            "initialDelaySeconds": h.initial_delay_ms // 1000, "failureThreshold": h.failure_threshold}


def pod_template(spec: ServiceSpec, placement: list[str], config: ManagerConfig) -> dict:
    ports = container_ports(spec)
    container: dict = {
        "name": "main",
        "image": spec.image or config.default_image,
        "workingDir": WORKDIR,
        "env": _env(spec, ports),
        "resources": {"requests": {"cpu": f"{spec.resources.cpu_millicores}m", "memory": str(spec.resources.memory_bytes)},
                      "limits": {"memory": str(spec.resources.memory_bytes)}},
    }
    if spec.command:
        container["command"] = list(spec.command)
    if spec.args:
        container["args"] = list(spec.args)
    if ports:
        container["ports"] = [{"name": n[:15], "containerPort": p, "protocol": "TCP"} for n, p in ports]
    probe = _probe(spec, ports)
    if probe is not None:
        container["readinessProbe"] = {**probe, "successThreshold": spec.health.success_threshold}
        if spec.restart.policy != "never":
            container["livenessProbe"] = {**probe, "successThreshold": 1}
    volumes = []
    if spec.files:
        container["volumeMounts"] = [{"name": "files", "mountPath": WORKDIR}]
        volumes = [{"name": "files", "configMap": {"name": f"{spec.name}-files", "items": [
            {"key": f"f{i}", "path": f.path, "mode": f.mode} for i, f in enumerate(spec.files)]}}]
    pod_labels = {**dict(spec.labels), **_labels(spec.name), "app.kubernetes.io/name": spec.name,
                  VERSION_LABEL: spec.version()}
    pod_spec: dict = {
        "containers": [container],
        "affinity": {
            "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": NODE_LABEL, "operator": "In", "values": sorted(placement)}]}]}},
            "podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                {"labelSelector": {"matchLabels": {SERVICE_LABEL: spec.name}}, "topologyKey": "kubernetes.io/hostname"}]},
        },
        "enableServiceLinks": False,
        "automountServiceAccountToken": False,
    }
    if volumes:
        pod_spec["volumes"] = volumes
    return {"metadata": {"labels": pod_labels}, "spec": pod_spec}


def service_objects(spec: ServiceSpec, placement: list[str], config: ManagerConfig = ManagerConfig()) -> list[dict]:
    """The desired objects of one service, in creation order (Namespace first)."""
    ns, name = namespace_for(spec.name, config), spec.name
    selector = {"matchLabels": _labels(name)}
    objs = [{"apiVersion": "v1", "kind": "Namespace", "metadata": _meta(ns, name)}]
    if spec.files:
        objs.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(f"{name}-files", name, ns),
                     "data": {f"f{i}": f.content for i, f in enumerate(spec.files)}})
    template = pod_template(spec, placement, config)
    if spec.replicas == "all":
        objs.append({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": _meta(name, name, ns),
                     "spec": {"selector": selector, "template": template, "updateStrategy": {
                         "type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": spec.update.max_unavailable}}}})
    else:
        objs.append({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": _meta(name, name, ns),
                     "spec": {"replicas": len(placement), "selector": selector, "template": template, "strategy": {
                         "type": "RollingUpdate",
                         "rollingUpdate": {"maxUnavailable": spec.update.max_unavailable, "maxSurge": 0}}}})
    ports = container_ports(spec)
    if ports:
        objs.append({"apiVersion": "v1", "kind": "Service", "metadata": _meta(name, name, ns), "spec": {
            "type": "ClusterIP", "selector": _labels(name),
            "ports": [{"name": n[:15], "port": p, "targetPort": p, "protocol": "TCP"} for n, p in ports]}})
    objs.append({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": _meta(name, name, ns),
                 "spec": {"podSelector": selector, "policyTypes": ["Ingress"],
                          "ingress": [{"ports": [{"protocol": "TCP", "port": p} for _, p in ports]}] if ports else []}})
    return [_seal(o) for o in objs]


RESTART_POLICY = {"always": "Always", "on-failure": "OnFailure", "never": "Never"}
RESTART_ANNOTATION = "mycelium.io/restart"  # the spec's backoff (a real kubelet uses its own: 10 s → 5 min)


def instance_pod(instance_id: str, spec: ServiceSpec, node: str, namespace: str,
                 config: ManagerConfig = ManagerConfig()) -> dict:
    """One replica of `spec` as a bare Pod pinned to `node` (the k3s workload driver's unit).
    Fixed ports become hostPorts, so the service is reached at node:port as on the process runtime."""
    template = pod_template(spec, [node], config)
    pod_spec = template["spec"]
    del pod_spec["affinity"]["podAntiAffinity"]  # one pod per instance id; the reconciler spreads replicas
    pod_spec["restartPolicy"] = RESTART_POLICY[spec.restart.policy]
    fixed = {p.name[:15] for p in spec.ports if p.port}
    for port in pod_spec["containers"][0].get("ports", []):
        if port["name"] in fixed:
            port["hostPort"] = port["containerPort"]
    r = spec.restart
    meta = {"name": instance_id, "namespace": namespace,
            "labels": {**template["metadata"]["labels"], INSTANCE_LABEL: instance_id},
            "annotations": {RESTART_ANNOTATION: json.dumps(
                [r.backoff_initial_ms, r.backoff_max_ms, r.backoff_factor, r.crash_loop_after, r.min_uptime_ms])}}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": pod_spec}


def desired_objects(services: dict[str, dict], placements: dict[str, list[str]],
                    config: ManagerConfig = ManagerConfig()) -> tuple[list[dict], dict[str, str]]:
    """(objects, skipped service → reason) for a Primary's services and placements."""
    objs: list[dict] = []
    skipped: dict[str, str] = {}
    for name in sorted(services):
        try:
            spec = ServiceSpec.from_wire(services[name])
        except ValueError as exc:  # SpecError: a spec this build cannot read (newer wire version)
            skipped[name] = str(exc)
            continue
        refusal = k3s_refusal(spec)
        if refusal is not None:  # the daemon's process runner keeps it (handover.who_manages)
            skipped[name] = f"stays on the process runtime: {refusal}"
            continue
        placement = placements.get(name, [])
        if not placement:
            skipped[name] = "placed on no node"
            continue
        objs += service_objects(spec, placement, config)
    return objs, skipped
