"""The workload runner and the service-spore view: reports on the wire, merging with the Primary,
start backoff, and the runner converging a node with the real process driver (fake session)."""

from __future__ import annotations

import os
import socket
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from mycelium.runtime.spec import PortSpec, RestartPolicy, ServiceSpec
from mycelium.runtime.runner import StartBackoff, WorkloadConfig, WorkloadRunner
from mycelium.runtime.reports import (
    ReplicaHealth, ReplicaReport, reachable_host, service_views, summary_health,
)

A, B, C = "node-a", "node-b", "node-c"
WEB = ServiceSpec(name="web", command=("sleep", "30"), replicas=2, ports=(PortSpec("http", 0),))
STALE_MS = 60_000
NOW_MS = 1_000_000_000


def report(node, health=ReplicaHealth.HEALTHY, ts=NOW_MS, endpoints=None, service="web") -> ReplicaReport:
    return ReplicaReport(node, service, health, tuple(endpoints if endpoints is not None else [f"10.0.0.{ord(node[-1])}:80"]),
                         0, WEB.version(), "", ts)


# --------------------------------------------------------------------------- reports on the wire

reports = st.builds(
    ReplicaReport, node=st.sampled_from([A, B, C]), service=st.just("web"),
    health=st.sampled_from([h for h in ReplicaHealth if h is not ReplicaHealth.STALE]),
    endpoints=st.lists(st.tuples(st.sampled_from(["127.0.0.1", "10.1.2.3", "[::1]"]), st.integers(1, 65535))
                       .map(lambda t: f"{t[0]}:{t[1]}"), max_size=4).map(tuple),
    restarts=st.integers(0, 2**40), spec_version=st.text(max_size=16), message=st.text(max_size=300),
    timestamp_ms=st.integers(0, 2**50))


@settings(max_examples=150, deadline=None)
@given(reports)
def test_a_report_survives_its_body(r):
    assert ReplicaReport.from_body(r.node, r.service, r.to_body(), r.timestamp_ms) == r


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                           max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["v", "health", "endpoints", "restarts", "spec_version", "message", "x"]),
                       json_values) | json_values)
def test_a_junk_body_is_refused_not_raised(body):
    parsed = ReplicaReport.from_body(A, "web", body, 0)
    assert parsed is None or parsed.to_body()["health"] == body["health"]


def test_bodies_that_lie_are_refused():
    good = report(A).to_body()
    for change in ({"health": "stale"}, {"health": "great"}, {"endpoints": ["no-port"]}, {"endpoints": ["h:0"]},
                   {"restarts": -1}, {"restarts": True}, {"v": 2}, {"v": True}, {"health": ["healthy"]}, {"endpoints": ["h:1"] * 17}):
        assert ReplicaReport.from_body(A, "web", {**good, **change}, 0) is None, change


def test_reachable_host_prefers_a_routable_address():
    assert reachable_host(["/ip4/127.0.0.1/tcp/1", "/ip4/192.168.1.7/tcp/1"]) == "192.168.1.7"
    assert reachable_host(["/ip4/0.0.0.0/tcp/1", "/ip4/127.0.0.1/tcp/1"]) == "127.0.0.1"
    assert reachable_host(["/dns4/x/tcp/1", "/ip4/nonsense/tcp/1", "garbage"]) == "127.0.0.1"
    assert reachable_host(["/ip6/::1/tcp/1", "/ip6/fe80::1/tcp/1", "/ip6/2001:db8::5/tcp/1"]) == "[2001:db8::5]"


# --------------------------------------------------------------------------- the merged view


