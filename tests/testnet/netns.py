"""Network namespaces for real-daemon tests: one namespace per node, joined by veth pairs to a bridge
that lives in a hub namespace of its own, so nothing of the test touches the root namespace's links
or routes. Addresses come from 10.77.0.0/24 and exist only inside these namespaces.

Every name starts with `mycnet-<pid>-`, so concurrent runs never collide and a leftover is easy to
attribute; `Netns.cleanup()` deletes everything this object created (call it in a `finally`).

Perturbations:
- `partition(groups)`: blackhole routes between groups (silent drops, as a cut cable would give);
  `heal()` removes them. Works with plain `ip`; no iptables/nft needed.
- `isolate(i)` / `reconnect(i)`: the node's veth goes down / up on the bridge side.
- `throttle(i, rate_kbit)`: a token-bucket filter (tc tbf) on the node's link; `unthrottle(i)`.
- `delay(i, ms, loss_pct)`: tc netem, when the kernel has sch_netem (`netem_available()` says).
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import signal
import subprocess
from dataclasses import dataclass, field

SUBNET_PREFIX = "10.77.0."  # /24; node i gets .(i+1); only ever assigned inside our namespaces
PREFIX_LEN = 24


class NetnsUnavailable(Exception):
    """Network namespaces cannot be used here; the message says why (tests skip with it)."""


def _run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    res = subprocess.run(list(args), capture_output=True, text=True, timeout=30)
    if check and res.returncode != 0:
        raise RuntimeError(f"`{' '.join(args)}` failed ({res.returncode}): {res.stderr.strip()}")
    return res


def netns_unavailable_reason() -> str | None:
    """None if this process can create namespaces, veths and bridges; otherwise the reason.
    MYCELIUM_TEST_NO_NETNS=1 forces the loopback fallback (to test it on a machine that has netns)."""
    if os.environ.get("MYCELIUM_TEST_NO_NETNS"):
        return "disabled by MYCELIUM_TEST_NO_NETNS"
    if shutil.which("ip") is None:
        return "the `ip` tool (iproute2) is not installed"
    if os.geteuid() != 0:
        return "network namespaces need root (run the suite as root, e.g. in CI's container)"
    probe = f"mycnet-{os.getpid()}-probe"
    res = _run("ip", "netns", "add", probe, check=False)
    if res.returncode != 0:
        return f"`ip netns add` is not permitted here: {res.stderr.strip()}"
    try:
        res = _run("ip", "-n", probe, "link", "add", "br0", "type", "bridge", check=False)
        if res.returncode != 0:
            return f"cannot create a bridge in a namespace: {res.stderr.strip()}"
        res = _run("ip", "-n", probe, "link", "add", "va", "type", "veth", "peer", "name", "vb", check=False)
        if res.returncode != 0:
            return f"cannot create veth pairs: {res.stderr.strip()}"
    finally:
        _run("ip", "netns", "del", probe, check=False)
    return None


def netem_unavailable_reason() -> str | None:
    """None if tc netem (added latency/loss) works here; otherwise the reason."""
    if shutil.which("tc") is None:
        return "the `tc` tool (iproute2) is not installed"
    probe = f"mycnet-{os.getpid()}-netem"
    if _run("ip", "netns", "add", probe, check=False).returncode != 0:
        return "cannot create a namespace to probe tc netem"
    try:
        res = _run("ip", "netns", "exec", probe, "tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms",
                   check=False)
        if res.returncode != 0:
            return f"tc netem is not available (kernel lacks sch_netem?): {res.stderr.strip()}"
    finally:
        _run("ip", "netns", "del", probe, check=False)
    return None


_SERIAL = itertools.count(1)


@dataclass
class Netns:
    """A hub namespace with a bridge, and one namespace per node attached to it."""

    size: int
    # pid and a per-process serial: one test process may hold two testnets at once (the package's
    # shared one and a test's own), and their hubs must not share a name
    prefix: str = field(default_factory=lambda: f"mycnet-{os.getpid()}-{next(_SERIAL)}-")
    created: list[str] = field(default_factory=list)
    _blackholes: list[tuple[int, str]] = field(default_factory=list)

    @property
    def hub(self) -> str:
        return self.prefix + "hub"

    def ns(self, i: int) -> str:
        return f"{self.prefix}n{i}"

    def address(self, i: int) -> str:
        return f"{SUBNET_PREFIX}{i + 1}"

    def create(self) -> Netns:
        reason = netns_unavailable_reason()
        if reason:
            raise NetnsUnavailable(reason)
        sweep_stale()
        try:
            self._add_ns(self.hub)
            _run("ip", "-n", self.hub, "link", "add", "br0", "type", "bridge")
            _run("ip", "-n", self.hub, "link", "set", "br0", "up")
            for i in range(self.size):
                self.add_node(i)
        except BaseException:
            self.cleanup()
            raise
        return self

    def add_node(self, i: int) -> None:
        ns = self.ns(i)
        self._add_ns(ns)
        _run("ip", "-n", ns, "link", "set", "lo", "up")
        _run("ip", "-n", self.hub, "link", "add", f"v{i}", "type", "veth", "peer", "name", "eth0", "netns", ns)
        _run("ip", "-n", self.hub, "link", "set", f"v{i}", "master", "br0")
        _run("ip", "-n", self.hub, "link", "set", f"v{i}", "up")
        _run("ip", "-n", ns, "addr", "add", f"{self.address(i)}/{PREFIX_LEN}", "dev", "eth0")
        _run("ip", "-n", ns, "link", "set", "eth0", "up")

    def _add_ns(self, name: str) -> None:
        _run("ip", "netns", "add", name)
        self.created.append(name)

    def exec_prefix(self, i: int) -> list[str]:
        """Prefix a command with this to run it inside node i's namespace."""
        return ["ip", "netns", "exec", self.ns(i)]

    # ---------------------------------------------------------------------------------- faults
    def partition(self, *groups: list[int]) -> None:
        """Cut every link between nodes of different groups (both directions)."""
        for a, ga in enumerate(groups):
            for b, gb in enumerate(groups):
                if a == b:
                    continue
                for i in ga:
                    for j in gb:
                        dst = f"{self.address(j)}/32"
                        _run("ip", "-n", self.ns(i), "route", "add", "blackhole", dst)
                        self._blackholes.append((i, dst))

    def heal(self) -> None:
        """Undo every partition()."""
        while self._blackholes:
            i, dst = self._blackholes.pop()
            _run("ip", "-n", self.ns(i), "route", "del", "blackhole", dst, check=False)

    def isolate(self, i: int) -> None:
        _run("ip", "-n", self.hub, "link", "set", f"v{i}", "down")

    def reconnect(self, i: int) -> None:
        _run("ip", "-n", self.hub, "link", "set", f"v{i}", "up")

    def throttle(self, i: int, rate_kbit: int) -> None:
        """Limit node i's outgoing bandwidth (tc tbf; excess is queued up to 400 ms, then dropped)."""
        _run("ip", "netns", "exec", self.ns(i), "tc", "qdisc", "replace", "dev", "eth0", "root", "tbf",
             "rate", f"{rate_kbit}kbit", "burst", "16kbit", "latency", "400ms")

    def unthrottle(self, i: int) -> None:
        _run("ip", "netns", "exec", self.ns(i), "tc", "qdisc", "del", "dev", "eth0", "root", check=False)

    def delay(self, i: int, delay_ms: int, loss_pct: float = 0.0) -> None:
        """Added latency and loss on node i's link (tc netem; see netem_unavailable_reason())."""
        args = ["delay", f"{delay_ms}ms"] + (["loss", f"{loss_pct}%"] if loss_pct else [])
        _run("ip", "netns", "exec", self.ns(i), "tc", "qdisc", "replace", "dev", "eth0", "root", "netem", *args)

    # --------------------------------------------------------------------------------- cleanup
    def cleanup(self) -> None:
        """Kill anything still running in our namespaces, then delete them (their veths and routes go
        with them). Idempotent."""
        self._blackholes.clear()
        while self.created:
            _delete_ns(self.created.pop())

    def leftovers(self) -> list[str]:
        """Namespaces with our prefix that still exist (should be none after cleanup)."""
        out = _run("ip", "netns", "list", check=False).stdout
        return [line.split()[0] for line in out.splitlines() if line.startswith(self.prefix)]


def _delete_ns(name: str) -> None:
    for pid in _run("ip", "netns", "pids", name, check=False).stdout.split():
        try:
            os.kill(int(pid), signal.SIGKILL)  # only processes inside our own test namespace
        except (ProcessLookupError, ValueError):
            pass
    _run("ip", "netns", "del", name, check=False)


def sweep_stale() -> list[str]:
    """Delete namespaces left by test runs whose process died without cleaning up (kill -9 of
    pytest): only names `mycnet-<pid>-…` whose pid no longer exists. Returns what was removed."""
    removed = []
    for line in _run("ip", "netns", "list", check=False).stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        m = re.fullmatch(r"mycnet-(\d+)-[\w-]+", name)
        if m and not _alive(int(m.group(1))):
            _delete_ns(name)
            removed.append(name)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
