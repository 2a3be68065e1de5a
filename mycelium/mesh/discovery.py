"""Finding and keeping peers: bootstrap and known members redialled with jittered backoff up to a
target connection count, peer exchange among admitted peers, mDNS on the LAN, latency pings."""

from __future__ import annotations

import mycelium.mesh.libp2p_setup  # noqa: F401,I001 - before libp2p: fixes its logging

import random
from typing import TYPE_CHECKING

import multiaddr
import trio
from libp2p.exceptions import BaseLibp2pError
from libp2p.host.ping import ID as PING_PROTOCOL
from libp2p.host.ping import perform_ping_roundtrip
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo as Libp2pPeerInfo

from mycelium.encoding import EncodingError, canonical
from mycelium.identity import NodeId, is_node_id
from mycelium.mesh.peers import MAX_ADDRESSES_PER_PEER
from mycelium.mesh.protocols import RPC_PEERS
from mycelium.mesh.rpc import BadRequest, RequestError
from mycelium.mesh.open_stream import open_stream
from mycelium.encoding import decode

if TYPE_CHECKING:
    from mycelium.mesh.context import MeshContext

MAX_ADDRESS_CHARS = 256


class AddressError(ValueError):
    """A multiaddr we cannot dial; the message says what is wrong with it."""


def split_p2p_address(address: str) -> tuple[NodeId, str]:
    """("12D3KooW…", "/ip4/…/tcp/…") from a full multiaddr ending in /p2p/<node id>."""
    try:
        addr = multiaddr.Multiaddr(address)
    except Exception as exc:  # noqa: BLE001 - multiaddr raises assorted errors for bad text
        raise AddressError(f"{address!r} is not a multiaddr: {exc}") from exc
    try:
        node_id = addr.value_for_protocol("p2p")
    except Exception:  # noqa: BLE001 - missing component
        node_id = None
    if not node_id or not is_node_id(node_id):
        raise AddressError(
            f"{address!r} lacks a /p2p/<node id> part; bootstrap addresses look like "
            "/ip4/192.0.2.7/tcp/4701/p2p/12D3KooW…"
        )
    return node_id, str(addr.decapsulate(multiaddr.Multiaddr(f"/p2p/{node_id}")))


def parse_exchange(data: bytes, limit: int) -> list[tuple[NodeId, list[str]]]:
    """Validate a `peers` answer: a list of {"id": node id, "addrs": [multiaddr, …]}; raises BadRequest."""
    try:
        entries = decode(data, max_size=limit * (MAX_ADDRESSES_PER_PEER + 1) * MAX_ADDRESS_CHARS)
    except EncodingError as exc:
        raise BadRequest(f"peer list is not msgpack: {exc}") from exc
    if not isinstance(entries, list) or len(entries) > limit:
        raise BadRequest(f"peer list must be a list of at most {limit} entries")
    out = []
    for entry in entries:
        if not isinstance(entry, dict) or not is_node_id(entry.get("id")):
            raise BadRequest("peer entry needs an 'id' that is a node id")
        addrs = entry.get("addrs")
        if not isinstance(addrs, list) or len(addrs) > MAX_ADDRESSES_PER_PEER:
            raise BadRequest(f"peer entry needs 'addrs', a list of at most {MAX_ADDRESSES_PER_PEER}")
        good = []
        for a in addrs:
            if not isinstance(a, str) or len(a) > MAX_ADDRESS_CHARS:
                raise BadRequest("addresses must be strings of at most 256 characters")
            try:
                multiaddr.Multiaddr(a)
            except Exception:  # noqa: BLE001 - skip an address we cannot parse, keep the rest
                continue
            good.append(a)
        out.append((entry["id"], good))
    return out


