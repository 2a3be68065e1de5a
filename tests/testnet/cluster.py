"""A testnet of N real daemons (subprocesses driven through the CLI), each in its own network
namespace when `netns=True`, otherwise all on loopback. Always cleaned up: processes first (they keep
a namespace alive), then namespaces, then state dirs.

    with Testnet(4, netns=True) as net:          # raises NetnsUnavailable (skip) if not permitted
        net.form()                                # founder + invites; waits for 4 validators
        net.kill(1); net.restart(1)               # kill -9, then `up` again
        net.pause(2); net.resume(2)               # SIGSTOP / SIGCONT
        net.partition([0, 1, 2], [3]); net.heal()
        net.history.check()                       # no fork, nothing committed lost
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from mycelium.testing.deadlines import stretched
from tests.integration.daemons import CLI, Daemon
from tests.integration.daemons import wait_moving
from tests.testnet.history import HistoryChecker, wait_for
from tests.testnet.netns import Netns

FAST_ENV = {
    "MYCELIUM__NODE__HEARTBEAT_S": "1",  # a height per second, so warm-up (12 heights) is quick
    "MYCELIUM__NODE__READ_ONLY_AFTER_S": "4",  # read-only after 4 s without a quorum (default 30)
    "MYCELIUM__NODE__PING_INTERVAL_S": "1",  # unresponsive peers dropped after ~3 failed 1 s pings (default 15)
    "MYCELIUM__NODE__MDNS": "false",  # discovery must come from bootstrap and Latent, not the LAN
}


NETNS_PORT = 4731  # every node listens on it in its own namespace (its own address), across restarts


def free_port() -> int:
    """A loopback TCP port free right now (a node keeps it across restarts)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class NetDaemon(Daemon):
    """A daemon that runs inside a namespace (or on loopback), with extra env (e.g. clock skew)."""

    def __init__(self, state_dir: Path, label: str, exec_prefix: list[str], address: str,
                 env: dict[str, str], port: int = 0) -> None:
        super().__init__(state_dir)
        self.label = label
        self.exec_prefix = exec_prefix
        self.address = address
        self.port = port  # kept across restarts, as a real node's configured port is (0: ephemeral)
        self.env = env

    def up(self, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
        full_env = {**os.environ, **self.env, **(env or {})}
        full_env.pop("MYCELIUM_STATE_DIR", None)
        if not (env and "MYCELIUM_JOIN_TOKEN" in env):
            full_env.pop("MYCELIUM_JOIN_TOKEN", None)
        cmd = [*self.exec_prefix, *CLI, "--state-dir", str(self.state_dir), "up", "--detach",
               "--listen", f"/ip4/{self.address}/tcp/{self.port}", *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=stretched(60), env=full_env)

    def cli(self, *args: str, timeout: float = 60, env: dict | None = None, input: str | None = None):
        return super().cli(*args, timeout=timeout, env={**self.env, **(env or {})}, input=input)

    def status_or_none(self) -> dict | None:
        from mycelium.api.client import ClientError

        try:
            return self.status()
        except ClientError:
            return None  # down, starting, or stopped (SIGSTOP) past the client's timeout


class Testnet:
    def __init__(self, size: int, *, netns: bool, spare: int = 0, env: dict[str, str] | None = None,
                 node_env: dict[int, dict[str, str]] | None = None) -> None:
        self.size = size
        self.spare = spare  # extra namespaces (no daemon) for attackers and strangers: spare_slot(k)
        self.root = Path(tempfile.mkdtemp(prefix="mycnet-", dir="/tmp"))  # short: socket paths ≤ 108 bytes
        self.net = Netns(size + spare) if netns else None
        self.env = {**FAST_ENV, **(env or {})}
        self.node_env = node_env or {}
        self.nodes: list[NetDaemon] = []
        self.network_id: str | None = None
        self.history: HistoryChecker | None = None
        self.paused: set[int] = set()
        self.extras: list[NetDaemon] = []
        self.netns_reason: str | None = None  # why namespaces are not used, when they are not
        self.observed: dict[str, object] = {}  # what one test saw, for a later test to judge

    # ------------------------------------------------------------------------------ lifecycle
    def __enter__(self) -> Testnet:
        try:
            if self.net is not None:
                self.net.create()
            for i in range(self.size):
                self.nodes.append(self._make_node(i))
        except BaseException:
            self.cleanup()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    def _make_node(self, i: int, label: str | None = None) -> NetDaemon:
        if self.net is not None:
            prefix, address, port = self.net.exec_prefix(i), self.net.address(i), NETNS_PORT
        else:
            prefix, address, port = [], "127.0.0.1", free_port()
        return NetDaemon(self.root / f"n{i}", label or f"n{i}", prefix, address,
                         {**self.env, **self.node_env.get(i, {})}, port)

    def spare_slot(self, k: int = 0) -> tuple[list[str], str]:
        """(command prefix, address) for spare namespace k: run an extra process in it."""
        if self.net is None:
            return [], "127.0.0.1"
        i = self.size + k
        return self.net.exec_prefix(i), self.net.address(i)

    def extra_daemon(self, name: str, k: int = 0, env: dict[str, str] | None = None) -> NetDaemon:
        """A daemon in spare slot k that is not part of the testnet (cleaned up with it)."""
        prefix, address = self.spare_slot(k)
        d = NetDaemon(self.root / name, name, prefix, address, {**self.env, **(env or {})})
        self.extras.append(d)
        return d

    def cleanup(self) -> None:
        if self.history is not None:
            self.history.stop()
        for i in list(self.paused):
            try:
                self._signal(i, signal.SIGCONT)
            except (AssertionError, ProcessLookupError):
                pass  # already gone  # SIGKILL works on stopped processes too; this just leaves no stopped ones
        for d in self.nodes + self.extras:
            try:
                d.kill(signal.SIGKILL)
            except AssertionError:
                pass  # reported by the stray-process check of the test that used us
        if self.net is not None:
            self.net.cleanup()
        shutil.rmtree(self.root, ignore_errors=True)

    # ---------------------------------------------------------------------------------- forming
    def form(self, *, validators: int | None = None, timeout_s: float = 120) -> None:
        """Founder creates a network, the others join by one invite; wait until every node is a
        member and (if given) the validator set has that many seats on every node."""
        first = self.nodes[0]
        _ok(first.up(), first)
        _ok(first.cli("network", "create", "testnet"), first)
        wait_for(lambda: (s := first.status_or_none()) and s["epoch"] >= 1 and not s["personal_network"],
                 timeout=30, what="the founder's first height")
        self.network_id = first.status()["network_id"]
        self.history = HistoryChecker({d.label: d.state_dir for d in self.nodes}, self.network_id).__enter__()
        token = self.invite(uses=self.size + 4)
        for d in self.nodes[1:]:
            _ok(d.up("--join", token), d)
        self.wait_members(self.size, timeout_s=timeout_s)
        if validators:
            self.wait_validators(validators, timeout_s=timeout_s)

    def invite(self, uses: int = 1) -> str:
        res = self.nodes[0].cli("invite", "--uses", str(uses), "--ttl", "30m", "--json")
        _ok(res, self.nodes[0])
        return json.loads(res.stdout)["token"]

    def statuses(self, indices: list[int] | None = None) -> dict[int, dict | None]:
        return {i: self.nodes[i].status_or_none() for i in (range(self.size) if indices is None else indices)}

    def wait_members(self, n: int, timeout_s: float = 120) -> None:
        def ok() -> bool:
            return all(s and s["members"] == n and s["admitted"] and s["network_id"] == self.network_id
                       for s in self.statuses().values())
        wait_for(ok, timeout=timeout_s, interval=1, what=f"{n} members on every node")

    def wait_validators(self, n: int, timeout_s: float = 120) -> None:
        wait_for(lambda: all(s and len(s["validators"]) == n for s in self.statuses().values()),
                 timeout=timeout_s, interval=1, what=f"{n} validators on every node")

    def heights(self, indices: list[int]) -> dict[int, int]:
        return {i: (s["epoch"] if s else -1) for i, s in self.statuses(indices).items()}

    def wait_progress(self, indices: list[int], beyond: int, timeout_s: float = 40) -> dict[int, int]:
        """Wait until every node in `indices` decided a height above `beyond`.

        `timeout_s` is how long the lagging nodes may go *without moving at all* (a stall), not a
        budget for the whole catch-up: on a loaded machine a restarted node that replays many
        heights is slow but moving, and is given up to STALL_CAP × timeout_s in total."""
        return wait_moving(lambda: self.heights(indices), lambda h: bool(h) and all(v > beyond for v in h.values()),
                           stall_s=timeout_s, what=f"nodes {indices} to decide past height {beyond}")

    def wait_converged(self, timeout_s: float = 60) -> int:
        """Wait until every live node holds the same head; returns its height."""
        def heads() -> dict:
            return {i: (s["epoch"], s["primary_hash"]) for i, s in self.statuses().items() if s}

        def same(h: dict) -> bool:
            return len(set(h.values())) == 1

        return next(iter(wait_moving(heads, same, stall_s=timeout_s, what="one identical head on every node").values()))[0]

    # ---------------------------------------------------------------------------- perturbations
    def _signal(self, i: int, sig: int) -> None:
        pid = self.nodes[i].pid()
        assert pid is not None, f"{self.nodes[i].label} is not running"
        os.killpg(pid, sig)

    def kill(self, i: int) -> None:
        """kill -9 node i (its process group)."""
        self.nodes[i].kill(signal.SIGKILL)

    def restart(self, i: int) -> None:
        """Start node i again on its state dir (after kill or down)."""
        _ok(self.nodes[i].up(), self.nodes[i])

    def stop_gracefully(self, i: int) -> None:
        _ok(self.nodes[i].cli("down"), self.nodes[i])

    def pause(self, i: int) -> None:
        self._signal(i, signal.SIGSTOP)
        self.paused.add(i)

    def resume(self, i: int) -> None:
        self._signal(i, signal.SIGCONT)
        self.paused.discard(i)

    def partition(self, *groups: list[int]) -> None:
        assert self.net is not None, "partitions need network namespaces"
        self.net.partition(*groups)

    def heal(self) -> None:
        if self.net is not None:
            self.net.heal()

    def log_tail(self, i: int, lines: int = 40) -> str:
        return "\n".join(self.nodes[i].log().splitlines()[-lines:])


def _ok(res: subprocess.CompletedProcess, d: Daemon) -> None:
    assert res.returncode == 0, f"`{' '.join(map(str, res.args))}` failed ({res.returncode}): {res.stderr}\n{d.log()[-3000:]}"


def wait_seconds(s: float) -> None:
    """A real pause in a real-process test (the daemons run on wall-clock time)."""
    time.sleep(s)

