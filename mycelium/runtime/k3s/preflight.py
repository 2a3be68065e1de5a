"""What a node needs before it can run K3s, checked one by one, and the `[k3s]` section that
`install.sh --k3s` writes into config.toml.

    python -m mycelium.runtime.k3s.preflight --state-dir DIR [--binary PATH] [--write-config]

Prints one line per check (`ok` / `missing` with the exact fix) and exits 0 when every check passed,
3 when something is missing (the node then runs on the process runtime and says why), 2 when the
binary named with --binary is not a usable K3s (a mistake to fix before installing).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

K3S_VERSION_RE = re.compile(r"^k3s version (v\d+\.\d+\.\d+\+k3s\d+)")
SECTION_RE = re.compile(r"(?ms)^\[k3s\]\n.*?(?=^\[|\Z)")


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str  # what was found, or exactly what to do


class BadBinary(Exception):
    """--binary names something that is not a working K3s."""


def k3s_version(binary: str) -> str:
    """The K3s version the binary reports; BadBinary if it is not one."""
    if not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
        raise BadBinary(f"{binary} is not an executable file; download K3s from "
                        "https://github.com/k3s-io/k3s/releases (k3s for amd64, k3s-arm64 for a Pi) and chmod +x it")
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BadBinary(f"{binary} --version failed: {exc}") from exc
    m = K3S_VERSION_RE.match(out.strip())
    if not m:
        raise BadBinary(f"{binary} does not look like K3s: `--version` printed {out.strip()[:80]!r}, "
                        "expected 'k3s version v1.x.y+k3sN'")
    return m.group(1)


def checks(binary: str | None) -> list[Check]:
    out: list[Check] = []
    if binary:
        out.append(Check("k3s binary", True, f"{binary} ({k3s_version(binary)})"))
    else:
        out.append(Check("k3s binary", False, "no `k3s` on PATH: install it (https://github.com/k3s-io/k3s/releases, "
                         "or `curl -sfL https://get.k3s.io | INSTALL_K3S_SKIP_START=true INSTALL_K3S_SKIP_ENABLE=true "
                         "sh -`), then re-run ./install.sh --k3s --k3s-binary /usr/local/bin/k3s"))
    root = os.geteuid() == 0
    out.append(Check("root", root, "running as root" if root else
                     "K3s runs containers and sets up networking as root: re-run as root (sudo ./install.sh --k3s)"))
    for tool, pkg in (("ip", "iproute2"), ("wg", "wireguard-tools")):
        found = shutil.which(tool)
        out.append(Check(tool, bool(found), found or f"apt-get install {pkg}"))
    kernel = Path("/sys/module/wireguard").exists()
    userspace = shutil.which("wireguard-go") is not None and Path("/dev/net/tun").exists()
    out.append(Check("WireGuard", kernel or userspace,
                     "kernel module" if kernel else "wireguard-go (userspace) with /dev/net/tun" if userspace else
                     "no kernel module and no wireguard-go: apt-get install wireguard-go (and make sure /dev/net/tun "
                     "exists), or load the module: modprobe wireguard"))
    return out


def config_section(binary: str | None) -> str:
    lines = ["[k3s]", "enabled = true  # written by install.sh --k3s; false = process runtime only"]
    lines.append(f'binary = "{binary}"' if binary else 'binary = ""  # no k3s found at install time: set its path here')
    return "\n".join(lines) + "\n"


def write_config(state_dir: Path, binary: str | None) -> Path:
    """Put the [k3s] section into config.toml (replacing an existing one, keeping everything else)."""
    path = Path(state_dir) / "config.toml"
    text = path.read_text() if path.exists() else ""
    section = config_section(binary)
    if SECTION_RE.search(text):
        text = SECTION_RE.sub(lambda _m: section + "\n", text, count=1)
    else:
        text = (text.rstrip("\n") + "\n\n" if text.strip() else "") + section
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mycelium-k3s-preflight")
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--binary", help="the k3s binary (default: `k3s` on PATH)")
    parser.add_argument("--write-config", action="store_true", help="write the [k3s] section into config.toml")
    args = parser.parse_args(argv)
    binary = args.binary or shutil.which("k3s")
    try:
        results = checks(binary)
    except BadBinary as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for c in results:
        print(f"  {'ok     ' if c.ok else 'missing'}  {c.name}: {c.detail}")
    if args.write_config:
        print(f"  wrote [k3s] into {write_config(args.state_dir, binary)}")
    if all(c.ok for c in results):
        return 0
    print("K3s will not start until the missing items above are fixed; until then the node runs its services "
          "on the process runtime and `mycelium status` says why.")
    return 3


if __name__ == "__main__":
    sys.exit(main())
