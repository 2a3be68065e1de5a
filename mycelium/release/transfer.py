"""The wheel travels peer to peer: mesh rpc "release", one chunk per request (trio shell).

Request: canonical {"sha": hex, "off": int}; answer: up to CHUNK bytes of that wheel from `off`
(empty: this node does not hold it, or `off` is its end). A node serves only wheels of releases
published in its Primary, from its own store (STATE/release/wheels/SHA.whl): the publisher holds
one from the start, every node that fetched one serves it too. A fetched wheel is written to
a .part file and becomes the wheel only once its size and sha256 match the release's; a peer that
sends a wrong one is skipped (counted) and the next peer is asked. Nothing is ever installed from
an unverified file (agent.py verifies again, with the admin's signature, right before installing).
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from pathlib import Path
from typing import Any

import trio

from mycelium.encoding import EncodingError, canonical, decode
from mycelium.release.rules import state_of

RPC = "release"
CHUNK = 1 << 20
REQUEST_TIMEOUT_S = 30.0


def wheels_dir(state_dir: Path) -> Path:
    d = Path(state_dir) / "release" / "wheels"
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    return d


def wheel_path(state_dir: Path, sha: str) -> Path:
    return wheels_dir(state_dir) / f"{sha}.whl"


def store(state_dir: Path, data_path: Path, sha: str) -> Path:
    """Copy a wheel into the store (fsynced), so this node can serve it."""
    dest = wheel_path(state_dir, sha)
    tmp = dest.with_suffix(".part")
    with open(data_path, "rb") as src, open(tmp, "wb") as out:
        for block in iter(lambda: src.read(CHUNK), b""):
            out.write(block)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, dest)
    return dest


def prune(state_dir: Path, keep: set[str]) -> None:
    """Wheels of releases no longer published (the Primary keeps the newest few) are removed."""
    for f in wheels_dir(state_dir).iterdir():
        if f.stem not in keep:
            f.unlink(missing_ok=True)


class WheelExchange:
    def __init__(self, session: Any) -> None:
        self.session = session
        self.state_dir = session.cfg.state_dir
        self.counters: Counter[str] = Counter()

    async def handle_rpc(self, peer: str, data: bytes) -> bytes:
        try:
            req = decode(data)
            sha, off = req["sha"], req["off"]
        except (EncodingError, TypeError, KeyError):
            self.counters["bad_request"] += 1
            return b""
        head = self.session.ledger.head
        shas = {r["sha256"] for r in state_of(head.params)["published"].values()} if head is not None else set()
        if not (isinstance(sha, str) and sha in shas and type(off) is int and off >= 0):
            self.counters["not_served"] += 1
            return b""
        path = wheel_path(self.state_dir, sha)
        try:
            with open(path, "rb") as f:
                f.seek(off)
                chunk = f.read(CHUNK)
        except OSError:
            return b""
        self.counters["chunks_served"] += 1
        return chunk

    async def fetch(self, release: dict, peers: list[str]) -> Path | None:
        """The release's wheel in the local store (fetched from `peers` in order if missing), size and
        sha256 verified; None when no peer had a good copy."""
        sha, size = release["sha256"], release["size"]
        dest = wheel_path(self.state_dir, sha)
        if dest.exists():
            return dest
        mesh = self.session.mesh
        for peer in peers:
            got = await self._fetch_from(mesh, peer, sha, size, dest.with_suffix(".part"))
            if got:
                os.replace(dest.with_suffix(".part"), dest)
                self.counters["fetched"] += 1
                return dest
        return None

    async def _fetch_from(self, mesh: Any, peer: str, sha: str, size: int, part: Path) -> bool:
        digest = hashlib.sha256()
        done = 0
        try:
            with open(part, "wb") as out:
                while done < size:
                    chunk = await mesh.request(peer, RPC, canonical({"sha": sha, "off": done}),
                                               timeout_s=REQUEST_TIMEOUT_S)
                    if not chunk or done + len(chunk) > size:
                        break
                    out.write(chunk)
                    digest.update(chunk)
                    done += len(chunk)
                    await trio.sleep(0)
                out.flush()
                os.fsync(out.fileno())
        except (OSError, *mesh.request_errors):
            self.counters["fetch_errors"] += 1
            part.unlink(missing_ok=True)
            return False
        if done != size or digest.hexdigest() != sha:
            if done:
                self.counters["bad_wheel"] += 1  # a peer sent bytes that are not the release: next peer
            part.unlink(missing_ok=True)
            return False
        return True
