"""The overlay for real: three nodes in network namespaces, userspace wireguard-go + wg, configured
from a Primary's member set and their overlay announcements exactly as the daemon would.

Checks: every node pings every other's overlay address and pod-CIDR gateway; a node that leaves
the Primary loses its peer entry and route everywhere; a ping's payload marker appears on the
WireGuard interface (plaintext inside the tunnel) but never on the veth (the underlay), while
the same marker sent over the underlay *is* seen there — so the capture works and the tunnel encrypts.
Every wireguard-go and namespace is removed at the end.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
import time

import pytest

from mycelium.identity import NodeKey
from mycelium.overlay.addressing import OverlayConfig, assign_addresses
from mycelium.overlay.keys import OverlayKey
from mycelium.overlay.peers import Announcement, desired_overlay
from mycelium.overlay.wireguard import WireGuardLink
from tests.testnet.netns import Netns, netns_unavailable_reason

pytestmark = pytest.mark.netns

MARKER = "6d7963656c69756d2d6f7665726c6179"  # hex of b"mycelium-overlay" (ping -p repeats it)

CAPTURE = textwrap.dedent("""
    import socket, sys, time
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.ntohs(3))  # ETH_P_ALL
    s.bind((sys.argv[1], 0))
    s.settimeout(0.2)
    print("ready", flush=True)
    seen, frames, end = b"", 0, time.monotonic() + float(sys.argv[2])
    while time.monotonic() < end:
        try:
            data = s.recv(65535)
        except socket.timeout:
            continue
        frames += 1
        if bytes.fromhex(sys.argv[3]) in data:
            seen = b"x"
    print(f"frames={frames} marker={'yes' if seen else 'no'}", flush=True)
""")


def _skip_reason() -> str | None:
    reason = netns_unavailable_reason()
    if reason:
        return reason
    for tool, pkg in (("wireguard-go", "wireguard-go"), ("wg", "wireguard-tools"), ("ping", "iputils-ping")):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed (apt-get install {pkg})"
    return None


def ping(net: Netns, i: int, address: str, pattern: str | None = None, count: int = 1) -> bool:
    args = [*net.exec_prefix(i), "ping", "-n", "-q", "-c", str(count), "-W", "2", "-i", "0.2"]
    if pattern:
        args += ["-p", pattern]
    return subprocess.run([*args, address], capture_output=True, timeout=30).returncode == 0


def wait_ping(net: Netns, i: int, address: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not ping(net, i, address):
        assert time.monotonic() < deadline, f"node {i} cannot reach {address} over the overlay"


class Capture:
    def __init__(self, net: Netns, i: int, iface: str, seconds: float) -> None:
        self.proc = subprocess.Popen([*net.exec_prefix(i), sys.executable, "-c", CAPTURE, iface, str(seconds), MARKER],
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline().strip() == "ready"

    def result(self) -> tuple[int, bool]:
        out, _ = self.proc.communicate(timeout=30)
        fields = dict(kv.split("=") for kv in out.split())
        return int(fields["frames"]), fields["marker"] == "yes"


@pytest.fixture
def overlay_net():
    reason = _skip_reason()
    if reason:
        pytest.skip(f"needs network namespaces and wireguard-go: {reason}")
    net = Netns(3).create()
    links: list[WireGuardLink] = []
    try:
        yield net, links
    finally:
        for link in links:
            link.down()
        net.cleanup()
        assert net.leftovers() == []


def test_three_nodes_ping_over_the_overlay_leave_and_encryption(overlay_net):
    net, links = overlay_net
    config = OverlayConfig()
    nodes = [NodeKey.from_seed(bytes([i + 1]) * 32).node_id for i in range(3)]
    keys = [OverlayKey.generate() for _ in nodes]
    bodies = {n: Announcement(k.public, f"{net.address(i)}:{config.listen_port}").to_body()
              for i, (n, k) in enumerate(zip(nodes, keys))}
    plan = assign_addresses([(n, h) for h, n in enumerate(nodes)], config)

    for i, node in enumerate(nodes):
        link = WireGuardLink(f"myc-wg{i}", keys[i], netns=net.ns(i), prefer="userspace")
        links.append(link)
        assert link.up() == "userspace"
        # the pods' gateway: a bridge (as the CNI bridge plugin makes) holding the first address of the node's pod block
        pod_gw = plan.get(node).pod_cidr.replace(".0/24", ".1/24")
        subprocess.run([*net.exec_prefix(i), "ip", "link", "add", "pods0", "type", "bridge"], check=True)
        subprocess.run([*net.exec_prefix(i), "ip", "addr", "add", pod_gw, "dev", "pods0"], check=True)
        subprocess.run([*net.exec_prefix(i), "ip", "link", "set", "pods0", "up"], check=True)
        report = link.apply(desired_overlay(node, plan, bodies, config))
        assert len(report.added) == 2 and len(report.routes_added) == 2, report

    for i in range(3):
        for j in range(3):
            if i != j:
                wait_ping(net, i, plan.get(nodes[j]).address)
                wait_ping(net, i, plan.get(nodes[j]).pod_cidr.replace(".0/24", ".1"))

    # encryption: the marker is on the tunnel interface, never on the veth
    inner = Capture(net, 1, "myc-wg1", 3.0)
    outer = Capture(net, 1, "eth0", 3.0)
    assert ping(net, 0, plan.get(nodes[1]).address, pattern=MARKER, count=5)
    inner_frames, inner_marker = inner.result()
    outer_frames, outer_marker = outer.result()
    assert inner_marker, f"the marker should be visible inside the tunnel ({inner_frames} frames captured)"
    assert outer_frames >= 5 and not outer_marker, "plaintext marker on the veth: traffic is not encrypted"
    control = Capture(net, 1, "eth0", 3.0)
    assert ping(net, 0, net.address(1), pattern=MARKER, count=3)  # over the underlay, unencrypted
    assert control.result()[1], "the capture should see the marker sent in the clear over the veth"

    # node 2 leaves: recompute from the new Primary everywhere; it loses its peer entry and route
    plan2 = assign_addresses([(n, h) for h, n in enumerate(nodes[:2])], config)
    for i in range(2):
        report = links[i].apply(desired_overlay(nodes[i], plan2, bodies, config))
        assert report.removed == (keys[2].public_b64,) and report.routes_removed == (plan.get(nodes[2]).pod_cidr,)
        assert keys[2].public_b64 not in links[i].peers()
    assert not ping(net, 0, plan.get(nodes[2]).address)
    assert ping(net, 0, plan.get(nodes[1]).address)
