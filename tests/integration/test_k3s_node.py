"""A real daemon with `[k3s] enabled`: without a k3s binary it stays on the process runtime and
says why; with the stand-in k3s (inside a network namespace the test creates, because the node
brings up a real WireGuard interface) it runs `k3s server`, reports runtime k3s with the cluster's
state, writes the manager's manifest into the auto-deploy directory, and leaves nothing behind."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time

import pytest

from tests.integration.daemons import CLI, TEST_ENV, wait_until
from tests.k3s_helpers import records, standin_binary, standin_env
from tests.testnet.netns import Netns, netns_unavailable_reason

pytestmark = pytest.mark.integration


def standin_node(tmp_path, iface: str, **standin: str):
    """(namespace, state dir, env) for one daemon with `[k3s]` on the stand-in k3s; skips without
    network namespaces or wireguard-go (the node brings up a real WireGuard interface)."""
    reason = netns_unavailable_reason() or (None if shutil.which("wireguard-go") else "wireguard-go missing")
    if reason:
        pytest.skip(f"needs a network namespace and wireguard-go: {reason}")
    env = {**standin_env(tmp_path / "record.jsonl", **standin), **TEST_ENV, "MYCELIUM__K3S__ENABLED": "true",
           "MYCELIUM__K3S__BINARY": str(standin_binary(tmp_path)), "MYCELIUM__K3S__OVERLAY_INTERFACE": iface}
    env.pop("MYCELIUM_STATE_DIR", None)
    return Netns(1).create(), tmp_path / "state", env


def node_cli(net, state, env, *args, inside=False):
    prefix = net.exec_prefix(0) if inside else []
    return subprocess.run([*prefix, *CLI, "--state-dir", str(state), *args], capture_output=True, text=True,
                          timeout=120, env=env)


def test_enabled_without_binary_stays_on_process_with_the_reason(daemons):
    node = daemons.new()
    env = {"MYCELIUM__K3S__ENABLED": "true", "MYCELIUM__K3S__BINARY": "/nonexistent/k3s"}
    res = node.up(env=env)
    assert res.returncode == 0, res.stderr
    st = wait_until(lambda: (s := node.status()) and s["k3s"] and s["k3s"]["state"] == "missing" and s,
                    timeout=60, what="k3s state missing")
    assert st["runtime"] == "process" and "no k3s binary at '/nonexistent/k3s'" in st["runtime_reason"]
    assert st["k3s"]["mode"] == "server" and st["k3s"]["cluster"]["datastore"] == "sqlite"
    text = node.cli("status").stdout
    assert "k3s server missing" in text and "--k3s-binary" in text
    assert node.cli("down").returncode == 0


@pytest.mark.netns
def test_with_the_standin_k3s_the_node_reports_runtime_k3s(tmp_path):
    iface = f"myc-t{os.getpid() % 10**6}"
    net, state, env = standin_node(tmp_path, iface)
    record = tmp_path / "record.jsonl"

    def cli(*args, inside=False):
        return node_cli(net, state, env, *args, inside=inside)

    try:
        res = cli("up", "--detach", "--listen", "/ip4/127.0.0.1/tcp/0", inside=True)
        assert res.returncode == 0, res.stderr

        def status():
            out = cli("status", "--json")
            return json.loads(out.stdout) if out.returncode == 0 else None

        st = wait_until(lambda: (s := status()) and s["runtime"] == "k3s" and s, timeout=120, what="runtime k3s")
        assert st["k3s"]["mode"] == "server" and st["k3s"]["state"] == "ready" and st["k3s"]["pid"]
        assert st["runtime_reason"] == "k3s server ready"
        [start] = records(record)
        assert start["argv"] == ["server", "--config", str(state / "k3s/config.yaml")]
        manifest = state / "k3s/data/server/manifests/mycelium-manager.yaml"
        wait_until(manifest.exists, timeout=30, what="the manager manifest in the auto-deploy directory")
        assert str(state / "control.sock") in manifest.read_text()
        links = subprocess.run(["ip", "-n", net.ns(0), "-j", "addr", "show", "dev", iface],
                               capture_output=True, text=True, check=True).stdout
        assert '"local":"10.99.' in links.replace(" ", "")  # the overlay address K3s got as node-ip
        assert cli("down").returncode == 0
        wait_until(lambda: subprocess.run(["ip", "netns", "pids", net.ns(0)], capture_output=True,
                                          text=True).stdout.strip() == "", timeout=30,
                   what="every process in the namespace (daemon, k3s, wireguard-go) to exit")
    finally:
        net.cleanup()
    assert net.leftovers() == []


@pytest.mark.netns
def test_two_daemons_find_each_other_on_the_overlay_and_a_leaver_is_removed(tmp_path):
    """Keys published in Latent spores become WireGuard peers on both sides (server + agent), the
    overlay carries traffic, and a member that leaves loses its peer entry."""
    reason = netns_unavailable_reason() or (None if shutil.which("wireguard-go") else "wireguard-go missing")
    if reason:
        pytest.skip(f"needs network namespaces and wireguard-go: {reason}")
    net = Netns(2).create()
    binary = standin_binary(tmp_path)

    def env_for(i):
        env = {**standin_env(tmp_path / f"record{i}.jsonl"), **TEST_ENV, "MYCELIUM__K3S__ENABLED": "true",
               "MYCELIUM__K3S__BINARY": str(binary), "MYCELIUM__K3S__OVERLAY_INTERFACE": f"myc-t{os.getpid() % 10**6}-{i}"}
        env.pop("MYCELIUM_STATE_DIR", None)
        return env

    def cli(i, *args, inside=False):
        prefix = net.exec_prefix(i) if inside else []
        return subprocess.run([*prefix, *CLI, "--state-dir", str(tmp_path / f"s{i}"), *args], capture_output=True,
                              text=True, timeout=120, env=env_for(i))

    def status(i):
        out = cli(i, "status", "--json")
        return json.loads(out.stdout) if out.returncode == 0 else None

    def wg_peers(i):
        out = subprocess.run(["ip", "netns", "exec", net.ns(i), "wg", "show", f"myc-t{os.getpid() % 10**6}-{i}", "peers"],
                             capture_output=True, text=True)
        return set(out.stdout.split()) if out.returncode == 0 else set()

    def ping(i, address):
        return subprocess.run([*net.exec_prefix(i), "ping", "-n", "-q", "-c", "1", "-W", "2", address],
                              capture_output=True, timeout=30).returncode == 0

    try:
        assert cli(0, "up", "--detach", "--listen", f"/ip4/{net.address(0)}/tcp/0", inside=True).returncode == 0
        wait_until(lambda: (s := status(0)) and s["epoch"] >= 1, timeout=60, what="the founder's first height")
        token = json.loads(cli(0, "invite", "--json").stdout)["token"]
        res = cli(1, "up", "--detach", "--listen", f"/ip4/{net.address(1)}/tcp/0", "--join", token, inside=True)
        assert res.returncode == 0, res.stderr
        wait_until(lambda: (s := status(1)) and s["admitted"], timeout=120, what="the joiner admitted")
        from mycelium.overlay.keys import OverlayKey

        keys = [OverlayKey.load_or_create(tmp_path / f"s{i}").public_b64 for i in range(2)]
        wait_until(lambda: keys[1] in wg_peers(0) and keys[0] in wg_peers(1), timeout=60,
                   what="each node's WireGuard key configured as a peer on the other")
        s0, s1 = status(0), status(1)
        assert s0["k3s"]["mode"] == "server" and s1["k3s"]["mode"] == "agent", (s0["k3s"], s1["k3s"])
        from mycelium.overlay.addressing import assign_addresses

        plan = assign_addresses([(s0["node_id"], 0), (s1["node_id"], 1)])
        overlay1 = plan.get(s1["node_id"]).address
        wait_until(lambda: ping(0, overlay1), timeout=30, what="node 0 pinging node 1's overlay address")
        assert records(tmp_path / "record1.jsonl")[0]["argv"][0] == "agent"
        agent_cfg = (tmp_path / "s1" / "k3s" / "config.yaml").read_text()
        assert f'server: "https://{plan.get(s0["node_id"]).address}:6443"' in agent_cfg

        assert cli(1, "leave", "--yes").returncode == 0
        wait_until(lambda: keys[1] not in wg_peers(0), timeout=90, what="the leaver's peer removed on node 0")
    finally:
        for i in range(2):
            cli(i, "down")
        net.cleanup()
    assert net.leftovers() == []


@pytest.mark.netns
def test_a_process_replica_is_handed_over_to_k3s_and_taken_back_on_fallback(tmp_path):
    """One node with the stand-in k3s serving the fake API server, whose Deployments get Pods that the
    stand-in kubelet runs as local processes; the manager runs as the cluster would run it (its
    module, against the node's control socket and K3s's kubeconfig). A service deployed before the
    manager runs starts as a process replica; once the manager's Deployment has a ready pod on this
    node the process replica is stopped (not before) and `services`, `resolve` and `logs` read the
    pod; when K3s stops being ready the process runner takes the replica back, and hands it over
    again when K3s is back.

    The stand-in kubelet runs containers on the host with a free port, so the pod endpoint that
    `resolve` returns (podIP:containerPort, as the API reports it) is where a real pod listens, not
    where the stand-in's process does: the test reads it, it does not connect to it."""
    from mycelium.api import protocol
    from tests.integration.daemons import Daemon

    kubelet_dir = tmp_path / "kubelet"
    control = tmp_path / "k3s-ready"
    net, state, env = standin_node(tmp_path, f"myc-h{os.getpid() % 10**6}", MYCELIUM_STANDIN_API="1",
                                   MYCELIUM_STANDIN_KUBELET=str(kubelet_dir), MYCELIUM_STANDIN_CONTROL=str(control))
    word = f"myc{os.getpid()}x{int(time.time()) % 10**6}"
    node = Daemon(state)
    manifest = tmp_path / "ticker.yaml"
    manifest.write_text(textwrap.dedent(f"""\
        apiVersion: mycelium/v1
        kind: Endomycete
        name: ticker
        spec:
          command: [python3, -u, -c, "import os, time\\nprint('{word} from ' + os.getcwd())\\nwhile True: time.sleep(1)"]
          resources: {{cpu: 20m, memory: 32Mi}}
          ports: [{{name: http, port: 0}}]
        """))

    def cli(*args, inside=False):
        return node_cli(net, state, env, *args, inside=inside)

    def replica():
        rows = {r["name"]: r for r in node.api(protocol.SERVICES)["services"]}
        return rows["ticker"]["replicas"][0] if "ticker" in rows and rows["ticker"]["replicas"] else None

    def on_k3s(r):
        return r is not None and r["health"] == "running" and r["message"].startswith("on K3s: pod myc-ticker/")

    def on_process(r):
        return r is not None and r["health"] == "running" and not r["message"].startswith("on K3s")

    def logs():
        return "\n".join(node.api(f"{protocol.LOGS}?name=ticker&lines=20")["lines"])

    manager = None
    try:
        res = cli("up", "--detach", "--listen", "/ip4/127.0.0.1/tcp/0", inside=True)
        assert res.returncode == 0, res.stderr
        wait_until(lambda: node.status()["runtime"] == "k3s", timeout=120, what="runtime k3s")
        res = cli("deploy", str(manifest), "--wait", "--timeout", "60")
        assert res.returncode == 0, res.stdout + res.stderr
        # no manager yet, so no pod: the process runner runs it, on this node's workloads directory
        r = wait_until(lambda: on_process(x := replica()) and x, timeout=60, what="the process replica running")
        # the manager's manifest is written a sync after K3s is ready; from then on the runner waits for a pod
        wait_until(lambda: node.status()["k3s"]["replicas"] == {"k3s": 0, "process": 1, "handing_over": 1},
                   timeout=30, what="the process replica waiting to be handed over")
        wait_until(lambda: f"{word} from {state / 'workloads'}" in logs(), timeout=30, what="its output")

        manager = subprocess.Popen([*net.exec_prefix(0), sys.executable, "-m", "mycelium.runtime.k3s.manager",
                                    "--socket", str(state / "control.sock"),
                                    "--kubeconfig", str(state / "k3s/kubeconfig.yaml"), "--interval", "0.5"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        r = wait_until(lambda: on_k3s(x := replica()) and x, timeout=90, what="the replica handed over to the pod")
        assert r["endpoints"] == ["127.0.0.1:8080"]  # podIP:containerPort as the API reports them
        assert node.api(f"{protocol.RESOLVE}?name=ticker")["endpoints"] == ["127.0.0.1:8080"]
        assert node.status()["k3s"]["replicas"] == {"k3s": 1, "process": 0, "handing_over": 0}
        assert "replicas here: 1 on K3s, 0 on process" in cli("status").stdout
        wait_until(lambda: f"{word} from {kubelet_dir}" in logs(), timeout=30, what="the pod's output")
        stop_line = next((line for line in node.log().splitlines() if "stopped replica" in line and "ticker" in line), "")
        assert "handed over to K3s" in stop_line, stop_line

        control.write_text("never\n")  # K3s stops being ready: fall back
        wait_until(lambda: node.status()["runtime"] == "process", timeout=60, what="runtime process")
        wait_until(lambda: on_process(replica()), timeout=60, what="the process runner taking the replica back")
        wait_until(lambda: f"{word} from {state / 'workloads'}" in logs(), timeout=30,
                   what="logs from the process replica again")

        control.write_text("ready\n")  # K3s is back, its pod kept running: handed over again
        wait_until(lambda: on_k3s(replica()), timeout=60, what="the replica handed over again")
        manager.terminate()
        manager.wait(30)
        assert cli("down").returncode == 0
        wait_until(lambda: subprocess.run(["ip", "netns", "pids", net.ns(0)], capture_output=True,
                                          text=True).stdout.strip() == "", timeout=30,
                   what="the daemon, k3s and the pods to exit")
    finally:
        if manager is not None and manager.poll() is None:
            manager.kill()
            manager.wait(30)
        cli("down")
        net.cleanup()
    assert net.leftovers() == []
