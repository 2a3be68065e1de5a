"""Every object the manager generates is valid for the Kubernetes version K3s ships (strict OpenAPI
schemas, offline through kubernetes-validate), and carries placement and ownership as designed."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from hypothesis import given, settings, strategies as st

from mycelium.runtime.k3s.config import NODE_LABEL
from mycelium.runtime.k3s.manager.objects import (
    KUBERNETES_VERSION, MANAGED_BY, SPEC_HASH, desired_objects, namespace_for, service_objects,
)
from mycelium.runtime.manifest import load_manifest, parse_manifest
from mycelium.runtime.spec import HealthCheck, PortSpec, ServiceSpec
from tests.k3s_helpers import NODES

EXAMPLES = Path(__file__).parents[2] / "examples"
ROOT = Path(__file__).parents[2]


def validate(obj: dict, version: str = KUBERNETES_VERSION) -> None:
    kubernetes_validate.validate(obj, version, strict=True)


IMAGE_ALL = parse_manifest("""
apiVersion: mycelium/v1
kind: Endomycete
name: node-exporter
spec:
  image: quay.io/prometheus/node-exporter:v1.8.2
  replicas: all
  ports: [{name: metrics, port: 9100}]
  health: {tcp: {port: metrics}, period: 10s}
""")
EXEC_NO_PORTS = parse_manifest("""
apiVersion: mycelium/v1
kind: Endomycete
name: worker
spec:
  command: [sh, -c, "while true; do date; sleep 5; done"]
  env: {MODE: batch}
  replicas: 2
  health: {exec: {command: ["true"]}, period: 1500ms}
  restart: {policy: never}
