"""Shared by the K3s tests: a stand-in `k3s` executable and a small Primary to plan from."""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path

from mycelium.identity import NodeKey
from mycelium.spores.primary import Member, PrimarySpore, ZERO_HASH
from tests.profiles import make_profile

NODES = [NodeKey.from_seed(bytes([i]) * 32).node_id for i in range(1, 12)]
NET = "ab" * 32


def standin_binary(tmp_path: Path) -> Path:
    (tmp_path / "bin").mkdir(parents=True, exist_ok=True)
    path = tmp_path / "bin" / "k3s"
    path.write_text(f"#!/bin/sh\nexec {sys.executable} -m mycelium.testing.k3s_standin \"$@\"\n")
    path.chmod(0o755)
    return path


def standin_env(record: Path, behaviour: str = "ready", **extra: str) -> dict[str, str]:
    return dict(os.environ, MYCELIUM_STANDIN_RECORD=str(record), MYCELIUM_STANDIN_BEHAVIOUR=behaviour, **extra)


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def primary(roles: dict[str, str], height: int = 7, services: dict | None = None,
            placements: dict | None = None) -> PrimarySpore:
    members = {n: Member(role, 500_000, {}, i, make_profile().to_wire()) for i, (n, role) in enumerate(roles.items())}
    return PrimarySpore(NET, height, 0, ZERO_HASH, members, services=services or {}, placements=placements or {})
