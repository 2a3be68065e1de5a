"""Inbound connections: a slot per open connection, given back when it closes; a rate limit per address.

py-libp2p 0.8.1's swarm takes a token of a `CapacityLimiter(max_connections - min_connections)` for
each inbound connection and returns it only when its handler returns — and the handler waits on
`manager.wait_finished()`, i.e. for the whole life of the swarm. After `max_connections` inbound
connections over the daemon's lifetime (anyone's: connect and hang up 64 times) it refused every new
one until restarted, and each accepted connection left a task behind.

`InboundGuard.install(swarm)` replaces that one handler on our swarm instance (libp2p itself is not
changed): the same gate check and security/muxer upgrade, then the handler waits for *this*
connection to close and gives its slot back. Before anything costly, a token bucket per remote IP
address refuses connection floods. Every decision is counted in MeshCounters (and so in /metrics).
"""

from __future__ import annotations

import mycelium.mesh.libp2p_setup  # noqa: F401,I001 - before libp2p: fixes its logging

from typing import TYPE_CHECKING, Any

import trio
from libp2p.network.connection.raw_connection import RawConnection

from mycelium.mesh.membership import RateLimiter

if TYPE_CHECKING:
    from mycelium.mesh.context import MeshContext

CLOSED_CHECK_S = 5.0  # fallback check that a connection is still in the swarm (muxers without events)


class InboundGuard:
    def __init__(self, mesh: MeshContext, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("the inbound connection capacity must be at least 1")
        self._mesh = mesh
        self.capacity = capacity
        self.in_use = 0
        self.per_address = RateLimiter(mesh.config.inbound_connection_rate)
        self._swarm: Any = None

    def install(self, swarm: Any) -> None:
        """Route `swarm`'s inbound connections through us (its listeners look the handler up on the
        instance at each connection, so setting the attribute is enough)."""
        if not hasattr(swarm, "_handle_inbound_connection") or not hasattr(swarm, "upgrade_inbound_raw_conn"):
            raise RuntimeError("this py-libp2p swarm has no _handle_inbound_connection; check mesh/inbound.py")
        self._swarm = swarm
        swarm._handle_inbound_connection = self.handle

    async def handle(self, read_write_closer: Any, maddr: Any) -> None:
        counters = self._mesh.counters
        address = _remote_host(read_write_closer)
        if not self.per_address.allow(address, trio.current_time()):
            counters.inbound_rate_limited += 1
            await _close(read_write_closer)
            return
        if self.in_use >= self.capacity:
            counters.inbound_refused_full += 1
            await _close(read_write_closer)
            return
        self.in_use += 1  # no checkpoint between the check and this: trio is cooperative
        counters.inbound_accepted += 1
        try:
            await self._serve(read_write_closer, maddr)
        finally:
            self.in_use -= 1
            counters.inbound_released += 1

    async def _serve(self, read_write_closer: Any, maddr: Any) -> None:
        swarm = self._swarm
        remote = swarm._build_remote_multiaddr(read_write_closer)
        if remote is not None and not await swarm.connection_gate.is_allowed(remote):
            self._mesh.counters.inbound_gated += 1
            await _close(read_write_closer)
            return
        raw = RawConnection(read_write_closer, False)
        try:
            muxed = await swarm.upgrade_inbound_raw_conn(raw, maddr)
        except Exception as exc:  # noqa: BLE001 - libp2p raises many kinds for a failed upgrade; all end here
            self._mesh.counters.inbound_upgrade_failed += 1
            self._mesh.log.debug("mesh.inbound.upgrade_failed", error=f"{type(exc).__name__}: {exc}")
            await _close(raw)
            return
        await self._wait_closed(muxed)

    async def _wait_closed(self, muxed: Any) -> None:
        """Until this connection is closed by either side (or gone from the swarm)."""
        event = getattr(muxed, "event_shutting_down", None)
        if event is None:
            event = getattr(muxed, "event_closed", None)
        while not _is_closed(muxed) and self._in_swarm(muxed):
            if event is None:
                await trio.sleep(CLOSED_CHECK_S)
                continue
            with trio.move_on_after(CLOSED_CHECK_S):
                await event.wait()
                return

    def _in_swarm(self, muxed: Any) -> bool:
        peer_id = getattr(muxed, "peer_id", None)
        if peer_id is None:
            return False
        return any(getattr(c, "muxed_conn", None) is muxed for c in self._swarm.get_connections(peer_id))


def _is_closed(muxed: Any) -> bool:
    closed = getattr(muxed, "is_closed", False)
    return bool(closed() if callable(closed) else closed)


def _remote_host(read_write_closer: Any) -> str:
    try:
        remote = read_write_closer.get_remote_address()
    except (AttributeError, OSError):
        remote = None
    return remote[0] if remote else "?"


async def _close(closer: Any) -> None:
    try:
        await closer.close()
    except Exception:  # noqa: BLE001 - a socket already gone is closed enough
        pass
