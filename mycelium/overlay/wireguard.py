"""Applies a DesiredOverlay to a WireGuard interface: the overlay's only I/O.

Link creation: kernel WireGuard (`ip link add … type wireguard`) where the module exists, otherwise
the userspace `wireguard-go` (Debian package `wireguard-go`), run in the foreground as our child so
it dies with us. Configuration is the same for both, through `wg` (package `wireguard-tools`):
`wg syncconf` with the full desired config on stdin, which adds, updates *and removes* peers in one
step — a member that left loses its peer entry — and never writes the private key to disk. Then
addresses and the pod-CIDR routes of the interface are diffed against the desired ones.

These calls block for milliseconds; the trio shell runs `apply` in a worker thread. `netns` runs every
command inside a network namespace (tests only). pyroute2 is not used: `ip` and `wg` give the same
kernel path with no extra dependency (DESIGN names pyroute2 as one option).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass

from mycelium.overlay.keys import OverlayKey, public_b64
from mycelium.overlay.peers import DesiredOverlay

KEEPALIVE_S = 25  # keeps NAT mappings open; WireGuard's usual value
LINK_WAIT_S = 10.0  # how long wireguard-go may take to create its interface (slow, loaded machines)


class OverlayError(Exception):
    """The overlay could not be brought up or changed; the message says why and what to install."""


def missing_tools() -> list[str]:
    """Debian packages needed for the overlay that are not installed here."""
    need = {"ip": "iproute2", "wg": "wireguard-tools"}
    return sorted(pkg for tool, pkg in need.items() if shutil.which(tool) is None)


@dataclass
class ApplyReport:
    added: tuple[str, ...] = ()  # peer public keys (base64) added
    removed: tuple[str, ...] = ()  # peer public keys removed
    routes_added: tuple[str, ...] = ()
    routes_removed: tuple[str, ...] = ()


class WireGuardLink:
    """One WireGuard interface under our control."""

    def __init__(self, interface: str, key: OverlayKey, *, netns: str | None = None, prefer: str = "auto") -> None:
        if prefer not in ("auto", "kernel", "userspace"):
            raise ValueError(f"prefer must be auto, kernel or userspace, not {prefer!r}")
        self.interface = interface
        self.key = key
        self.netns = netns
        self.prefer = prefer
        self.mode: str | None = None  # "kernel" or "userspace" once up
        self._userspace: subprocess.Popen | None = None

    # ------------------------------------------------------------------------------ commands
    def _cmd(self, *args: str) -> list[str]:
        return (["ip", "netns", "exec", self.netns] if self.netns else []) + list(args)

    def _run(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        res = subprocess.run(self._cmd(*args), input=input, capture_output=True, text=True, timeout=30)
        if check and res.returncode != 0:
            raise OverlayError(f"`{' '.join(args)}` failed ({res.returncode}): {res.stderr.strip()}")
        return res

    def _link_exists(self) -> bool:
        return self._run("ip", "link", "show", "dev", self.interface, check=False).returncode == 0

    # ------------------------------------------------------------------------------ lifecycle
    def up(self) -> str:
        """Create the interface (kernel, else wireguard-go); returns the mode used."""
        if missing_tools():
            raise OverlayError(f"the overlay needs {', '.join(missing_tools())}: apt-get install {' '.join(missing_tools())}")
        if self._link_exists():
            raise OverlayError(f"interface {self.interface} already exists; remove it (`ip link del {self.interface}`) "
                               "or stop the process that owns it")
        kernel_error = "not tried"
        if self.prefer in ("auto", "kernel"):
            res = self._run("ip", "link", "add", "dev", self.interface, "type", "wireguard", check=False)
            if res.returncode == 0:
                self.mode = "kernel"
            else:
                kernel_error = res.stderr.strip() or f"exit {res.returncode}"
        if self.mode is None:
            if self.prefer == "kernel":
                raise OverlayError(f"kernel WireGuard is unavailable here ({kernel_error})")
            self._start_userspace(kernel_error)
        self._run("wg", "set", self.interface, "private-key", "/dev/stdin", input=self.key.private_b64 + "\n")
        self._run("ip", "link", "set", "dev", self.interface, "up")
        return self.mode

    def _start_userspace(self, kernel_error: str) -> None:
        if shutil.which("wireguard-go") is None:
            raise OverlayError(f"no kernel WireGuard ({kernel_error}) and no wireguard-go: apt-get install wireguard-go")
        env = dict(os.environ, WG_PROCESS_FOREGROUND="1")
        self._userspace = subprocess.Popen(self._cmd("wireguard-go", "-f", self.interface), env=env,
                                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + LINK_WAIT_S
        while not (self._link_exists() and self._uapi_ready()):
            if self._userspace.poll() is not None:
                out = self._userspace.stdout.read().decode(errors="replace").strip() if self._userspace.stdout else ""
                hint = (f"another WireGuard interface named {self.interface} runs on this machine (its control "
                        f"socket /var/run/wireguard/{self.interface}.sock is shared by all network namespaces): "
                        "choose another name" if "socket in use" in out
                        else "it needs /dev/net/tun and CAP_NET_ADMIN")
                raise OverlayError(f"wireguard-go exited with {self._userspace.returncode}: {out[-300:]} ({hint})")
            if time.monotonic() > deadline:
                self.down()
                raise OverlayError(f"wireguard-go did not create {self.interface} within {LINK_WAIT_S:.0f} s")
            time.sleep(0.02)
        self.mode = "userspace"

    def _uapi_ready(self) -> bool:
        return self._run("wg", "show", self.interface, "public-key", check=False).returncode == 0

    def down(self) -> None:
        """Remove the interface (and stop wireguard-go). Safe to call twice."""
        if self._userspace is not None:
            self._userspace.terminate()
            try:
                self._userspace.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._userspace.kill()
                self._userspace.wait(timeout=5)
            if self._userspace.stdout:
                self._userspace.stdout.close()
            self._userspace = None
        if self._link_exists():
            self._run("ip", "link", "del", "dev", self.interface, check=False)
        self.mode = None

    # ------------------------------------------------------------------------------ apply
    def peers(self) -> set[str]:
        """Public keys (base64) of the peers configured now."""
        out = self._run("wg", "show", self.interface, "peers").stdout
        return {line.strip() for line in out.splitlines() if line.strip()}

    def apply(self, desired: DesiredOverlay) -> ApplyReport:
        if desired.listen_port <= 0:
            raise OverlayError("listen port must be positive")
        before = self.peers()
        self._run("wg", "syncconf", self.interface, "/dev/stdin", input=render_wg_config(self.key, desired))
        after = self.peers()
        self._sync_address(f"{desired.address}/{desired.prefix_len}")
        routes_added, routes_removed = self._sync_routes(set(desired.routes()))
        return ApplyReport(tuple(sorted(after - before)), tuple(sorted(before - after)), routes_added, routes_removed)

    def _sync_address(self, wanted: str) -> None:
        info = json.loads(self._run("ip", "-j", "addr", "show", "dev", self.interface).stdout or "[]")
        have = {f"{a['local']}/{a['prefixlen']}" for link in info for a in link.get("addr_info", [])
                if a.get("family") == "inet"}
        for addr in have - {wanted}:
            self._run("ip", "addr", "del", addr, "dev", self.interface)
        if wanted not in have:
            self._run("ip", "addr", "add", wanted, "dev", self.interface)

    def _sync_routes(self, wanted: set[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
        info = json.loads(self._run("ip", "-j", "route", "show", "dev", self.interface, "proto", "static").stdout or "[]")
        have = {r["dst"] for r in info}
        for dst in have - wanted:
            self._run("ip", "route", "del", dst, "dev", self.interface, "proto", "static")
        for dst in wanted - have:
            self._run("ip", "route", "replace", dst, "dev", self.interface, "proto", "static")
        return tuple(sorted(wanted - have)), tuple(sorted(have - wanted))


def render_wg_config(key: OverlayKey, desired: DesiredOverlay) -> str:
    """The `wg syncconf` configuration for `desired` (holds the private key: never written to disk)."""
    lines = ["[Interface]", f"PrivateKey = {key.private_b64}", f"ListenPort = {desired.listen_port}", ""]
    for peer in desired.peers:
        lines += ["[Peer]", f"PublicKey = {public_b64(peer.public_key)}", f"AllowedIPs = {', '.join(peer.allowed_ips)}"]
        if peer.endpoint:
            lines += [f"Endpoint = {peer.endpoint}", f"PersistentKeepalive = {KEEPALIVE_S}"]
        lines.append("")
    return "\n".join(lines)
