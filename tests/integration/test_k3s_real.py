"""Opt-in tests against a real K3s — never run on our build machines (no K3s binary installable).

    MYCELIUM_TEST_KUBECONFIG=/etc/rancher/k3s/k3s.yaml ./scripts/test tests/integration/test_k3s_real.py
        the manager's reconcile loop against a real API server: every generated object accepted by
        its validation, updates and deletes behave as the fake says, nothing unowned touched
    MYCELIUM_K3S_BINARY=/usr/local/bin/k3s ./scripts/test tests/integration/test_k3s_real.py   (as root)
        the supervisor starts the real `k3s server` on a fresh data dir with the generated config
        (overlay address on a real WireGuard interface), waits for /readyz, and the node registers with
        the mycelium.io/node label the manager's node affinity selects on; then stops it
"""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path

import pytest
import trio

from mycelium.runtime.manifest import load_manifest
from mycelium.testing.deadlines import hang_after

pytestmark = pytest.mark.integration
EXAMPLES = Path(__file__).parents[2] / "examples"
KUBECONFIG = os.environ.get("MYCELIUM_TEST_KUBECONFIG")
K3S_BINARY = os.environ.get("MYCELIUM_K3S_BINARY")


@pytest.mark.skipif(not KUBECONFIG, reason="opt-in: set MYCELIUM_TEST_KUBECONFIG to a real cluster's kubeconfig")
def test_reconcile_against_a_real_api_server():
    from kubernetes import config

    from mycelium.runtime.k3s.manager.objects import desired_objects
    from mycelium.runtime.k3s.manager.reconcile import Reconciler

    spec = load_manifest(EXAMPLES / "echo.yaml")
    name = f"e2e{secrets.token_hex(3)}"
    wire = {**spec.to_wire(), "name": name}
    fake_node = "12D3KooWE2eTestNodeThatDoesNotExistAnywhere1111111"  # pods stay Pending: no such node
    api = config.new_client_from_config(KUBECONFIG)
    rec = Reconciler(api)
    try:
        objs, _ = desired_objects({name: wire}, {name: [fake_node]})
        report = rec.reconcile(objs)
        assert not report.errors and len(report.created) == len(objs), report
        report = rec.reconcile(objs)
        assert report.unchanged == len(objs) and not report.updated, report
        objs2, _ = desired_objects({name: wire}, {name: [fake_node, fake_node[:-1] + "2"]})
        report = rec.reconcile(objs2)
        assert report.updated == [f"Deployment myc-{name}/{name}"] and not report.errors, report
    finally:
        report = rec.reconcile([])
        api.close()
    assert f"Namespace myc-{name}" in report.deleted and not report.errors, report


@pytest.mark.skipif(not K3S_BINARY, reason="opt-in: set MYCELIUM_K3S_BINARY to a real k3s binary (run as root)")
async def test_supervisor_runs_a_real_k3s_server(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("a real k3s server needs root")
    from kubernetes import client, config

    from mycelium.identity import NodeKey
    from mycelium.overlay.keys import OverlayKey
    from mycelium.overlay.peers import desired_overlay
    from mycelium.overlay.wireguard import WireGuardLink
    from mycelium.runtime.k3s.config import NODE_LABEL, NodeFiles, NodePaths
    from mycelium.runtime.k3s.plan import plan_cluster
    from mycelium.runtime.k3s.supervision import SupervisorConfig
    from mycelium.runtime.k3s.supervisor import K3sSupervisor
    from mycelium.runtime.k3s.token import cluster_token
    from tests.k3s_helpers import primary

    me = NodeKey.generate().node_id
    p = primary({me: "sclerotium"})
    plan = plan_cluster(p, {me: True})
    link = WireGuardLink("myc-e2e0", OverlayKey.generate())
    link.up()
    try:
        link.apply(desired_overlay(me, plan.addresses, {}))
        paths = NodePaths(tmp_path / "k3s")
        sup = K3sSupervisor(paths, K3S_BINARY, SupervisorConfig(ready_timeout_s=300, probe_interval_s=2))
        sup.set_plan(NodeFiles.render(plan, me, "sclerotium", paths), cluster_token(secrets.token_bytes(32), p.network_id), {})
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            with hang_after(330):
                while sup.report().runtime != "k3s":
                    await trio.sleep(1)
            api = config.new_client_from_config(str(paths.kubeconfig))
            with hang_after(120):
                while True:
                    nodes = await trio.to_thread.run_sync(
                        lambda: client.CoreV1Api(api).list_node(label_selector=f"{NODE_LABEL}={me}").items)
                    if nodes:
                        break
                    await trio.sleep(2)
            addresses = {a.type: a.address for a in nodes[0].status.addresses}
            assert addresses["InternalIP"] == plan.of(me).address
            api.close()
            nursery.cancel_scope.cancel()
    finally:
        link.down()
        shutil.rmtree(tmp_path / "k3s", ignore_errors=True)
