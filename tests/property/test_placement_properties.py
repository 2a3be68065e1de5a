"""Placement is deterministic, honours selectors/roles/capacity, and moves only what must move."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from mycelium.runtime.placement import NodeCapacity, place, rank, rendezvous_score, shortfall
from mycelium.runtime.spec import Resources, Selector, ServiceSpec

ROLES = ["sclerotium", "rhizomorph", "hypha"]
ZONES = ["a", "b"]
MiB = 2**20


@st.composite
def nodes_st(draw, ample: bool = False):
    count = draw(st.integers(1, 9))
    out = {}
    for i in range(count):
        out[f"node-{i:02d}"] = NodeCapacity(
            role=draw(st.sampled_from(ROLES)),
            labels={"zone": draw(st.sampled_from(ZONES))},
            cpu_millicores=10**9 if ample else draw(st.integers(0, 4000)),
            memory_bytes=2**50 if ample else draw(st.integers(0, 8192)) * MiB,
            alive=True if ample else draw(st.booleans() | st.just(True)),
        )
    return out


@st.composite
def services_st(draw, node_ids=("node-00", "node-01", "node-02", "node-03")):
    count = draw(st.integers(0, 6))
    out = {}
    for i in range(count):
        name = f"svc-{i}"
        out[name] = ServiceSpec(
            name=name,
            command=("true",),
            replicas=draw(st.integers(0, 5) | st.just("all")),
            selector=Selector(
                roles=tuple(sorted(draw(st.sets(st.sampled_from(["sclerotium", "rhizomorph"]))))),
                labels=draw(st.sampled_from([(), (("zone", "a"),), (("zone", "b"),)])),
                nodes=tuple(sorted(draw(st.sets(st.sampled_from(node_ids), max_size=3)))),
            ),
            resources=Resources(draw(st.integers(0, 2000)), draw(st.integers(0, 2048)) * MiB),
        )
    return out


def _shuffled(mapping: dict, seed: int) -> dict:
    items = list(mapping.items())
    random.Random(seed).shuffle(items)
    return dict(items)


@settings(max_examples=100, deadline=None)
@given(nodes_st(), services_st(), st.integers(0, 2**32))
def test_deterministic_under_input_reordering_and_wire_form(nodes, services, seed):
    expected = place(services, nodes)
    assert place(_shuffled(services, seed), _shuffled(nodes, seed + 1)) == expected
    wire = {name: spec.to_wire() for name, spec in services.items()}
    assert place(wire, nodes) == expected


@settings(max_examples=100, deadline=None)
@given(nodes_st(), services_st())
def test_constraints_hold(nodes, services):
    placement = place(services, nodes)
    used_cpu = {nid: 0 for nid in nodes}
    used_mem = {nid: 0 for nid in nodes}
    for name, spec in services.items():
        chosen = placement[name]
        assert len(chosen) == len(set(chosen)), "two replicas of one service on one node"
        if spec.replicas != "all":
            assert len(chosen) <= spec.replicas
        for nid in chosen:
            node = nodes[nid]
            assert node.alive and node.role != "hypha"
            assert not spec.selector.roles or node.role in spec.selector.roles
            assert not spec.selector.nodes or nid in spec.selector.nodes
            assert all(node.labels.get(k) == v for k, v in spec.selector.labels)
            used_cpu[nid] += spec.resources.cpu_millicores
            used_mem[nid] += spec.resources.memory_bytes
    for nid, node in nodes.items():
        assert used_cpu[nid] <= node.cpu_millicores
        assert used_mem[nid] <= node.memory_bytes


@settings(max_examples=100, deadline=None)
@given(nodes_st(ample=True), services_st(), st.data())
def test_failure_moves_only_the_failed_nodes_replicas(nodes, services, data):
    before = place(services, nodes)
    failed = data.draw(st.sampled_from(sorted(nodes)))
    after = place(services, {**nodes, failed: NodeCapacity(**{**_fields(nodes[failed]), "alive": False})})
    for name in services:
        survivors = [nid for nid in before[name] if nid != failed]
        assert set(survivors) <= set(after[name]), "a replica on a healthy node moved"
        if failed not in before[name]:
            assert after[name] == before[name]
        else:
            assert len(set(after[name]) - set(survivors)) <= 1, "more than the lost replica was added"


@settings(max_examples=100, deadline=None)
@given(nodes_st(), services_st(), st.data())
def test_failure_under_capacity_only_disturbs_services_after_a_moved_one(nodes, services, data):
    """When capacity binds, services ordered before the first one that lost a replica stay put."""
    before = place(services, nodes)
    failed = data.draw(st.sampled_from(sorted(nodes)))
    after = place(services, {**nodes, failed: NodeCapacity(**{**_fields(nodes[failed]), "alive": False})})
    for name in sorted(services):
        if failed in before[name]:
            break
        assert after[name] == before[name]


def _fields(node: NodeCapacity) -> dict:
    return {"role": node.role, "labels": node.labels, "cpu_millicores": node.cpu_millicores,
            "memory_bytes": node.memory_bytes, "alive": node.alive}


def test_hyphae_and_dead_nodes_never_run_workloads():
    nodes = {"h": NodeCapacity("hypha", cpu_millicores=10**6, memory_bytes=2**40),
             "d": NodeCapacity("rhizomorph", cpu_millicores=10**6, memory_bytes=2**40, alive=False),
             "r": NodeCapacity("rhizomorph", cpu_millicores=1000, memory_bytes=2**30)}
    spec = ServiceSpec(name="web", command=("true",), replicas="all")
    assert place({"web": spec}, nodes) == {"web": ["r"]}
    assert shortfall({"web": spec}, {"web": ["r"]}) == {"web": 0}


def test_capacity_is_consumed_in_service_name_order():
    nodes = {"only": NodeCapacity("rhizomorph", cpu_millicores=1000, memory_bytes=2**30)}
    big = Resources(cpu_millicores=800, memory_bytes=MiB)
    services = {name: ServiceSpec(name=name, command=("true",), resources=big) for name in ("b", "a")}
    assert place(services, nodes) == {"a": ["only"], "b": []}
    assert shortfall(services, {"a": ["only"], "b": []}) == {"a": 0, "b": 1}


def test_weight_biases_the_lottery_towards_bigger_nodes():
    nodes = {"small": NodeCapacity("rhizomorph", cpu_millicores=100, memory_bytes=2**30),
             "big": NodeCapacity("rhizomorph", cpu_millicores=300, memory_bytes=2**30)}
    wins = sum(rank(f"svc-{i}", nodes)[0] == "big" for i in range(2000))
    assert 0.68 < wins / 2000 < 0.82  # expected 3/4


def test_scores_are_integers_and_stable():
    score = rendezvous_score("web", "12D3KooWExample", 7)
    assert isinstance(score, int)
    assert score == rendezvous_score("web", "12D3KooWExample", 7)
    assert rendezvous_score("web", "12D3KooWExample", 14) > score
