"""The k3s workload driver through its real request path (the kubernetes client) against the fake
API server with the stand-in kubelet: the shared conformance suite, except the checks that assume
a host process (pid, ports chosen on the host), which do not apply to pods — named here."""

from __future__ import annotations

from contextlib import asynccontextmanager

import pytest
from kubernetes import client

from mycelium.runtime import conformance
from mycelium.runtime.k3s.driver import K3sDriver, map_status
from mycelium.runtime.driver import InstanceState
from mycelium.testing.fake_kube import FakeKube
from mycelium.testing.fake_kubelet import FakeKubelet
from tests.k3s_helpers import NODES

NOT_FOR_PODS = {
    "check_start_status_stop": "asserts a pid: the Kubernetes API exposes no pid for a container",
    "check_health_exec_failing": "asserts a pid while unhealthy (same reason)",
    "check_port_zero": "asserts the host port the program got; a pod's ports are its container ports (8080, …) in its own network namespace",
}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    kubelet = FakeKubelet(tmp_path_factory.mktemp("kubelet"))
    fake = FakeKube(kubelet=kubelet)
    server, url = fake.serve()
    cfg = client.Configuration()
    cfg.host = url
    api = client.ApiClient(cfg)
    try:
        yield fake, api
    finally:
        api.close()
        server.shutdown()
        server.server_close()
        kubelet.close()


CHECKS = [pytest.param(c, id=c.__name__, marks=[pytest.mark.skip(reason=NOT_FOR_PODS[c.__name__])]
                       if c.__name__ in NOT_FOR_PODS else []) for c in conformance.CHECKS]


@pytest.mark.parametrize("check", CHECKS)
async def test_conformance(check, cluster):
    fake, api = cluster

    @asynccontextmanager
    async def make_driver():
        async with K3sDriver.open(api, NODES[0]) as driver:
            yield driver

    await check(make_driver)
    assert not [k for k in fake.objects if k[0] == "Pod"], "every pod deleted when the driver closes"


def test_status_mapping_of_real_kubelet_shapes():
    crash = {"status": {"phase": "Running", "containerStatuses": [{
        "name": "main", "ready": False, "restartCount": 6,
        "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 5m0s restarting failed container"}},
        "lastState": {"terminated": {"exitCode": 2, "reason": "Error"}}}]}}
    st = map_status("x-0", crash, {}, False, "v")
    assert st.state is InstanceState.CRASH_LOOP and st.exit_code == 2 and st.restarts == 6 and "back-off" in st.message
    pending = {"status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False"}]}}
    assert map_status("x-0", pending, {}, False, "v").state is InstanceState.STARTING
    done = {"status": {"phase": "Succeeded", "containerStatuses": [{"name": "main", "ready": False, "restartCount": 0,
            "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]}}
    st = map_status("x-0", done, {}, False, "v")
    assert st.state is InstanceState.EXITED and st.final and st.exit_code == 0


async def test_start_status_stop_for_pods(cluster):
    """check_start_status_stop without the pid: the pod's life through the API."""
    from mycelium.runtime.conformance import service, wait_status
    from mycelium.runtime.driver import InstanceSpec, UnknownInstance

    fake, api = cluster
    async with K3sDriver.open(api, NODES[0]) as driver:
        handle = await driver.start(InstanceSpec("life-0", service("life")))
        pod = fake.objects[("Pod", "myc-instances", "life-0")]
        assert pod["spec"]["restartPolicy"] == "Never" and pod["metadata"]["labels"]["mycelium.io/instance"] == "life-0"
        status = await wait_status(driver, handle, lambda s: s.state is InstanceState.RUNNING, "running")
        assert status.pid is None and handle in await driver.instances()
        final = await driver.stop(handle, grace_s=5)
        assert final.state is InstanceState.EXITED and final.final and final.exit_code == -15, final
        assert handle not in await driver.instances() and ("Pod", "myc-instances", "life-0") not in fake.objects
        with pytest.raises(UnknownInstance):
            await driver.status(handle)
