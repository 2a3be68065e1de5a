"""The K3s join token: derived from the network secret, so it reaches members only and never sits
in a spore, clear or encrypted.

    token = "myc1-" + hex(HKDF-SHA256(ikm=network secret, salt=network id, info="mycelium k3s join token v1", 32))

Every member already holds the network secret (the invite carried it; it is rotated through
consensus and sent encrypted to each remaining member when someone is removed — DESIGN, Identity),
so every member computes the same token locally and nobody has to send it. A removed device keeps
only the old secret, hence only the old token. K3s reads it from a 0600 file (`token-file`), never
from its config file or its command line (which other users could read in /proc).

Limitation: after a secret rotation the servers must be moved to the new token with
`k3s token rotate --new-token` before agents restart; the supervisor does not do that yet.
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
