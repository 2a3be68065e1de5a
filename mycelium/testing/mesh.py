"""Helpers for tests that run several real meshes on loopback in one trio run."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import trio

from mycelium.identity import NodeKey
from mycelium.mesh.config import MeshConfig
from mycelium.mesh.host import Mesh, open_mesh
from mycelium.testing.deadlines import hang_after


async def wait_until(predicate: Callable[[], bool], *, timeout_s: float, poll_s: float = 0.05) -> None:
    """Poll `predicate` until true; trio.TooSlowError after `timeout_s` (stretched: see deadlines.py)."""
    with hang_after(timeout_s):
        while not predicate():
            await trio.sleep(poll_s)


@asynccontextmanager
async def open_meshes(
    count: int, network_id: str, secret: bytes, *, config: MeshConfig | None = None, **overrides: Any
) -> AsyncIterator[list[Mesh]]:
    """`count` meshes of one network on 127.0.0.1 (ephemeral ports), all closed on exit."""
    cfg = config or MeshConfig.local(**overrides)
    async with AsyncExitStack() as stack:
        meshes = [
            await stack.enter_async_context(open_mesh(cfg, NodeKey.generate(), network_id, secret))
            for _ in range(count)
        ]
        yield meshes
