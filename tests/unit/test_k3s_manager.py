"""The manager's reconcile loop through the real `kubernetes` client against a fake API server on
loopback (mycelium.testing.fake_kube: kube-apiserver's answers for the surface the manager uses,
with strict schema validation of every body it receives)."""

from __future__ import annotations

from pathlib import Path

import pytest
from kubernetes import client

from mycelium.runtime.k3s.manager.objects import desired_objects
from mycelium.runtime.k3s.manager.reconcile import Reconciler
from mycelium.runtime.manifest import load_manifest, parse_manifest
from mycelium.testing.fake_kube import FakeKube
from tests.k3s_helpers import NODES

EXAMPLES = Path(__file__).parents[2] / "examples"
ECHO = load_manifest(EXAMPLES / "echo.yaml")
WEB = load_manifest(EXAMPLES / "static-web.yaml")

# what kube-apiserver serves and the manager may call: anything else is a surprise
SURFACE = {
    ("GET", "/api/v1/namespaces"), ("POST", "/api/v1/namespaces"), ("GET", "/api/v1/namespaces/{name}"),
    ("PUT", "/api/v1/namespaces/{name}"), ("DELETE", "/api/v1/namespaces/{name}"),
} | {(m, f"/{p}/namespaces/{{ns}}/{r}" + s) for p, r in [
    ("api/v1", "configmaps"), ("api/v1", "services"), ("apis/apps/v1", "deployments"),
    ("apis/apps/v1", "daemonsets"), ("apis/networking.k8s.io/v1", "networkpolicies")]
    for m, s in [("GET", ""), ("POST", ""), ("GET", "/{name}"), ("PUT", "/{name}"), ("DELETE", "/{name}")]}


@pytest.fixture
def cluster():
    fake = FakeKube()
    server, url = fake.serve()
    cfg = client.Configuration()
    cfg.host = url
    api = client.ApiClient(cfg)
    try:
        yield fake, Reconciler(api)
    finally:
        api.close()
        server.shutdown()
        server.server_close()


def objects(services: dict, placements: dict):
    objs, skipped = desired_objects({n: s.to_wire() for n, s in services.items()}, placements)
    assert skipped == {}
    return objs


def writes(fake: FakeKube, since: int) -> list[tuple[str, str]]:
    return [r for r in fake.requests[since:] if r[0] != "GET"]


def test_create_then_nothing_then_update_then_delete(cluster):
    fake, rec = cluster
    report = rec.reconcile(objects({"echo": ECHO, "static-web": WEB}, {"echo": NODES[:2], "static-web": NODES[:1]}))
    assert not report.errors and not report.conflicts, report
    assert len(report.created) == 10 and report.updated == report.deleted == []
    assert ("Deployment", "myc-echo", "echo") in fake.objects
    assert fake.objects[("Service", "myc-echo", "echo")]["spec"]["clusterIP"].startswith("10.43.")
    assert set(fake.requests) <= SURFACE, set(fake.requests) - SURFACE

    mark = len(fake.requests)
    report = rec.reconcile(objects({"echo": ECHO, "static-web": WEB}, {"echo": NODES[:2], "static-web": NODES[:1]}))
    assert report.unchanged == 10 and writes(fake, mark) == [], "an unchanged Primary writes nothing"

    ip = fake.objects[("Service", "myc-echo", "echo")]["spec"]["clusterIP"]
    report = rec.reconcile(objects({"echo": ECHO, "static-web": WEB}, {"echo": NODES[1:4], "static-web": NODES[:1]}))
    assert report.updated == ["Deployment myc-echo/echo"] and not report.errors, report
    dep = fake.objects[("Deployment", "myc-echo", "echo")]
    assert dep["spec"]["replicas"] == 3 and dep["metadata"]["generation"] == 2
    assert fake.objects[("Service", "myc-echo", "echo")]["spec"]["clusterIP"] == ip

    portless = parse_manifest(
        "apiVersion: mycelium/v1\nkind: Endomycete\nname: static-web\nspec:\n  command: [sleep, infinity]\n")
    report = rec.reconcile(objects({"echo": ECHO, "static-web": portless}, {"echo": NODES[1:4], "static-web": NODES[:1]}))
    assert sorted(report.deleted) == ["ConfigMap myc-static-web/static-web-files", "Service myc-static-web/static-web"]

    report = rec.reconcile(objects({"static-web": portless}, {"static-web": NODES[:1]}))  # echo undeployed
    assert report.deleted == ["Namespace myc-echo"]
    assert not [k for k in fake.objects if k[1] == "myc-echo"]  # emptied; the namespace itself Terminating
    assert fake.objects[("Namespace", "", "myc-echo")]["status"]["phase"] == "Terminating"
    assert set(fake.requests) <= SURFACE