""")


@pytest.mark.parametrize("version", [KUBERNETES_VERSION, "1.37.0"])
@pytest.mark.parametrize("spec", [load_manifest(EXAMPLES / "echo.yaml"), load_manifest(EXAMPLES / "static-web.yaml"),
                                  IMAGE_ALL, EXEC_NO_PORTS], ids=lambda s: getattr(s, "name", s))
def test_every_generated_object_is_schema_valid(spec, version):
    objs = service_objects(spec, NODES[:2])
    assert objs[0]["kind"] == "Namespace"
    for obj in objs:
        validate(obj, version)


def test_placement_becomes_node_affinity_and_one_replica_per_node():
    spec = load_manifest(EXAMPLES / "echo.yaml")
    objs = {o["kind"]: o for o in service_objects(spec, [NODES[3], NODES[1]])}
    assert set(objs) == {"Namespace", "ConfigMap", "Deployment", "Service", "NetworkPolicy"}
    dep = objs["Deployment"]
    assert dep["spec"]["replicas"] == 2 and dep["metadata"]["namespace"] == "myc-echo"
    pod = dep["spec"]["template"]["spec"]
    [term] = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert term["matchExpressions"] == [{"key": NODE_LABEL, "operator": "In", "values": sorted([NODES[3], NODES[1]])}]
    assert pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0]["topologyKey"] == \
        "kubernetes.io/hostname"
    env = {e["name"]: e["value"] for e in pod["containers"][0]["env"]}
    assert env["PORT"] == "8080" and env["MYCELIUM_PORT_HTTP"] == "8080" and env["ECHO_GREETING"] == "echo"
    assert pod["containers"][0]["readinessProbe"]["httpGet"] == {"path": "/health", "port": 8080}
    assert objs["Service"]["spec"]["ports"][0]["port"] == 8080
    assert objs["NetworkPolicy"]["spec"]["ingress"] == [{"ports": [{"protocol": "TCP", "port": 8080}]}]
    for o in objs.values():
        assert o["metadata"]["labels"][MANAGED_BY[0]] == MANAGED_BY[1] and SPEC_HASH in o["metadata"]["annotations"]


def test_replicas_all_is_a_daemonset_and_no_ports_means_no_service_and_deny_all_ingress():
    kinds = [o["kind"] for o in service_objects(IMAGE_ALL, NODES[:3])]
    assert "DaemonSet" in kinds and "Deployment" not in kinds
    objs = {o["kind"]: o for o in service_objects(EXEC_NO_PORTS, NODES[:2])}
    assert "Service" not in objs and objs["NetworkPolicy"]["spec"]["ingress"] == []
    assert "livenessProbe" not in objs["Deployment"]["spec"]["template"]["spec"]["containers"][0]  # policy never


def test_spec_hash_changes_with_the_spec_and_the_placement():
    spec = load_manifest(EXAMPLES / "echo.yaml")
    a = service_objects(spec, NODES[:2])
    assert a == service_objects(spec, NODES[:2])  # deterministic
    b = service_objects(spec, NODES[1:3])
    hashes = lambda objs: {o["kind"]: o["metadata"]["annotations"][SPEC_HASH] for o in objs}
    assert hashes(a)["Deployment"] != hashes(b)["Deployment"] and hashes(a)["Service"] == hashes(b)["Service"]


def test_long_service_names_still_make_valid_namespaces():
    name = "s" * 63
    assert len(namespace_for(name)) <= 63 and namespace_for(name) != namespace_for("s" * 62 + "t")
    spec = ServiceSpec(name=name, command=("true",), ports=(PortSpec("http", 0),))
    for obj in service_objects(spec, NODES[:1]):
        validate(obj)


def test_unreadable_or_unplaced_services_are_skipped_with_a_reason():
    spec = load_manifest(EXAMPLES / "echo.yaml")
    objs, skipped = desired_objects({"echo": spec.to_wire(), "bad": {"v": 99}, "idle": spec.to_wire()},
                                    {"echo": NODES[:1], "idle": []})
    assert {o["metadata"].get("namespace", o["metadata"]["name"]) for o in objs} == {"myc-echo"}
    assert set(skipped) == {"bad", "idle"} and "placed on no node" in skipped["idle"]


port_names = st.from_regex(r"[a-z][a-z0-9]{0,9}", fullmatch=True)


@settings(max_examples=15, deadline=None)
@given(name=st.from_regex(r"[a-z][a-z0-9-]{0,30}[a-z0-9]", fullmatch=True),
       ports=st.lists(st.tuples(port_names, st.sampled_from([0, 80, 8443])), max_size=3, unique_by=lambda p: p[0]),
       replicas=st.one_of(st.integers(1, 4), st.just("all")), cpu=st.integers(1, 4000), mem=st.integers(2**20, 2**34),
       health=st.sampled_from([None, "tcp", "http", "exec"]))
def test_generated_objects_are_valid_for_any_spec(name, ports, replicas, cpu, mem, health):
    from mycelium.runtime.spec import Resources
    pspecs = tuple(PortSpec(n, p) for n, p in ports)
    check = None
    if health == "exec" or (health and not pspecs):
        check = HealthCheck("exec", command=("true",))
    elif health:
        check = HealthCheck(health, port=pspecs[0].name)
    spec = ServiceSpec(name=name, command=("run", "$(PORT)"), ports=pspecs, replicas=replicas,
                       resources=Resources(cpu, mem), health=check)
    for obj in service_objects(spec, NODES[:3]):
        validate(obj)


def test_the_manager_manifest_in_k3s_overlay_is_schema_valid():
    from mycelium.runtime.k3s.manager.deploy import render_manager_manifest
    text = render_manager_manifest(state_dir=Path("/var/lib/mycelium"), image="ghcr.io/mycelium/manager:0.1.0",
                                   node=NODES[0], templates=ROOT / "k3s-overlay")
    docs = [d for d in yaml.safe_load_all(text) if d]
    assert {d["kind"] for d in docs} == {"Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Deployment"}
    for doc in docs:
        validate(doc)


@pytest.mark.parametrize("spec", [load_manifest(EXAMPLES / "echo.yaml"), IMAGE_ALL, EXEC_NO_PORTS],
                         ids=lambda s: s.name)
def test_instance_pods_are_schema_valid_and_pinned(spec):
    from mycelium.runtime.k3s.manager.objects import instance_pod

    pod = instance_pod(f"{spec.name}-0", spec, NODES[0], "myc-instances")
    validate(pod)
    terms = pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert terms[0]["matchExpressions"][0]["values"] == [NODES[0]]
    ports = pod["spec"]["containers"][0].get("ports", [])
    assert all(("hostPort" in p) == (p["containerPort"] == 9100) for p in ports)  # only fixed ports