class Discovery:
    def __init__(self, mesh: MeshContext, rng: random.Random) -> None:
        self._mesh = mesh
        self._rng = rng
        # node id → when the dial in flight started. py-libp2p's TCP dial can outlive our timeout (a
        # connect to a blackholed route runs to the kernel's SYN retries, ~1 min); such a dial no
        # longer blocks a fresh attempt once it is older than dial_timeout_s.
        self._dialing: dict[NodeId, float] = {}
        self._dial_done: dict[NodeId, trio.Event] = {}  # set when the dial in flight ends (one per peer dialled)
        self._ping_failures: dict[NodeId, int] = {}  # consecutive failed pings per peer
        self._bootstrap: list[tuple[NodeId, str]] = [split_p2p_address(a) for a in mesh.config.bootstrap]

    # -- peer exchange -------------------------------------------------------------------------

    async def serve_peers(self, peer: NodeId, request: bytes) -> bytes:
        mesh = self._mesh
        entries = [{"id": mesh.node_id, "addrs": mesh.own_addresses()}]
        for rec in mesh.book.admitted():
            if rec.node_id != peer and rec.addresses and len(entries) < mesh.config.max_exchanged_peers:
                entries.append({"id": rec.node_id, "addrs": list(rec.addresses)})
        return canonical(entries)

    async def exchange_with(self, peer: NodeId) -> None:
        mesh = self._mesh
        try:
            answer = await mesh.request(peer, RPC_PEERS, b"", timeout_s=mesh.config.dial_timeout_s)
            learned = parse_exchange(answer, mesh.config.max_exchanged_peers)
        except RequestError as exc:
            mesh.log.debug("mesh.exchange.failed", peer=peer, error=str(exc))
            return
        except BadRequest as exc:
            mesh.counters.garbage += 1
            mesh.log.info("mesh.exchange.garbage", peer=peer, error=str(exc))
            return
        for node_id, addrs in learned:
            if node_id != mesh.node_id:
                mesh.add_addresses(node_id, addrs)

    async def exchange_loop(self) -> None:
        mesh = self._mesh
        while True:
            await trio.sleep(mesh.config.exchange_interval_s * self._rng.uniform(0.8, 1.2))
            admitted = mesh.book.admitted()
            if admitted:
                await self.exchange_with(self._rng.choice(admitted).node_id)

    # -- keeping connections -------------------------------------------------------------------

    async def maintain_loop(self) -> None:
        mesh = self._mesh
        for node_id, addr in self._bootstrap:
            mesh.add_addresses(node_id, [addr])
        while True:
            await self.maintain_once()
            await trio.sleep(mesh.config.maintenance_interval_s)

    async def maintain_once(self) -> None:
        mesh, cfg = self._mesh, self._mesh.config
        now = trio.current_time()
        connected = sum(1 for r in mesh.book.records() if r.connected)
        admitted = len(mesh.book.admitted())
        room = min(cfg.target_connections - admitted, cfg.max_connections - connected)
        if room <= 0:
            return
        bootstrap_ids = {node_id for node_id, _ in self._bootstrap}
        candidates = [
            r
            for r in mesh.book.records()
            if r.member
            and not r.connected
            and r.addresses
            and not self._dial_in_flight(r.node_id, now)
            and mesh.redial.due(r.node_id, now)
            and not mesh.gate.is_blocked(r.node_id, now)
        ]
        candidates.sort(key=lambda r: (r.node_id not in bootstrap_ids, self._rng.random()))
        for rec in candidates[:room]:  # in the mesh's nursery: one slow dial never holds up the others
            mesh.spawn(self.dial, rec.node_id, list(rec.addresses))

    def _dial_in_flight(self, node_id: NodeId, now: float) -> bool:
        started = self._dialing.get(node_id)
        return started is not None and now - started < self._mesh.config.dial_timeout_s

    async def wait_dial(self, node_id: NodeId) -> None:
        """Return when the dial of node_id in flight (if any) has ended, or is older than the dial timeout."""
        done = self._dial_done.get(node_id)
        started = self._dialing.get(node_id)
        if done is None or started is None:
            return
        with trio.move_on_at(started + self._mesh.config.dial_timeout_s):
            await done.wait()

    async def dial(self, node_id: NodeId, addrs: list[str]) -> bool:
        mesh = self._mesh
        host = mesh.libp2p_host
        now = trio.current_time()
        if host is None or self._dial_in_flight(node_id, now) or node_id == mesh.node_id:
            return False
        self._dialing[node_id] = now
        done = self._dial_done[node_id] = trio.Event()
        mesh.counters.dial_attempts += 1
        error = "timeout"
        try:
            maddrs = [multiaddr.Multiaddr(a) for a in addrs]
            with trio.move_on_after(mesh.config.dial_timeout_s):
                await host.connect(Libp2pPeerInfo(ID.from_base58(node_id), maddrs))
                return True
        except (BaseLibp2pError, OSError, ValueError) as exc:
            error = f"{type(exc).__name__}: {exc}"
        finally:
            if self._dialing.get(node_id) == now:  # not if a later attempt replaced ours
                del self._dialing[node_id]
                del self._dial_done[node_id]
            done.set()
        mesh.counters.dial_failures += 1
        delay = mesh.redial.failed(node_id, trio.current_time())
        mesh.log.debug("mesh.dial.failed", peer=node_id, error=error, retry_in_s=round(delay, 2))
        return False

    # -- latency -------------------------------------------------------------------------------

    async def ping_loop(self) -> None:
        mesh = self._mesh
        while True:
            async with trio.open_nursery() as nursery:
                for rec in mesh.book.records():
                    if rec.connected:
                        nursery.start_soon(self.ping, rec.node_id)
            await trio.sleep(mesh.config.ping_interval_s)

    async def ping(self, node_id: NodeId) -> float | None:
        mesh = self._mesh
        host = mesh.libp2p_host
        if host is None:
            return None
        with trio.move_on_after(mesh.config.ping_timeout_s):
            try:
                stream = await open_stream(host, ID.from_base58(node_id), [PING_PROTOCOL])
                started = trio.current_time()
                await perform_ping_roundtrip(stream)
                rtt_ms = (trio.current_time() - started) * 1000
                await stream.close()
            except (BaseLibp2pError, ValueError) as exc:
                mesh.log.debug("mesh.ping.failed", peer=node_id, error=str(exc))
                self._ping_failed(node_id)
                return None
            rec = mesh.book.get(node_id)
            rec.latency_ms = round(rtt_ms, 3)
            rec.last_seen = mesh.wall_now()
            self._ping_failures.pop(node_id, None)
            return rec.latency_ms
        self._ping_failed(node_id)
        return None

    def _ping_failed(self, node_id: NodeId) -> None:
        """Count a failed ping; after `ping_failures_to_drop` in a row, drop the peer as unresponsive."""
        mesh = self._mesh
        failures = self._ping_failures.get(node_id, 0) + 1
        self._ping_failures[node_id] = failures
        if failures < mesh.config.ping_failures_to_drop:
            return
        rec = mesh.book.get(node_id)
        window_s = mesh.config.ping_failures_to_drop * (mesh.config.ping_interval_s + mesh.config.ping_timeout_s)
        if rec.last_seen is not None and mesh.wall_now() - rec.last_seen < window_s:
            return  # slow pings, but it talked to us (rpc) recently: busy, not gone
        self._ping_failures.pop(node_id, None)
        if not rec.connected:
            return
        mesh.log.warning("mesh.peer.unresponsive", peer=node_id, failed_pings=failures)
        mesh.counters.unresponsive += 1
        rec.connected = rec.admitted = False  # now: the close below may take a while on a dead link
        rec.latency_ms = None
        mesh.spawn(mesh.admission.disconnect, node_id)

    # -- mDNS ----------------------------------------------------------------------------------

    async def mdns_loop(self) -> None:
        """Feed peers found by py-libp2p's mDNS (callbacks from a zeroconf thread) into the book."""
        from libp2p.discovery.events.peerDiscovery import peerDiscovery

        mesh = self._mesh
        token = trio.lowlevel.current_trio_token()
        send, receive = trio.open_memory_channel[tuple[str, list[str]]](256)

        def found(info: Libp2pPeerInfo) -> None:  # runs in zeroconf's thread
            item = (info.peer_id.to_base58(), [str(a) for a in info.addrs])

            def deliver() -> None:
                try:
                    send.send_nowait(item)
                except (trio.WouldBlock, trio.ClosedResourceError):
                    pass  # a burst of announcements: the next one will do

            try:
                token.run_sync_soon(deliver)
            except trio.RunFinishedError:
                pass  # the daemon is shutting down

        peerDiscovery.register_peer_discovered_handler(found)
        try:
            async for node_id, addrs in receive:
                if node_id != mesh.node_id and is_node_id(node_id):
                    mesh.add_addresses(node_id, addrs)
        finally:
            peerDiscovery.unregister_peer_discovered_handler(found)
