"""The K3s join token: derived from the network secret, so it reaches members only and never sits
in a spore, clear or encrypted.

    token = "myc1-" + hex(HKDF-SHA256(ikm=network secret, salt=network id, info="mycelium k3s join token v1", 32))

Every member already holds the network secret (the invite carried it; it is rotated through
consensus and sent encrypted to each remaining member when someone is removed — DESIGN, Identity),
so every member computes the same token locally and nobody has to send it. A removed device keeps
only the old secret, hence only the old token. K3s reads it from a 0600 file (`token-file`), never
from its config file or its command line (which other users could read in /proc).

After a network-secret rotation (mycelium/rekey.py) the token changes. A fresh server simply gets
the new token file; a server whose datastore was initialised with the old token must be moved over
first, while it runs: `k3s token rotate --data-dir D --server URL --new-token NEW` with the old token
in $K3S_TOKEN (the flag `--token` reads it from there, so it is not on a command line; `--new-token`
has no environment variable: the new one is on that short-lived command line, root-only on a
--k3s install). Only then is the 0600 token file rewritten and the server restarted with it; agents
restart as soon as their token file changes and join once the server took the new token.
`rotation_needed` decides it (pure); the supervisor runs it.
"""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from mycelium.identity import write_private_file

_INFO = b"mycelium k3s join token v1"


def cluster_token(network_secret: bytes, network_id: str) -> str:
    if len(network_secret) < 16:
        raise ValueError("the network secret is too short to derive a cluster token from")
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=network_id.encode(), info=_INFO).derive(network_secret)
    return "myc1-" + key.hex()


def write_token_file(path: Path, token: str) -> bool:
    """Write the token (0600, fsynced) if it changed; True when it did."""
    path = Path(path)
    if path.exists() and path.read_text().strip() == token:
        return False
    write_private_file(path, token.encode() + b"\n")
    return True


def read_token_file(path: Path) -> str | None:
    path = Path(path)
    try:
        return path.read_text().strip() or None
    except FileNotFoundError:
        return None


def rotation_needed(server: bool, initialised: bool, current: str | None, new: str) -> tuple[str, str] | None:
    """(old, new) when a K3s server must run `k3s token rotate` before it may use `new`: it is a
    server, its datastore exists (initialised with `current`), and the token changed."""
    if server and initialised and current is not None and current != new:
        return current, new
    return None


def rotate_argv(binary: str, data_dir: Path, server_url: str, new: str) -> list[str]:
    """The `k3s token rotate` command line (the old token goes in $K3S_TOKEN)."""
    return [binary, "token", "rotate", "--data-dir", str(data_dir), "--server", server_url, "--new-token", new]
