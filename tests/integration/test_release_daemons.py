"""Issue 20 with real daemons: the network upgrades itself.

Wheels of this checkout are built in the test with the version bumped (once per session,
tests/integration/release_wheels.py); every node runs from its own install.sh-style prefix
(ROOT/venv, then ROOT/venvs/VERSION and the `current` link), a venv that reuses the test's
dependencies so installing one takes seconds.

  default  a broken release (its health check never passes) is published: the canary switches,
           fails its check, goes back to the previous version by itself, the release is marked
           failed network-wide and nobody else moves; bad publishes are refused and install nothing.
  default  four nodes (all validators) on the first wheel, a service deployed, the second wheel
           published: one validator is the canary, then the others one at a time; all four end on
           it, the heights never stall longer than a restart, the service keeps its replica (the
           rollout starts as soon as the replica is placed; it runs by the end).
  slow     the same with five nodes (four validators, one hypha): the hypha is the canary.
The rollout's time is restarts and consensus, not the agent: every node installs the release while
the canary proves it, the agent acts on each new Primary (not on a poll), a failed fetch is retried
after a second, a validator's reports go to every validator (not only its own turn to propose).
The test prints each node's release steps (pytest -s) and shows them on failure. Its waits fail
only when the chain stops moving (wait_moving), not on a quiet box's budget.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from mycelium.api import protocol
from mycelium.testing.deadlines import stretched
from tests.integration.daemons import TEST_ENV, Daemon, wait_moving, wait_until
from tests.integration.release_wheels import build_wheel, copy_install, make_install

pytestmark = pytest.mark.integration

EXAMPLE = str(Path(__file__).resolve().parents[2] / "examples" / "static-web.yaml")
FAST = {"MYCELIUM__NODE__HEARTBEAT_S": "1", "MYCELIUM__NODE__DEAD_AFTER_S": "60"}
BROKEN_HEALTH = ("return member and height >= started_at + HEALTHY_HEIGHTS", "return False  # deliberately broken")


@pytest.fixture(scope="session")
def wheels(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheels")
    base = build_wheel(out, "0.1.0")
    good = build_wheel(out, "0.1.1")
    broken_dir = out / "broken"
    broken_dir.mkdir()
    broken = build_wheel(broken_dir, "0.1.1", {"mycelium/release/health.py": BROKEN_HEALTH})
    install = out / "install"
    make_install(install, base)
    return {"base": base, "good": good, "broken": broken, "install": install}


def _free_port() -> int:
    """A free port below Linux's ephemeral range (32768+): a port the kernel hands out for tcp/0 —
    to other tests' daemons on this box — would be taken again between two of our restarts."""
    import random
    import socket

    for _ in range(200):
        port = random.randrange(20000, 32000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError("no free port in 20000..32000")


class VenvDaemon(Daemon):
    """A daemon run from its own prefix ROOT (its `current` venv once it switched)."""

    def __init__(self, state_dir: Path, root: Path, env: dict) -> None:
        super().__init__(state_dir)
        self.root, self.env = root, env
        self.port = _free_port()  # fixed, like a real node's: a restart keeps its address

    def up(self, *args: str, env: dict | None = None):
        return self.cli("up", "--detach", "--listen", f"/ip4/127.0.0.1/tcp/{self.port}", *args, env=env)

    def python(self) -> Path:
        current = self.root / "current"
        return (current if current.exists() else self.root / "venv") / "bin" / "python"

    def cli(self, *args: str, timeout: float = 60, env: dict | None = None, input: str | None = None):
        full_env = {**os.environ, **TEST_ENV, **self.env, **(env or {})}
        full_env.pop("MYCELIUM_STATE_DIR", None)
        if not (env and "MYCELIUM_JOIN_TOKEN" in env):
            full_env.pop("MYCELIUM_JOIN_TOKEN", None)
        return subprocess.run([str(self.python()), "-P", "-m", "mycelium", "--state-dir", str(self.state_dir), *args],
                              capture_output=True, text=True, timeout=timeout, env=full_env, input=input,
                              cwd=self.root)  # not the checkout: its `mycelium` would shadow the venv's

    def release(self) -> dict | None:
        """What `mycelium release status --json` prints, read in-process (None: the daemon does not
        answer, e.g. while it restarts for a switch). The CLI is exercised by the tests' other calls."""
        return self._poll(protocol.RELEASE_STATUS)

    def epoch(self) -> int | None:
        st = self._poll(protocol.STATUS)
        return st["epoch"] if st else None

    def _poll(self, path: str) -> dict | None:
        from mycelium.api.client import ClientError, ControlClient

        try:  # no waiting out a (re)starting session: a poll takes what is there now
            return ControlClient(self.state_dir / "control.sock", timeout_s=stretched(10), starting_wait_s=0).get(path)
        except ClientError:
            return None

    def node_version(self) -> str | None:
        res = self.cli("version", "--json", timeout=20)
        return json.loads(res.stdout)["node_version"] if res.returncode == 0 else None


def _network(daemons, wheels, n: int, env: dict, caps: dict[int, str]) -> list[VenvDaemon]:
    nodes = []
    for i in range(n):
        root = daemons.root / f"prefix{i}"
        copy_install(wheels["install"], root)
        d = VenvDaemon(daemons.root / f"n{i}", root, env)
        daemons.daemons.append(d)
        nodes.append(d)
    res = nodes[0].up()
    assert res.returncode == 0, res.stderr + nodes[0].log()
    assert nodes[0].cli("network", "create", "upgrade").returncode == 0
    wait_until(lambda: nodes[0].status()["epoch"] >= 1, timeout=60, what="first height")
    token = json.loads(nodes[0].cli("invite", "--uses", str(n - 1), "--json").stdout)["token"]
    with ThreadPoolExecutor(n - 1) as pool:  # the joiners start side by side (each `up` waits for ready)
        started = list(pool.map(lambda i: nodes[i].up("--join", token, *(("--max-role", caps[i]) if i in caps else ())),
                                range(1, n)))
    for d, res in zip(nodes[1:], started):
        assert res.returncode == 0, res.stderr + d.log()
    return nodes


def _reports(node: VenvDaemon, version: str, count: int):
    st = node.release()
    nodes = (st or {}).get("rollout", {}) or {}
    rows = nodes.get("nodes", {})
    return st if sum(1 for r in rows.values() if r["version"] == version) == count else None


def _logs(nodes: list[VenvDaemon]) -> str:
    return "\n".join(f"--- {d.state_dir.name}\n" + "\n".join(d.log().splitlines()[-25:]) for d in nodes)


TIMELINE = ("node ready", "release installed", "release switch: restarting on the new version", "release trial",
            "release healthy", "release failed its trial: rolling back", "caught up", "shutting down")


def _timeline(nodes: list[VenvDaemon], since: float) -> str:
    """The release steps of every node from its log, in time order, in seconds after `since` (a
    time.time()): where a rollout's time goes, printed by the test (pytest -s) and on failure."""
    from datetime import datetime

    rows = []
    for d in nodes:
        fresh = False  # the first height a (re)started daemon decides through consensus is shown too
        for line in d.log().splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if not (isinstance(rec, dict) and "timestamp" in rec):
                continue
            event = rec.get("event")
            if event == "decided" and fresh:
                event, fresh = "first height decided", False
            elif event not in TIMELINE:
                continue
            fresh = fresh or event == "node ready"
            t = datetime.fromisoformat(rec["timestamp"].replace("Z", "+00:00")).timestamp() - since
            if t >= 0:
                rows.append((t, d.state_dir.name, event, rec.get("version") or rec.get("height") or ""))
    return "\n".join(f"{t:7.1f} s  {name:4} {event} {version}" for t, name, event, version in sorted(rows))


def _by_id(nodes: list[VenvDaemon]) -> dict[str, VenvDaemon]:
    return {d.status()["node_id"]: d for d in nodes}


def test_a_broken_release_rolls_the_canary_back_and_stops_the_rollout(daemons, wheels, tmp_path):
    env = {**FAST, "MYCELIUM__RELEASE__HEALTH_TIMEOUT_S": "10"}
    t0 = time.monotonic()
    nodes = _network(daemons, wheels, 3, env, {2: "hypha"})
    wait_until(lambda: _reports(nodes[0], "0.1.0", 3), timeout=120, interval=0.5, what="every node to report version 0.1.0")

    print(f"network and reports: {time.monotonic() - t0:.0f} s")
    # bad input first: refused with a reason, nothing stored or installed anywhere
    non_admin = nodes[1].cli("release", "publish", str(wheels["broken"]))
    assert non_admin.returncode != 0 and "not an admin" in non_admin.stderr, non_admin.stderr
    downgrade = nodes[0].cli("release", "publish", str(wheels["base"]))
    assert downgrade.returncode != 0 and "not above 0.1.0" in downgrade.stderr, downgrade.stderr
    corrupt = tmp_path / "mycelium-0.1.1-py3-none-any.whl"
    corrupt.write_bytes(wheels["broken"].read_bytes()[:5000])
    bad = nodes[0].cli("release", "publish", str(corrupt))
    assert bad.returncode == 2 and "not a readable wheel" in bad.stderr, bad.stderr
    missing = nodes[0].cli("release", "publish", str(tmp_path / "nope.whl"))
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    assert nodes[0].release()["published"] == {}
    assert not any((d.root / "venvs").exists() for d in nodes)

    print(f"bad input: {time.monotonic() - t0:.0f} s")
    res = nodes[0].cli("release", "publish", str(wheels["broken"]), "--notes", "health check broken on purpose")
    assert res.returncode == 0, res.stderr
    ids = _by_id(nodes)

    def failed():
        st = nodes[0].release()
        return st if st and st["rollout"] and st["rollout"]["failed"] else None

    try:
        st = wait_moving(lambda: failed() or nodes[0].release(), lambda s: bool(s and s["rollout"]["failed"]),
                         stall_s=90, what="the canary to roll back and the release to fail")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{_logs(nodes)}") from None
    print(f"failed: {time.monotonic() - t0:.0f} s")
    rollout = st["rollout"]
    canary = rollout["canary"]
    assert canary not in nodes[0].status()["validators"], "a non-validator is the canary (the less risky node)"
    canary_node = ids[canary]
    assert f"{canary[:16]} rolled back" in rollout["failed"] and "health check did not pass within 10 s" in rollout["failed"]
    others = [n for n in rollout["nodes"] if n != canary]
    assert all(rollout["nodes"][n]["action"] == "held" and "failed" in rollout["nodes"][n]["reason"] for n in others)
    # the canary runs the previous version again, by itself; nobody else ever switched
    wait_until(lambda: canary_node.node_version() == "0.1.0", timeout=60, interval=0.5, what="the canary back on 0.1.0")
    assert os.path.realpath(canary_node.root / "current") == str(canary_node.root / "venv")
    rest = [d for d in nodes if d is not canary_node]
    assert all(d.node_version() == "0.1.0" and not (d.root / "venvs").exists() for d in rest)
    human = nodes[1].cli("release", "status")
    assert "FAILED, rollout stopped" in human.stdout and "rolled back" in human.stdout
    time.sleep(2)  # the rollout stays stopped
    assert nodes[0].release()["rollout"]["failed"] and not any((d.root / "venvs").exists() for d in rest)


def test_four_nodes_upgrade_one_at_a_time_and_keep_their_replica(daemons, wheels):
    """The issue's scenario: 4 daemons, all validators (so the canary is one of them)."""
    _rollout(daemons, wheels, 4, {})


@pytest.mark.slow
def test_five_nodes_upgrade_one_validator_at_a_time_and_keep_their_replica(daemons, wheels):
    """A hypha too: it is the canary, then the four validators take turns."""
    _rollout(daemons, wheels, 5, {4: "hypha"})


def _rollout(daemons, wheels, n: int, caps: dict[int, str]) -> None:
    env = {**FAST, "MYCELIUM__RELEASE__HEALTH_TIMEOUT_S": "120"}
    t0 = time.monotonic()
    nodes = _network(daemons, wheels, n, env, caps)
    def moving(check):  # (the condition, the height): waits while the chain moves, fails when it stops
        return lambda: (check(), nodes[0].status()["epoch"])

    wait_moving(moving(lambda: len(nodes[0].status()["validators"]) == 4), lambda v: v[0], stall_s=60,
                what="four validators (the joiners warm up first)")
    wait_moving(moving(lambda: _reports(nodes[0], "0.1.0", n) is not None), lambda v: v[0], stall_s=60,
                what="every node to report 0.1.0")
    print(f"network of {n}, four validators, every report: {time.monotonic() - t0:.0f} s")
    assert nodes[0].cli("deploy", EXAMPLE).returncode == 0

    def service():
        res = nodes[0].cli("services", "--json")
        rows = {r["name"]: r for r in json.loads(res.stdout)["services"]} if res.returncode == 0 else {}
        return rows.get("static-web")

    # the replica's node is decided with the deploy: the rollout starts now, the replica runs meanwhile
    placed = set(wait_moving(moving(lambda: (service() or {}).get("placement")), lambda v: v[0], stall_s=60,
                             what="the service to be placed")[0])
    print(f"service placed on {sorted(p[-8:] for p in placed)}: {time.monotonic() - t0:.0f} s")
    validators = set(nodes[0].status()["validators"])
    published_at = time.time()
    res = nodes[0].cli("release", "publish", str(wheels["good"]), "--notes", "the second wheel")
    assert res.returncode == 0, res.stderr

    heights: list[tuple[float, int]] = []
    concurrent = []
    seats: list[set] = []  # the validator sets seen while rolling out (the plan's, from the same node)

    def observe():
        best, answered = 0, None
        for d in nodes:
            st = d.release()
            if st is None or st["rollout"] is None:
                continue
            if answered is None:
                live = d._poll(protocol.STATUS)
                if live is None:
                    continue
                answered, now_validators = st, set(live["validators"])
            best = max(best, d.epoch() or 0)
        if best:
            heights.append((time.monotonic(), best))
        if answered is None:
            return None
        if now_validators not in seats:
            seats.append(now_validators)
        rows = answered["rollout"]["nodes"]
        down = [n for n, r in rows.items() if r["state"] == "switching" and n in now_validators]
        if len(down) > 1:
            concurrent.append(down)
        return tuple(sorted((n, r["version"], r["state"], r["action"], r["reason"]) for n, r in rows.items()))

    try:
        wait_moving(observe, lambda rows: rows and all(r[1] == "0.1.1" for r in rows), stall_s=120,
                    what="every node to switch to 0.1.1")
    except AssertionError as exc:
        here = [(d.state_dir.name, (d.release() or {}).get("node")) for d in nodes]
        raise AssertionError(f"{exc}\nheights {heights[-12:]}\n{here}\n{_timeline(nodes, published_at)}\n"
                             f"{_logs(nodes)}") from None
    print(f"rolled out: {time.monotonic() - t0:.0f} s\n{_timeline(nodes, published_at)}")
    assert seats == [validators], (f"the validator set changed during the rollout ({seats}): not what this test "
                                   f"checks (a seat lost to liveness or slashing — see the logs)\n{_logs(nodes)}")
    assert not concurrent, f"two validators switched at once: {concurrent}"
    assert all(d.node_version() == "0.1.1" for d in nodes)
    assert all(os.path.realpath(d.root / "current") == str(d.root / "venvs" / "0.1.1") for d in nodes)
    longest = 0.0
    run = 0.0
    for (t0, h0), (t1, h1) in zip(heights, heights[1:]):
        run = run + (t1 - t0) if h1 == h0 else 0.0
        longest = max(longest, run)
    print(f"longest stall of the heights: {longest:.1f} s over {heights[-1][0] - heights[0][0]:.0f} s")
    assert longest < 90, f"the heights stalled {longest:.0f} s (longer than one validator restart)"
    after = wait_until(lambda: (row := service()) and row.get("running") == 1 and row, timeout=180, interval=0.5,
                       what="the service to run after the rollout")
    assert set(after["placement"]) == placed, "a restart that keeps identity and state keeps the placement"
