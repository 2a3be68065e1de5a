"""The K3s supervisor against a stand-in `k3s` that records its arguments and serves /readyz:
right mode and flags, ready → runtime k3s, never ready / crashing / missing → runtime process with
the reason, restarts with growing backoff, a new plan restarts K3s with the new config."""

from __future__ import annotations

import time

import pytest
import trio
import yaml

from mycelium.runtime.k3s.config import NodeFiles, NodePaths
from mycelium.runtime.k3s.plan import plan_cluster
from mycelium.runtime.k3s.supervision import K3sState, Supervision, SupervisorConfig
from mycelium.runtime.k3s.supervisor import K3sSupervisor
from mycelium.runtime.k3s.token import cluster_token, rotation_needed
from tests.k3s_helpers import NODES, free_port, primary, records, standin_binary, standin_env

FAST = SupervisorConfig(ready_timeout_s=1.5, probe_interval_s=0.05, backoff_initial_s=0.1, backoff_factor=2,
                        backoff_max_s=0.4, min_uptime_s=5, crash_loop_after=3, stop_grace_s=3)
TOKEN = cluster_token(bytes(32), "ab" * 32)
WAIT_S = 20  # generous on a loaded 2-core machine; every wait ends as soon as its condition holds


def files_for(p, node, tmp_path):
    plan = plan_cluster(p, {n: True for n in p.members})
    return plan, NodeFiles.render(plan, node, p.members[node].role, NodePaths(tmp_path / "k3s"))


async def wait_report(sup, predicate, what):
    with trio.move_on_after(WAIT_S):
        while not predicate(sup.report()):
            await trio.sleep(0.02)
        return sup.report()
    raise AssertionError(f"timed out waiting for {what}; last report {sup.report()}")


async def run_supervisor(tmp_path, node, behaviour="ready", binary=True, roles=None, **env):
    p = primary(roles or {NODES[0]: "sclerotium", NODES[1]: "rhizomorph", NODES[2]: "hypha"})
    plan, files = files_for(p, node, tmp_path)
    record = tmp_path / "record.jsonl"
    port = free_port()
    sup = K3sSupervisor(NodePaths(tmp_path / "k3s"), str(standin_binary(tmp_path)) if binary else str(tmp_path / "nope"),
                        FAST, agent_healthz=f"http://127.0.0.1:{port}/healthz",
                        env=standin_env(record, behaviour, MYCELIUM_STANDIN_AGENT_PORT=str(port), **env))
    sup.set_plan(files, TOKEN, {"datastore": plan.datastore.value, "servers": list(plan.servers)})
    return sup, record, p


async def test_server_mode_flags_and_ready(tmp_path, nursery):
    sup, record, _ = await run_supervisor(tmp_path, NODES[0])
    await nursery.start(sup.run)
    report = await wait_report(sup, lambda r: r.runtime == "k3s", "k3s ready")
    assert report.mode == "server" and report.state == "ready" and report.pid
    assert report.cluster == {"datastore": "sqlite", "servers": [NODES[0]]}
    [start] = records(record)
    assert start["argv"] == ["server", "--config", str(tmp_path / "k3s/config.yaml")]
    cfg = yaml.safe_load((tmp_path / "k3s/config.yaml").read_text())
    assert cfg["flannel-backend"] == "none" and cfg["disable-network-policy"] is True
    assert cfg["disable"] == ["traefik", "servicelb", "local-storage", "metrics-server"]
    assert (tmp_path / "k3s/token").read_text().strip() == TOKEN
    assert TOKEN not in (tmp_path / "k3s/config.yaml").read_text()


async def test_agent_mode_on_a_rhizomorph(tmp_path, nursery):
    sup, record, _ = await run_supervisor(tmp_path, NODES[1])
    await nursery.start(sup.run)
    report = await wait_report(sup, lambda r: r.runtime == "k3s", "agent ready")
    assert report.mode == "agent"
    assert records(record)[0]["argv"][0] == "agent"
    cfg = yaml.safe_load((tmp_path / "k3s/config.yaml").read_text())
    assert cfg["server"].startswith("https://10.99.") and cfg["server"].endswith(":6443")