def test_view_merges_the_primary_with_reports():
    gossip = [report(A), report(B, ReplicaHealth.CRASH_LOOP), report(C), report(A, ts=NOW_MS - 5)]
    view = service_views({"web": WEB}, {"web": [A, B]}, gossip, now_ms=NOW_MS, stale_after_ms=STALE_MS)["web"]
    assert view.placement == (A, B)  # C runs something the Primary did not place there: ignored
    assert view.running == 1 and view.endpoints() == ["10.0.0.97:80"]
    assert view.health() == "degraded"
    row = view.row(NOW_MS)
    assert row["desired"] == 2 and row["wanted"] == 2 and row["placement"] == {A: "healthy", B: "crash_loop"}
    assert row["up_to_date"] == 1
    older = service_views({"web": WEB}, {"web": [A]}, [replace(report(A), spec_version="old")], now_ms=NOW_MS,
                          stale_after_ms=STALE_MS)["web"]
    assert older.running == 1 and older.up_to_date == 0


def test_missing_stale_and_local_reports():
    old = report(B, ts=NOW_MS - STALE_MS - 1)
    local = {"web": report(A, ReplicaHealth.STARTING, ts=0)}  # this node's own: never stale
    gossip = [old, report(A, ts=NOW_MS)]
    view = service_views({"web": WEB}, {"web": [A, B, C]}, gossip, now_ms=NOW_MS, stale_after_ms=STALE_MS,
                         local=local)["web"]
    assert {n: r.health for n, r in view.replicas.items()} == {
        A: ReplicaHealth.STARTING, B: ReplicaHealth.STALE, C: ReplicaHealth.PENDING}
    assert view.endpoints() == [] and view.health() == "starting"
    assert "said healthy" in view.replicas[B].message


@settings(max_examples=150, deadline=None)
@given(st.lists(reports, max_size=12), st.lists(st.sampled_from([A, B, C]), unique=True, max_size=3),
       st.integers(0, 2**50))
def test_view_invariants(gossip, placed, now_ms):
    view = service_views({"web": WEB}, {"web": placed}, gossip, now_ms=now_ms, stale_after_ms=STALE_MS)["web"]
    assert list(view.replicas) == placed and 0 <= view.running <= len(placed)
    fresh_ok = {e for r in gossip if r.node in placed and r.health.available for e in r.endpoints}
    assert set(view.endpoints()) <= fresh_ok
    assert (view.health() == "healthy") == (bool(placed) and view.running == len(placed))


def test_summary_health():
    H = ReplicaHealth
    assert summary_health(0, []) == "unplaced"
    assert summary_health(2, [H.HEALTHY, H.RUNNING]) == "healthy"
    assert summary_health(2, [H.HEALTHY, H.FAILED]) == "degraded"
    assert summary_health(2, [H.FAILED, H.CRASH_LOOP]) == "crash_loop"
    assert summary_health(1, [H.FAILED]) == "failed"
    assert summary_health(2, [H.PENDING, H.EXITED]) == "starting"
    assert summary_health(1, [H.STALE]) == "unhealthy"


def test_start_backoff_follows_the_service_policy():
    spec = ServiceSpec(name="web", restart=RestartPolicy(backoff_initial_ms=1000, backoff_max_ms=3000))
    starts = StartBackoff()
    assert starts.ready("web", 0)
    assert starts.failed("web", spec, 10.0, "port taken").retry_at == 11.0
    assert not starts.ready("web", 10.9) and starts.ready("web", 11.0)
    assert starts.failed("web", spec, 11.0, "port taken").retry_at == 13.0
    assert starts.failed("web", spec, 13.0, "port taken").retry_at == 16.0  # capped at 3 s
    starts.keep_only({"db"})
    assert starts.ready("web", 0) and not starts.failures


# --------------------------------------------------------------------------- the runner


class FakeLatent:
    def __init__(self) -> None:
        self.published: list[tuple[str, dict]] = []

    def publish_service_entry(self, service: str, body: dict) -> bool:
        self.published.append((service, body))
        return True

    def entries(self) -> list:
        return []


