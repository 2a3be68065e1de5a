"""Who runs each Endomycetes replica placed on this node — the daemon's process runner or K3s (the
in-cluster manager's Deployments) — as a pure function of the node's runtime and what it observes.
No I/O: the runner (mycelium.runtime.runner) feeds it, the tests drive it with Hypothesis.

For each service S the Primary places on this node:

    runtime is not k3s                     → process   (fallback: the runner takes every replica back)
    S cannot run on K3s (k3s_refusal)      → process   (e.g. mycelium volumes, mounted by the daemon)
    S's pod here is ready, at S's version  → k3s       (a process replica of S is stopped now)
    a process replica of S runs here       → process   (handing over: it keeps serving until the pod is ready)
    S has a pod here (not ready yet)       → k3s       (K3s is starting or restarting it: not fought)
    no pod of S here                       → process   (the manager has not made it, or is not there)

So a process replica is stopped only once the Kubernetes pod that replaces it on this node reports
ready at the same spec version, and a replica is never left without either runtime trying to run
it. The rule needs no memory: once handed over there is no process replica, so a pod that becomes
unready (a crash K3s restarts, a rolling update) stays K3s's business — unless the pod disappears
altogether, where the process runner starts S again (a rolling update's short gap may start a
process replica that is stopped again as soon as the new pod is ready). "Runtime k3s" is the
supervisor's verdict (server ready and the manager's manifest installed, or agent joined); when K3s
stops being ready, the runtime is process and everything returns to the runner.

Endophytes (stateful, replicated by the daemon) are not Endomycetes and never go to K3s.
"""

from __future__ import annotations

from collections.abc import Mapping, Set
from dataclasses import dataclass
from enum import Enum

from mycelium.runtime.spec import ServiceSpec

SERVICE_LABEL = "mycelium.io/service"  # the labels the manager puts on what it generates (manager/objects.py)
VERSION_LABEL = "mycelium.io/version"
INSTANCE_LABEL = "mycelium.io/instance"


class Owner(str, Enum):
    PROCESS = "process"
    K3S = "k3s"


@dataclass(frozen=True, slots=True)
class PodView:
    """This node's pod of one service, as the Kubernetes API reports it."""

    service: str
    ready: bool  # the pod's Ready condition (its readiness probe passes, or it runs and has none)
    version: str = ""  # the pod's mycelium.io/version label (ServiceSpec.version() it was made from)
    name: str = ""  # namespace/pod, for messages
    endpoints: tuple[str, ...] = ()  # podIP:containerPort, in the spec's port order
    restarts: int = 0
    phase: str = ""  # Pending, Running, Succeeded, Failed, Unknown
    message: str = ""


@dataclass(frozen=True, slots=True)
class Decision:
    owner: Owner
    reason: str
    handing_over: bool = False  # a process replica serves until the pod that replaces it is ready


def k3s_refusal(spec: ServiceSpec) -> str | None:
    """Why `spec` must stay on the process runtime even on K3s, or None when K3s can run it.
    The manager skips the same services (objects.desired_objects), so nothing runs twice."""
    if spec.volumes:
        return "it mounts mycelium volumes, which the daemon serves (FUSE) and K3s pods cannot mount yet"
    return None


def who_manages(runtime_k3s: bool, desired: Mapping[str, ServiceSpec], process: Set[str],
                pods: Mapping[str, PodView]) -> dict[str, Decision]:
    """The owner of every desired service here: `process` = services with a process replica on
    this node (any state), `pods` = this node's pod per service (at most one: placement is
    anti-affine)."""
    out: dict[str, Decision] = {}
    for name, spec in desired.items():
        pod = pods.get(name)
        if not runtime_k3s:
            out[name] = Decision(Owner.PROCESS, "the runtime is process")
            continue
        refusal = k3s_refusal(spec)
        if refusal is not None:
            out[name] = Decision(Owner.PROCESS, f"stays on the process runtime: {refusal}")
        elif pod is not None and pod.ready and pod.version == spec.version():
            out[name] = Decision(Owner.K3S, f"pod {pod.name or name} is ready")
        elif name in process:
            why = "is not ready yet" if pod is not None and pod.version == spec.version() else \
                "runs another version" if pod is not None else "does not exist yet"
            out[name] = Decision(Owner.PROCESS, f"handing over to K3s: the process replica keeps serving; its pod {why}",
                                 handing_over=True)
        elif pod is not None:
            out[name] = Decision(Owner.K3S, f"pod {pod.name or name} is starting ({pod.phase or 'pending'})")
        else:
            out[name] = Decision(Owner.PROCESS, "no pod of it on this node in K3s (the manager has not created it)")
    return out


def process_share(decisions: Mapping[str, Decision], desired: Mapping[str, ServiceSpec]) -> dict[str, ServiceSpec]:
    """The services the process runner must run here."""
    return {name: desired[name] for name, d in decisions.items() if d.owner is Owner.PROCESS}


def pod_view(pod: Mapping) -> PodView | None:
    """A managed pod as the Kubernetes API returns it (JSON) → PodView; None for a pod that is not a
    service replica of the manager's (no service label) or that is being deleted."""
    meta = pod.get("metadata") or {}
    labels = meta.get("labels") or {}
    service = labels.get(SERVICE_LABEL)
    if not service or meta.get("deletionTimestamp") or labels.get(INSTANCE_LABEL):
        return None  # INSTANCE_LABEL: a bare pod of the k3s driver, not one of the manager's Deployments
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
    containers = spec.get("containers") or [{}]
    ip = status.get("podIP") or ""
    endpoints = tuple(f"{ip}:{p['containerPort']}" for p in containers[0].get("ports") or [] if ip) if ready else ()
    cs = (status.get("containerStatuses") or [{}])[0]
    waiting = (cs.get("state") or {}).get("waiting") or {}
    message = waiting.get("reason", "") + (f": {waiting['message']}" if waiting.get("message") else "")
    return PodView(service, ready, labels.get(VERSION_LABEL, ""), f"{meta.get('namespace', '')}/{meta.get('name', '')}",
                   endpoints, int(cs.get("restartCount") or 0), status.get("phase", ""), message or status.get("message", ""))


def pod_health(pod: PodView, has_probe: bool) -> str:
    """The ReplicaHealth value (mycelium.runtime.reports) a pod is reported with in service spores."""
    if pod.ready:
        return "healthy" if has_probe else "running"
    if pod.message.startswith("CrashLoopBackOff"):
        return "crash_loop"
    if pod.phase in ("Succeeded", "Failed"):
        return "exited"
    return "unhealthy" if pod.phase == "Running" and has_probe else "starting"