async def test_hypha_runs_nothing(tmp_path, nursery):
    sup, record, _ = await run_supervisor(tmp_path, NODES[2])
    await nursery.start(sup.run)
    report = await wait_report(sup, lambda r: r.state == "none", "state none")
    assert report.runtime == "process" and "hyphae" in report.reason and report.pid is None
    assert records(record) == [] and not (tmp_path / "k3s/config.yaml").exists()


async def test_never_ready_falls_back_with_the_reason(tmp_path, nursery):
    sup, record, _ = await run_supervisor(tmp_path, NODES[0], "never")
    await nursery.start(sup.run)
    report = await wait_report(sup, lambda r: r.state == "not_ready", "not_ready")
    assert report.runtime == "process" and "not ready 2 s after start" in report.reason
    assert "/readyz answered 500" in report.reason and report.pid, report  # kept running, still probed


async def test_crashing_k3s_restarts_with_backoff_then_crash_loop(tmp_path, nursery):
    sup, record, _ = await run_supervisor(tmp_path, NODES[0], "crash")
    await nursery.start(sup.run)
    report = await wait_report(sup, lambda r: r.state == "crash_loop" and len(records(record)) >= 4, "crash loop")
    assert report.runtime == "process" and "crash loop" in report.reason and "code 1" in report.reason
    assert "k3s.log" in report.reason and b"crashing as asked" in (tmp_path / "k3s/k3s.log").read_bytes()
    starts = records(record)
    assert len(starts) >= 4 and report.restarts >= 3


def test_backoff_grows_to_the_cap_and_resets_after_a_long_run():
    sup = Supervision(FAST)
    delays = []
    for i in range(5):
        sup.on_start(float(i))
        delays.append(sup.on_exit(float(i) + 0.1, 1))
    assert delays == [0.1, 0.2, 0.4, 0.4, 0.4] and sup.state is K3sState.CRASH_LOOP
    sup.on_start(100.0)
    assert sup.state is K3sState.CRASH_LOOP  # still looping until a run lasts
    assert sup.on_exit(200.0, 1) == 0.1 and sup.state is K3sState.BACKOFF


async def test_missing_binary_says_what_to_install(tmp_path, nursery):
    sup, record, _ = await run_supervisor(tmp_path, NODES[0], binary=False)
    await nursery.start(sup.run)
    report = await wait_report(sup, lambda r: r.state == "missing", "missing")
    assert report.runtime == "process" and "no k3s binary" in report.reason and "--k3s-binary" in report.reason


async def test_a_new_plan_restarts_k3s_with_the_new_config(tmp_path, nursery):
    sup, record, p = await run_supervisor(tmp_path, NODES[0])
    await nursery.start(sup.run)
    await wait_report(sup, lambda r: r.runtime == "k3s", "ready")
    first_pid = sup.report().pid
    grown = primary({NODES[0]: "sclerotium", NODES[3]: "sclerotium", NODES[4]: "sclerotium"}, height=8)  # → etcd
    plan, files = files_for(grown, NODES[0], tmp_path)
    sup.set_plan(files, TOKEN, {})
    await wait_report(sup, lambda r: r.runtime == "k3s" and r.pid not in (None, first_pid), "restarted and ready")
    assert len(records(record)) == 2
    assert yaml.safe_load((tmp_path / "k3s/config.yaml").read_text())["cluster-init"] is True
    sup.set_plan(files, TOKEN, {})  # unchanged files: no restart
    await trio.sleep(0.3)
    assert len(records(record)) == 2


NEW_TOKEN = cluster_token(bytes([7]) * 32, "ab" * 32)  # after a network-secret rotation


def test_rotation_is_needed_only_on_an_initialised_server_whose_token_changed():
    assert rotation_needed(True, True, TOKEN, NEW_TOKEN) == (TOKEN, NEW_TOKEN)
    assert rotation_needed(True, True, TOKEN, TOKEN) is None
    assert rotation_needed(True, False, TOKEN, NEW_TOKEN) is None  # a fresh server: just the new file
    assert rotation_needed(False, True, TOKEN, NEW_TOKEN) is None  # agents restart with the new file
    assert rotation_needed(True, True, None, NEW_TOKEN) is None


