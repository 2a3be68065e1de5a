"""This node's service pods and their logs through the real `kubernetes` client (mycelium.runtime.k3s.pods)
against the fake API server, whose crude Deployment controller gives the manager's Deployments one Pod
per placed node and whose stand-in kubelet runs them: only this node's pods are listed, ready once
their container runs, with the version they were made from; logs come from the pod; a re-placed or
undeployed service's pod goes (and its process with it)."""

from __future__ import annotations

import time

from kubernetes import client

from mycelium.runtime.k3s.config import k8s_node_name
from mycelium.runtime.k3s.manager.objects import desired_objects
from mycelium.runtime.k3s.manager.reconcile import Reconciler
from mycelium.runtime.k3s.pods import PodReader, PodReadError
from mycelium.runtime.spec import ServiceSpec
from mycelium.testing.deadlines import stretched
from mycelium.testing.fake_kube import FakeKube
from mycelium.testing.fake_kubelet import FakeKubelet
from mycelium.testing.k3s_standin import write_kubeconfig
from tests.k3s_helpers import NODES


def wait_for(predicate, what: str, timeout: float = 20):
    deadline = time.monotonic() + stretched(timeout)
    while time.monotonic() < deadline:
        if got := predicate():
            return got
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_this_nodes_pods_their_readiness_and_logs(tmp_path):
    kubelet = FakeKubelet(tmp_path / "kubelet")
    fake = FakeKube(kubelet=kubelet, controllers=True)
    server, url = fake.serve()
    kubeconfig = tmp_path / "kubeconfig.yaml"
    write_kubeconfig(str(kubeconfig), server.server_address[1])
    cfg = client.Configuration()
    cfg.host = url
    api = client.ApiClient(cfg)
    reader = PodReader(kubeconfig, k8s_node_name(NODES[0]))
    other = PodReader(kubeconfig, k8s_node_name(NODES[1]))
    try:
        tick = ServiceSpec(name="tick", command=("python3", "-u", "-c", "import time\nprint('tick tock')\ntime.sleep(60)"))
        assert reader.pods() == {}
        objs, skipped = desired_objects({"tick": tick.to_wire()}, {"tick": [NODES[0]]})
        assert not skipped and not Reconciler(api).reconcile(objs).errors
        pod = wait_for(lambda: (p := reader.pods().get("tick")) and p.ready and p, "the pod ready")
        assert pod.version == tick.version() and pod.name.startswith("myc-tick/tick-") and pod.phase == "Running"
        assert pod.endpoints == ()  # no ports declared
        assert other.pods() == {}  # another node's reader sees none of this node's pods
        assert wait_for(lambda: "tick tock" in reader.logs(pod, 10) and reader.logs(pod, 10), "its output") == ["tick tock"]

        objs, _ = desired_objects({"tick": tick.to_wire()}, {"tick": [NODES[1]]})  # re-placed elsewhere
        assert not Reconciler(api).reconcile(objs).errors
        wait_for(lambda: reader.pods() == {}, "the pod gone from this node")
        assert wait_for(lambda: (p := other.pods().get("tick")) and p.ready, "the pod ready on the other node")
        assert not Reconciler(api).reconcile([]).errors  # undeployed: the namespace goes, its pods with it
        wait_for(lambda: other.pods() == {}, "no pod left")
        assert not [k for k in fake.objects if k[0] == "Pod"]
    finally:
        reader.close()
        other.close()
        api.close()
        server.shutdown()
        server.server_close()
        kubelet.close()


def test_an_unreachable_api_server_is_a_clear_error(tmp_path):
    missing = PodReader(tmp_path / "nope.yaml", "n")
    try:
        missing.pods()
    except PodReadError as exc:
        assert "no kubeconfig" in str(exc)
    else:
        raise AssertionError("no error without a kubeconfig")
    kubeconfig = tmp_path / "kubeconfig.yaml"
    write_kubeconfig(str(kubeconfig), 9)  # the discard port: nothing listens there
    try:
        PodReader(kubeconfig, "n").pods()
    except PodReadError as exc:
        assert "not reachable" in str(exc)
    else:
        raise AssertionError("no error for an API server that is not there")