def fake_session(tmp_path: Path, services: dict[str, ServiceSpec], placements: dict[str, list[str]]):
    head = SimpleNamespace(services={n: s.to_wire() for n, s in services.items()}, placements=placements)
    return SimpleNamespace(key=SimpleNamespace(node_id=A), ledger=SimpleNamespace(head=head), latent=FakeLatent(),
                           cfg=SimpleNamespace(state_dir=tmp_path), mesh=None)


async def wait_for(predicate, what: str):
    with trio.fail_after(10):
        while not (value := predicate()):
            await trio.sleep(0.02)
    return value


@pytest.fixture
def runner_config():
    return WorkloadConfig(poll_s=0.02, refresh_s=60, stop_grace_s=1.0)


async def test_runner_starts_what_is_placed_here_and_stops_what_leaves(tmp_path, runner_config):
    session = fake_session(tmp_path, {"web": WEB}, {"web": [A, B]})
    runner = WorkloadRunner(session, runner_config)
    async with trio.open_nursery() as nursery:
        await nursery.start(runner.run)
        rows = await wait_for(lambda: [r for r in runner.services() if r["placement"].get(A) == "running"],
                              "web running here")
        assert rows[0]["placement"][B] == "pending" and rows[0]["running"] == 1
        (endpoint,) = runner.resolve("web")
        assert endpoint.startswith("127.0.0.1:")
        body = session.latent.published[-1][1]
        assert body["health"] == "running" and body["endpoints"] == [endpoint]
        pid = (await runner.driver.status((await runner.driver.instances())[0])).pid
        session.ledger.head.placements = {"web": [B, C]}  # the Primary moves it away from this node
        await wait_for(lambda: session.latent.published[-1][1]["health"] == "stopped", "a stopped report")
        assert await runner.driver.instances() == []
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
        nursery.cancel_scope.cancel()
    assert runner.driver is None


async def test_a_taken_port_is_reported_and_retried_with_backoff(tmp_path, runner_config):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        spec = ServiceSpec(name="fixed", command=("sleep", "30"), ports=(PortSpec("http", port),),
                           restart=RestartPolicy(backoff_initial_ms=200, backoff_max_ms=200))
        session = fake_session(tmp_path, {"fixed": spec}, {"fixed": [A]})
        runner = WorkloadRunner(session, runner_config)
        async with trio.open_nursery() as nursery:
            await nursery.start(runner.run)
            row = (await wait_for(lambda: [r for r in runner.services() if r["health"] == "failed"], "failed"))[0]
            assert f"port {port}" in row["replicas"][0]["message"] and "already in use" in row["replicas"][0]["message"]
            await wait_for(lambda: runner.starts.failures["fixed"].attempts >= 2, "a retry")
            assert runner.starts.failures["fixed"].attempts <= 3  # 0.2 s apart, not every 0.02 s poll
            holder.close()
            await wait_for(lambda: runner.services()[0]["running"] == 1, "the start once the port is free")
            nursery.cancel_scope.cancel()


async def test_logs_of_this_nodes_replica_and_a_clear_error_elsewhere(tmp_path, runner_config):
    from mycelium.api.errors import api_error
    from mycelium.runtime.runner import NoSuchReplica, ReplicaElsewhere

    spec = ServiceSpec(name="talk", command=("sh", "-c", "echo one; echo two; sleep 30"))
    session = fake_session(tmp_path, {"talk": spec, "web": WEB}, {"talk": [A], "web": [B]})
    runner = WorkloadRunner(session, runner_config)
    async with trio.open_nursery() as nursery:
        await nursery.start(runner.run)
        assert await wait_for(lambda: runner.services()[0]["running"] == 1, "talk running")
        lines = []
        with trio.fail_after(5):
            while lines != ["two"]:
                lines = await runner.logs("talk", 1)
                await trio.sleep(0.02)
        for name, error in (("web", ReplicaElsewhere), ("../../etc", NoSuchReplica)):
            with pytest.raises(error) as err:
                await runner.logs(name, 10)
            assert api_error(err.value).status == 404  # the API maps the runtime's errors by type
        nursery.cancel_scope.cancel()
