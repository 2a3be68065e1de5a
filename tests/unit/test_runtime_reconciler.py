"""The reconciler converges a node without fighting the driver, and rolls updates within budget."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from mycelium.runtime.driver import InstanceState
from mycelium.runtime.reconciler import (
    ObservedInstance, ReplicaView, Restart, Start, Stop, desired_here, reconcile,
)
from mycelium.runtime.spec import RestartPolicy, ServiceSpec, UpdateStrategy

WEB = ServiceSpec(name="web", command=("true",), replicas=3)
WEB2 = replace(WEB, args=("--v2",))
DB = ServiceSpec(name="db", command=("true",))
RUNNING, HEALTHY, CRASHING = InstanceState.RUNNING, InstanceState.HEALTHY, InstanceState.CRASH_LOOP


def seen(spec: ServiceSpec, state=HEALTHY, **kw) -> ObservedInstance:
    return ObservedInstance(spec.name, spec.version(), state, **kw)


def test_desired_here_follows_placement():
    services = {"web": WEB, "db": DB}
    assert desired_here(services, {"web": ["a", "b"], "db": ["b"]}, "a") == {"web": WEB}
    assert desired_here(services, {"web": ["a", "b"], "db": ["b"]}, "c") == {}


def test_converged_node_does_nothing():
    assert reconcile("a", {"web": WEB}, {"web": seen(WEB)}) == []


def test_start_missing_and_stop_unplaced_stops_first():
    actions = reconcile("a", {"web": WEB}, {"db": seen(DB)})
    assert actions == [Stop("db", "service db is no longer placed on this node"), Start("web", WEB)]


def test_crashing_current_version_is_left_to_the_driver():
    assert reconcile("a", {"web": WEB}, {"web": seen(WEB, CRASHING)}) == []


def test_instance_the_driver_gave_up_on_is_restarted_only_under_policy_always():
    assert reconcile("a", {"web": WEB}, {"web": seen(WEB, InstanceState.EXITED, final=True)}) == [
        Restart("web", WEB, "the driver stopped restarting it, but the policy is always")]
    never = replace(WEB, restart=RestartPolicy(policy="never"))
    assert reconcile("a", {"web": never}, {"web": seen(never, InstanceState.EXITED, final=True)}) == []


def test_update_without_a_view_replaces_the_local_instance():
    [action] = reconcile("a", {"web": WEB2}, {"web": seen(WEB)})
    assert isinstance(action, Restart) and action.spec == WEB2 and "rolling update" in action.reason


def test_broken_old_version_is_replaced_regardless_of_budget():
    view = [ReplicaView("a", WEB.version(), False), ReplicaView("b", WEB.version(), False)]
    [action] = reconcile("b", {"web": WEB2}, {"web": seen(WEB, CRASHING)}, {"web": view})
    assert isinstance(action, Restart)


def test_rolling_update_waits_for_its_turn():
    old, new = WEB.version(), WEB2.version()
    view = [ReplicaView("a", old, True), ReplicaView("b", old, True), ReplicaView("c", old, True)]
    assert reconcile("a", {"web": WEB2}, {"web": seen(WEB)}, {"web": view}) != []
    assert reconcile("b", {"web": WEB2}, {"web": seen(WEB)}, {"web": view}) == []
    # a is updated but not yet available: nobody else may go down
    view = [ReplicaView("a", new, False), ReplicaView("b", old, True), ReplicaView("c", old, True)]
    assert reconcile("b", {"web": WEB2}, {"web": seen(WEB)}, {"web": view}) == []
    view = [ReplicaView("a", new, True), ReplicaView("b", old, True), ReplicaView("c", old, True)]
    assert reconcile("b", {"web": WEB2}, {"web": seen(WEB)}, {"web": view}) != []
    assert reconcile("c", {"web": WEB2}, {"web": seen(WEB)}, {"web": view}) == []


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 7), st.integers(1, 4), st.lists(st.booleans(), min_size=7, max_size=7))
def test_network_wide_rolling_update_stays_within_budget_and_finishes(n, max_unavailable, slow):
    """All nodes reconcile on the same view each round; a replaced replica is unavailable for one
    round (two if `slow`). Unavailability never exceeds maxUnavailable and the update completes."""
    old = replace(WEB, update=UpdateStrategy(max_unavailable=max_unavailable))
    new = replace(old, args=("--v2",))
    nodes = [f"n{i}" for i in range(n)]
    version = {node: old.version() for node in nodes}
    down_for = {node: 0 for node in nodes}
    for _ in range(4 * n + 4):
        view = [ReplicaView(node, version[node], down_for[node] == 0) for node in nodes]
        acted = []
        for node in nodes:
            state = HEALTHY if down_for[node] == 0 else InstanceState.STARTING
            observed = {"web": ObservedInstance("web", version[node], state)}
            if reconcile(node, {"web": new}, observed, {"web": view}):
                acted.append(node)
        for node in nodes:
            down_for[node] = max(0, down_for[node] - 1)
        for node in acted:
            version[node] = new.version()
            down_for[node] = 2 if slow[nodes.index(node)] else 1
        assert sum(1 for node in nodes if down_for[node]) <= max_unavailable
    assert set(version.values()) == {new.version()}
