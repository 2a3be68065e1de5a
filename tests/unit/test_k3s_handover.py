"""Who runs this node's Endomycetes replicas — the process runner or K3s (mycelium.runtime.k3s.handover):
Hypothesis properties of the pure rule, a handover/fallback simulation that checks no replica is ever
left without service, and the pod JSON → PodView mapping."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from mycelium.runtime.k3s.handover import (
    Owner, PodView, k3s_refusal, pod_health, pod_view, process_share, who_manages,
)
from mycelium.runtime.k3s.manager.objects import desired_objects
from mycelium.runtime.spec import ServiceSpec, VolumeMount

NAMES = [f"svc{i}" for i in range(6)]


def spec(name: str, *, volume: bool = False, arg: str = "") -> ServiceSpec:
    return ServiceSpec(name=name, command=("sleep", "60"), args=(arg,) if arg else (),
                       volumes=(VolumeMount("data", "data"),) if volume else ())


SPECS = {(n, v): spec(n, volume=v) for n in NAMES for v in (False, True)}  # built once: examples stay cheap


@st.composite
def situations(draw):
    names = draw(st.lists(st.sampled_from(NAMES), unique=True, max_size=6))
    desired = {n: SPECS[n, draw(st.booleans()) and draw(st.booleans())] for n in names}
    process = set(draw(st.lists(st.sampled_from(NAMES), unique=True)))
    pods = {}
    for n in draw(st.lists(st.sampled_from(NAMES), unique=True)):
        version = desired[n].version() if n in desired and draw(st.booleans()) else "0ld"
        pods[n] = PodView(n, draw(st.booleans()), version, f"myc-{n}/{n}-1")
    return draw(st.booleans()), desired, process, pods


@given(situations())
def test_every_placed_replica_has_exactly_one_owner_and_is_never_orphaned(s):
    runtime_k3s, desired, process, pods = s
    decisions = who_manages(runtime_k3s, desired, process, pods)
    assert set(decisions) == set(desired)
    for name, d in decisions.items():
        assert d.reason
        if d.owner is Owner.K3S:  # K3s owns it only when K3s has a pod of it here
            assert runtime_k3s and name in pods and k3s_refusal(desired[name]) is None
    assert set(process_share(decisions, desired)) == {n for n, d in decisions.items() if d.owner is Owner.PROCESS}


@given(situations())
def test_a_process_replica_is_stopped_only_for_a_ready_pod_at_its_version(s):
    runtime_k3s, desired, process, pods = s
    for name, d in who_manages(runtime_k3s, desired, process, pods).items():
        if name in process and d.owner is Owner.K3S:
            assert pods[name].ready and pods[name].version == desired[name].version()


@given(situations())
def test_fallback_gives_everything_back_to_the_process_runner(s):
    _, desired, process, pods = s
    decisions = who_manages(False, desired, process, pods)
    assert all(d.owner is Owner.PROCESS for d in decisions.values())
    assert process_share(decisions, desired) == desired


@given(situations())
def test_what_k3s_cannot_run_stays_on_the_process_runtime_and_the_manager_skips_it(s):
    runtime_k3s, desired, process, pods = s
    decisions = who_manages(runtime_k3s, desired, process, pods)
    objs, skipped = desired_objects({n: sp.to_wire() for n, sp in desired.items()}, {n: ["node-a"] for n in desired})
    for name, sp in desired.items():
        if sp.volumes:
            assert decisions[name].owner is Owner.PROCESS
            assert "volumes" in decisions[name].reason or not runtime_k3s
            assert "volumes" in skipped[name]
            assert not any(o["metadata"]["name"] == name for o in objs)


@settings(max_examples=80)
@given(st.lists(st.sampled_from(NAMES), unique=True, min_size=1, max_size=6), st.data())
def test_handover_and_fallback_never_leave_a_replica_without_service(names, data):
    """Simulate the runner's rounds: each round it decides, stops process replicas it no longer
    owns and starts those it owns; between rounds pods start, become ready, crash or vanish and K3s
    may stop being ready. Whatever happens, every replica is always served by a running process
    replica or a ready pod — except where a pod that took over was lost, which the next round fixes."""
    desired = {n: SPECS[n, False] for n in names}
    process = set(names)  # before K3s: the process runner runs everything
    pods: dict[str, PodView] = {}
    runtime_k3s = False
    for _ in range(data.draw(st.integers(3, 15))):
        event = data.draw(st.sampled_from(["k3s ready", "k3s lost", "pod starts", "pod ready", "pod unready",
                                           "pod gone", "nothing"]))
        name = data.draw(st.sampled_from(names))
        if event == "k3s ready":
            runtime_k3s = True
        elif event == "k3s lost":
            runtime_k3s = False
        elif event == "pod starts" and name not in pods:
            pods[name] = PodView(name, False, desired[name].version())
        elif event == "pod ready" and name in pods:
            pods[name] = PodView(name, True, desired[name].version())
        elif event == "pod unready" and name in pods:
            pods[name] = PodView(name, False, desired[name].version())
        elif event == "pod gone":
            pods.pop(name, None)
        before = {n for n in names if n in process or (runtime_k3s and n in pods and pods[n].ready)}
        decisions = who_manages(runtime_k3s, desired, process, pods)
        stopped = {n for n in process if decisions[n].owner is Owner.K3S}
        for n in stopped:  # the runner stops a replica only for a ready pod: service continues
            assert pods[n].ready
        process = (process - stopped) | {n for n, d in decisions.items() if d.owner is Owner.PROCESS}
        after = {n for n in names if n in process or (runtime_k3s and n in pods and pods[n].ready)}
        assert before <= after  # a round never takes service away
        for n in names:  # and whoever owns it is running it or starting it
            assert n in process or n in pods
    # K3s lost for good: the runner takes every replica back at once
    decisions = who_manages(False, desired, process, pods)
    assert set(process_share(decisions, desired)) == set(names)


def test_the_steps_of_one_handover():
    web = spec("web")
    desired = {"web": web}
    assert who_manages(True, desired, {"web"}, {})["web"].owner is Owner.PROCESS  # no pod yet
    starting = PodView("web", False, web.version(), "myc-web/web-1", phase="Pending")
    d = who_manages(True, desired, {"web"}, {"web": starting})["web"]
    assert d.owner is Owner.PROCESS and d.handing_over and "handing over" in d.reason and "not ready" in d.reason
    old = PodView("web", True, spec("web", arg="v0").version(), "myc-web/web-1")
    assert who_manages(True, desired, {"web"}, {"web": old})["web"].owner is Owner.PROCESS  # another version
    ready = PodView("web", True, web.version(), "myc-web/web-1")
    d = who_manages(True, desired, {"web"}, {"web": ready})["web"]
    assert d.owner is Owner.K3S and "myc-web/web-1 is ready" in d.reason
    # handed over: a pod that K3s restarts is not fought over
    assert who_manages(True, desired, set(), {"web": starting})["web"].owner is Owner.K3S
    # the pod is gone altogether: the process runner starts it again
    assert who_manages(True, desired, set(), {})["web"].owner is Owner.PROCESS
    assert who_manages(False, desired, set(), {"web": ready})["web"].reason == "the runtime is process"


def _pod(ready: bool, **status) -> dict:
    return {"metadata": {"name": "web-5d8f-x", "namespace": "myc-web",
                         "labels": {"app.kubernetes.io/managed-by": "mycelium", "mycelium.io/service": "web",
                                    "mycelium.io/version": "abc"}},
            "spec": {"nodeName": "myc-1", "containers": [{"name": "main", "ports": [
                {"name": "http", "containerPort": 8080}, {"name": "admin", "containerPort": 8081}]}]},
            "status": {"phase": "Running", "podIP": "10.42.3.7",
                       "conditions": [{"type": "Ready", "status": "True" if ready else "False"}], **status}}


def test_pod_view_from_the_api_json():
    view = pod_view(_pod(True, containerStatuses=[{"restartCount": 2, "state": {"running": {}}}]))
    assert view == PodView("web", True, "abc", "myc-web/web-5d8f-x", ("10.42.3.7:8080", "10.42.3.7:8081"), 2, "Running", "")
    assert pod_health(view, has_probe=True) == "healthy" and pod_health(view, has_probe=False) == "running"
    crashing = pod_view(_pod(False, containerStatuses=[{"restartCount": 5, "state": {
        "waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s"}}}]))
    assert crashing.endpoints == () and crashing.message == "CrashLoopBackOff: back-off 40s"
    assert pod_health(crashing, has_probe=False) == "crash_loop"
    assert pod_health(pod_view(_pod(False)), has_probe=True) == "unhealthy"
    assert pod_health(PodView("web", False, phase="Pending"), has_probe=True) == "starting"
    assert pod_health(PodView("web", False, phase="Failed"), has_probe=False) == "exited"
    going = _pod(True)
    going["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    assert pod_view(going) is None  # being deleted: not a replica any more
    bare = _pod(True)
    bare["metadata"]["labels"]["mycelium.io/instance"] = "web"
    assert pod_view(bare) is None  # the k3s driver's own pods are not the manager's replicas
    assert pod_view({"metadata": {"name": "x"}}) is None
