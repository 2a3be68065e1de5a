"""Issue 21 with real daemons: one 3-node network (a founder serving the page, two joiners) shared
by every check — the page's data needs the token, /metrics carries every node's gauges and every
metric the shipped Grafana dashboard names, `mycelium top` under tmux shows the members and
refreshes, and the page in a real headless chromium shows three nodes with their roles and
updates when a node is killed (screenshots are written as artifacts)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest

from tests.integration.daemons import DaemonFactory, wait_until

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
FAST = {"MYCELIUM__NODE__HEARTBEAT_S": "1", "MYCELIUM__NODE__DEAD_AFTER_S": "6"}
HELLO = """\
apiVersion: mycelium/v1
kind: Endomycete
name: hello
spec:
  command: [python3, -u, -c, "import time; print('hello {marker}', flush=True); time.sleep(3600)"]
  replicas: all
  resources: {{cpu: 10m, memory: 16Mi}}
"""


def ok(res) -> str:
    assert res.returncode == 0, f"exit {res.returncode}: {res.stdout}\n{res.stderr}"
    return res.stdout


@pytest.fixture(scope="module")
def net():
    factory = DaemonFactory()
    marker = f"myc{uuid.uuid4().hex[:10]}"  # in every replica's command line: none survives the module
    try:
        first = factory.new("founder")
        out = ok(first.cli("up", "--detach", "--listen", "/ip4/127.0.0.1/tcp/0", "--ui", env=FAST))
        url = re.search(r"network page: (\S+)", out).group(1)
        ok(first.cli("network", "create", "fungi", env=FAST))
        wait_until(lambda: first.status()["epoch"] >= 1, timeout=30, what="the founder's first height")
        token = json.loads(ok(first.cli("invite", "--uses", "2", "--ttl", "10m", "--json")))["token"]
        others = [factory.new(f"j{i}") for i in range(2)]
        with ThreadPoolExecutor(2) as pool:  # both start at once: daemon start-up is most of the fixture
            up = [pool.submit(others[0].cli, "up", "--detach", "--listen", "/ip4/127.0.0.1/tcp/0", "--join", token,
                              env=FAST),
                  pool.submit(others[1].cli, "up", "--detach", "--listen", "/ip4/127.0.0.1/tcp/0", env=FAST)]
            for f in up:
                ok(f.result())
        # the second joins from a running node, with progress lines until admitted
        joined = others[1].cli("join", token, "--wait", "--timeout", "120", timeout=150)
        nodes = [first, *others]

        def formed():
            return first.status()["members"] == 3 and all(d.status()["role"] == "rhizomorph" for d in others)
        wait_until(formed, timeout=90, interval=0.5, what="a 3-node network (two rhizomorphs)")
        manifest = factory.root / "hello.yaml"
        manifest.write_text(HELLO.format(marker=marker))
        deployed = first.cli("deploy", str(manifest), "--wait", "--timeout", "90")
        ok(deployed)
        base = url.split("#")[0].rstrip("/")
        yield {"nodes": nodes, "url": url, "base": base, "token": url.split("#token=")[1], "marker": marker,
               "joined": joined, "deployed": deployed}
    finally:
        factory.cleanup()
        for proc in psutil.process_iter(["cmdline"]):  # replicas of the killed node outlive it
            if any(marker in part for part in proc.info["cmdline"] or []):
                try:
                    proc.kill()
                except psutil.NoSuchProcess:
                    pass


def get(url: str, token: str | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def test_page_data_needs_the_token(net):
    founder = net["nodes"][0].status()
    assert net["url"].startswith("http://127.0.0.1:") and "#token=" in net["url"]
    for path, token in [("/api/snapshot", None), ("/api/snapshot", "wrong"), ("/metrics", None),
                        (f"/api/snapshot?token={net['token'][:-1]}", None)]:
        status, body = get(net["base"] + path, token)
        assert status == 401, (path, token)
        text = body.decode()
        assert founder["node_id"] not in text and "fungi" not in text and "mycelium_" not in text
    status, body = get(net["base"] + "/api/snapshot", net["token"])
    snap = json.loads(body)
    assert status == 200 and snap["node"]["network_name"] == "fungi" and len(snap["members"]) == 3
    assert get(net["base"] + "/", None)[0] == 200  # the page itself holds no data
    # the page listens on the loopback only
    port = int(net["base"].rsplit(":", 1)[1])
    bound = {c.laddr.ip for c in psutil.net_connections("tcp") if c.status == psutil.CONN_LISTEN and c.laddr.port == port}
    assert bound == {"127.0.0.1"}, bound
    # `mycelium ui` finds the page already served (same URL, same token); another interface is refused
    again = json.loads(ok(net["nodes"][0].cli("ui", "--json")))
    assert again["url"] == net["url"] and again["loopback_only"] is True
    res = net["nodes"][0].cli("ui", "--listen", "0.0.0.0:0")
    assert res.returncode == 2 and "already served" in res.stderr, res.stderr


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (Debian: apt-get install tmux)")
def test_top_under_tmux_shows_the_members_and_refreshes(net):
    founder = net["nodes"][0]
    shorts = [d.status()["node_id"][-8:] for d in net["nodes"]]
    sock = f"myc-top-{uuid.uuid4().hex[:8]}"
    cmd = (f"{sys.executable} -m mycelium --state-dir {founder.state_dir} top --interval 0.5")
    env = {**os.environ, "TERM": "xterm-256color"}
    subprocess.run(["tmux", "-L", sock, "new-session", "-d", "-x", "200", "-y", "50", cmd], check=True, env=env)
    try:
        def screen() -> str:
            return subprocess.run(["tmux", "-L", sock, "capture-pane", "-p"], capture_output=True, text=True).stdout

        def refreshes() -> int | None:
            text = screen()
            m = re.search(r"refresh (\d+) at", text)
            return int(m.group(1)) if m and all(s in text for s in shorts) else None
        first = wait_until(refreshes, timeout=60, interval=0.3, what="top to show the three members")
        text = screen()
        assert "fungi" in text and "sclerotium" in text and text.count("rhizomorph") >= 2, text
        wait_until(lambda: (refreshes() or 0) > first, timeout=30, interval=0.3, what="top to refresh")
    finally:
        subprocess.run(["tmux", "-L", sock, "kill-server"], capture_output=True)


def test_join_and_deploy_show_progress(net):
    joined, deployed = net["joined"], net["deployed"]
    assert joined.returncode == 0 and "admitted as rhizomorph" in joined.stdout, joined.stderr
    assert re.search(r"waiting for (the chain|a validator)|connecting to the network", joined.stderr), joined.stderr
    assert "hello: 3/3 replicas up" in deployed.stderr and "hello: 3/3 replicas running" in deployed.stdout, deployed.stderr


def test_logs_of_a_replica_on_another_node(net):
    founder, joiner = net["nodes"][0], net["nodes"][1]
    joiner_id = joiner.status()["node_id"]

    def remote_lines():
        res = founder.cli("logs", "hello", "--node", joiner_id[-8:], "-n", "20")
        return res.stdout if res.returncode == 0 and f"hello {net['marker']}" in res.stdout else None
    wait_until(remote_lines, timeout=60, interval=0.5, what="the joiner's replica output through the founder")
    res = founder.cli("logs", "hello", "--node", "zzzzzzzz")
    assert res.returncode == 2 and "matches no member" in res.stderr, res.stderr
    page = json.loads(get(net["base"] + "/api/snapshot", net["token"])[1])
    hello = next(r for r in page["services"] if r["name"] == "hello")
    assert hello["desired"] == 3 and len(hello["placement"]) == 3


def metric_samples(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            out.setdefault(line.split()[2], [])
        elif line and not line.startswith("#"):
            name = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line).group(0)
            out.setdefault(name, []).append(line)
    return out


def test_metrics_carry_every_node_and_every_dashboard_metric(net):
    ids = [d.status()["node_id"] for d in net["nodes"]]

    def all_nodes_reported():
        status, body = get(net["base"] + "/metrics", net["token"])
        samples = metric_samples(body.decode())
        seen = {re.search(r'node="([^"]+)"', s).group(1) for s in samples.get("mycelium_network_epoch", [])}
        # a joiner's ping time to the founder: measured after its first report, in a later one
        link = any(f'node="{ids[1]}",peer="{ids[0]}"' in s for s in samples.get("mycelium_network_link_latency_seconds", []))
        return samples if status == 200 and seen == set(ids) and link else None
    # members publish their gauges in the Latent spore once admitted, then every 15 s when they change
    samples = wait_until(all_nodes_reported, timeout=90, interval=1, what="every node's gauges in /metrics")
    dash = json.loads((REPO / "examples/monitoring/grafana-dashboard.json").read_text())
    assert dash["panels"] and all(p["targets"] for p in dash["panels"])
    named = {m for p in dash["panels"] for t in p["targets"] for m in re.findall(r"\bmycelium_[a-z_]+", t["expr"])}
    missing = sorted(m for m in named if m not in samples)
    assert not missing, f"the dashboard names metrics /metrics does not export: {missing}"


def artifacts_dir(tmp_path: Path) -> Path:
    d = Path(os.environ.get("MYCELIUM_ARTIFACTS") or tmp_path)
    d.mkdir(parents=True, exist_ok=True)
    return d


def test_page_in_headless_chromium_shows_three_nodes_and_a_killed_one(net, tmp_path, capsys):
    from tests.integration.browser import Chromium, chromium_binary

    if chromium_binary() is None:
        pytest.skip("chromium is not installed (Debian: apt-get install chromium; scripts/apt.d/netview.txt)")
    roles = {d.status()["node_id"]: d.status()["role"] for d in net["nodes"]}
    browser = Chromium()
    try:
        browser.navigate(net["url"])
        rows_js = ("JSON.stringify([...document.querySelectorAll('#members tbody tr')].map(r => "
                   "[r.dataset.node, r.dataset.role, r.dataset.state]))")

        def shown():
            rows = json.loads(browser.evaluate(rows_js) or "[]")
            drawn = browser.evaluate("document.querySelectorAll('#map g.node').length")
            return rows if len(rows) == 3 and drawn == 3 else None
        rows = wait_until(shown, timeout=60, interval=0.3, what="the page to show three members")
        assert {n: r for n, r, _ in rows} == roles
        assert browser.evaluate("document.body.dataset.status") == "live"
        assert browser.evaluate("document.querySelectorAll('#map line.link').length") >= 2
        out = artifacts_dir(tmp_path)
        shot = browser.screenshot(out / "netview-three-nodes.png")
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
        with capsys.disabled():  # the artifact's path on the terminal, whatever pytest captures
            print(f"\nscreenshot (three nodes): {shot}")

        victim = net["nodes"][2]
        victim_id = victim.status()["node_id"]
        victim.kill()
        state_js = f"(document.querySelector('#members tr[data-node=\"{victim_id}\"]') || {{}}).dataset?.state"
        state = wait_until(lambda: (s := browser.evaluate(state_js)) in ("unreachable", "dead") and s, timeout=60,
                           interval=0.3, what="the page to show the killed node as down")
        assert browser.evaluate(f"document.querySelector('#map g[data-node=\"{victim_id}\"]').dataset.state") == state
        shot = browser.screenshot(out / "netview-node-killed.png")
        with capsys.disabled():
            print(f"screenshot (a node killed): {shot}")
    finally:
        browser.close()