def test_objects_it_does_not_own_are_left_alone(cluster):
    fake, rec = cluster
    # someone's own namespace with the name we would use, and a foreign Deployment in one of ours
    fake.dispatch("POST", "/api/v1/namespaces", {}, {"apiVersion": "v1", "kind": "Namespace",
                                                      "metadata": {"name": "myc-static-web"}})
    report = rec.reconcile(objects({"echo": ECHO}, {"echo": NODES[:1]}))
    foreign = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "theirs", "labels": {"x": "y"}},
               "spec": {"selector": {"matchLabels": {"x": "y"}}, "template": {
                   "metadata": {"labels": {"x": "y"}}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}
    assert fake.dispatch("POST", "/apis/apps/v1/namespaces/myc-echo/deployments", {}, foreign)[0] == 201
    report = rec.reconcile(objects({"echo": ECHO, "static-web": WEB}, {"echo": NODES[:1], "static-web": NODES[:1]}))
    assert report.conflicts == ["Namespace myc-static-web exists and is not ours "
                                "(no app.kubernetes.io/managed-by=mycelium label): left alone"]
    assert ("ConfigMap", "myc-static-web", "static-web-files") not in fake.objects  # nothing put into theirs
    assert ("Deployment", "myc-echo", "theirs") in fake.objects
    assert "labels" not in fake.objects[("Namespace", "", "myc-static-web")]["metadata"]
    report = rec.reconcile([])  # everything undeployed: our objects go, the namespace stays for "theirs"
    assert sorted(report.deleted) == ["ConfigMap myc-echo/echo-files", "Deployment myc-echo/echo",
                                      "NetworkPolicy myc-echo/echo", "Service myc-echo/echo"]
    assert report.conflicts == ["Namespace myc-echo kept: it holds objects that are not ours (Deployment theirs)"]
    assert ("Deployment", "myc-echo", "theirs") in fake.objects and ("Namespace", "", "myc-static-web") in fake.objects
    fake.dispatch("DELETE", "/apis/apps/v1/namespaces/myc-echo/deployments/theirs", {}, None)
    assert rec.reconcile([]).deleted == ["Namespace myc-echo"]


def test_a_concurrent_writer_makes_the_update_fail_and_the_next_round_succeeds(cluster):
    fake, rec = cluster
    rec.reconcile(objects({"echo": ECHO}, {"echo": NODES[:1]}))
    real_dispatch, bumped = fake.dispatch, []

    def racing(method, path, query, body):
        if method == "PUT" and not bumped:  # someone else writes between our GET and our PUT
            key = ("Deployment", "myc-echo", "echo")
            fake.objects[key]["metadata"]["resourceVersion"] += "0"
            bumped.append(key)
        return real_dispatch(method, path, query, body)

    fake.dispatch = racing
    report = rec.reconcile(objects({"echo": ECHO}, {"echo": NODES[:2]}))
    assert report.errors and "409" in report.errors[0], report
    report = rec.reconcile(objects({"echo": ECHO}, {"echo": NODES[:2]}))
    assert report.updated == ["Deployment myc-echo/echo"] and not report.errors


def test_the_fake_refuses_what_kube_apiserver_would(cluster):
    fake, _ = cluster
    bad = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}, "spec": {"bogus": 1}}
    assert fake.dispatch("POST", "/api/v1/namespaces", {}, bad)[0] == 422
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {}}
    assert fake.dispatch("POST", "/api/v1/namespaces/nowhere/configmaps", {}, cm)[0] == 404
    ok = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}}
    assert fake.dispatch("POST", "/api/v1/namespaces", {}, ok)[0] == 201
    assert fake.dispatch("POST", "/api/v1/namespaces", {}, ok)[0] == 409
    assert fake.dispatch("PUT", "/api/v1/namespaces/x", {}, ok)[0] == 422  # no resourceVersion


def test_a_service_redeployed_while_its_namespace_terminates_comes_back(cluster):
    fake, rec = cluster
    rec.reconcile(objects({"echo": ECHO}, {"echo": NODES[:1]}))
    assert rec.reconcile([]).deleted == ["Namespace myc-echo"]
    assert fake.objects[("Namespace", "", "myc-echo")]["status"]["phase"] == "Terminating"
    report = rec.reconcile(objects({"echo": ECHO}, {"echo": NODES[:1]}))  # redeployed at once
    assert report.errors == ["Namespace myc-echo is still being deleted; created again once it is gone"]
    for _ in range(3):
        report = rec.reconcile(objects({"echo": ECHO}, {"echo": NODES[:1]}))
        if not report.errors:
            break
    assert "Deployment myc-echo/echo" in report.created and not report.errors, report


def test_the_manager_program_reconciles_a_primary_through_a_kubeconfig(tmp_path, capsys):
    import json

    from mycelium.testing.k3s_standin import write_kubeconfig

    fake = FakeKube()
    server, url = fake.serve()
    try:
        write_kubeconfig(str(tmp_path / "kubeconfig"), server.server_address[1])
        (tmp_path / "primary.json").write_text(json.dumps(
            {"height": 9, "services": {"echo": ECHO.to_wire()}, "placements": {"echo": NODES[:2]}}))
        from mycelium.runtime.k3s.manager.__main__ import main
        code = main(["--once", "--primary-file", str(tmp_path / "primary.json"),
                     "--kubeconfig", str(tmp_path / "kubeconfig")])
        line = json.loads(capsys.readouterr().out.splitlines()[-1])
        assert code == 0 and line["height"] == 9 and len(line["created"]) == 5 and line["errors"] == [], line
        assert fake.objects[("Deployment", "myc-echo", "echo")]["spec"]["replicas"] == 2
    finally:
        server.shutdown()
        server.server_close()