async def test_a_new_token_is_rotated_on_the_running_server_then_used(tmp_path, nursery):
    sup, record, p = await run_supervisor(tmp_path, NODES[0])
    await nursery.start(sup.run)
    await wait_report(sup, lambda r: r.runtime == "k3s", "k3s ready")
    first_pid = sup.report().pid
    datastore = tmp_path / "k3s/data/server/token"
    assert datastore.read_text().strip() == TOKEN  # the stand-in keeps its datastore's token, as K3s does
    plan, files = files_for(p, NODES[0], tmp_path)
    sup.set_plan(files, NEW_TOKEN, {})
    assert (tmp_path / "k3s/token").read_text().strip() == TOKEN  # not before `k3s token rotate`
    await wait_report(sup, lambda r: r.runtime == "k3s" and r.pid not in (None, first_pid), "restarted with the new token")
    argvs = [r["argv"] for r in records(record)]
    assert [a[:2] for a in argvs] == [["server", "--config"], ["token", "rotate"], ["server", "--config"]]
    rotate = records(record)[1]
    assert rotate["K3S_TOKEN"] and TOKEN not in rotate["argv"]  # the old token went in the environment
    assert rotate["argv"][2:] == ["--data-dir", str(tmp_path / "k3s/data"), "--server", rotate["argv"][5],
                                  "--new-token", NEW_TOKEN]
    assert rotate["argv"][5].startswith("http://127.0.0.1:")  # the running server, from K3s's kubeconfig
    assert (tmp_path / "k3s/token").read_text().strip() == NEW_TOKEN == datastore.read_text().strip()
    assert (tmp_path / "k3s/token").stat().st_mode & 0o777 == 0o600
    assert "token_rotation" not in sup.report().cluster
    sup.set_plan(files, NEW_TOKEN, {})  # nothing more to do
    await trio.sleep(0.3)
    assert len(records(record)) == 3


async def test_a_failed_rotation_keeps_the_old_token_and_says_so(tmp_path, nursery):
    sup, record, p = await run_supervisor(tmp_path, NODES[0])
    await nursery.start(sup.run)
    await wait_report(sup, lambda r: r.runtime == "k3s", "k3s ready")
    (tmp_path / "k3s/data/server/token").write_text("someone-else\n")  # the datastore does not take our old token
    plan, files = files_for(p, NODES[0], tmp_path)
    sup.set_plan(files, NEW_TOKEN, {})
    report = await wait_report(sup, lambda r: "exited 1" in r.cluster.get("token_rotation", ""), "the rotation's failure")
    assert "old token kept" in report.cluster["token_rotation"] and report.runtime == "k3s"
    assert (tmp_path / "k3s/token").read_text().strip() == TOKEN
    assert [r["argv"][0] for r in records(record)] == ["server", "token"]  # K3s was not restarted


def test_the_standin_refuses_a_token_its_datastore_was_not_made_with(tmp_path):
    """What makes the rotation test meaningful: a server restarted with a changed token file and no
    `k3s token rotate` does not come up (K3s: 'bootstrap data already found … different token')."""
    import subprocess

    data = tmp_path / "data"
    (data / "server").mkdir(parents=True)
    (data / "server/token").write_text(TOKEN + "\n")
    (tmp_path / "token").write_text(NEW_TOKEN + "\n")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"token-file": str(tmp_path / "token"), "data-dir": str(data),
                                                          "write-kubeconfig": str(tmp_path / "kubeconfig.yaml")}))
    res = subprocess.run([str(standin_binary(tmp_path)), "server", "--config", str(tmp_path / "config.yaml")],
                         capture_output=True, text=True, timeout=60, env=standin_env(tmp_path / "rec.jsonl"))
    assert res.returncode == 1 and "different token" in res.stdout


def test_a_ready_k3s_falls_back_only_after_several_failed_probes_in_a_row():
    sup = Supervision(FAST)
    sup.on_start(0.0)
    sup.on_ready(1.0, True)
    for t in (2.0, 3.0):  # a slow answer or two on a loaded machine: still ready
        sup.on_ready(t, False, "timed out")
        assert sup.usable
    sup.on_ready(4.0, True)
    for t in range(5, 5 + FAST.unready_after):
        assert sup.usable
        sup.on_ready(float(t), False, "/readyz answered 500")
    assert sup.state is K3sState.NOT_READY and not sup.usable
    assert f"{FAST.unready_after} failed probes in a row" in sup.message and "500" in sup.message
    sup.on_ready(9.0, True)
    assert sup.usable and sup.failed_probes == 0
