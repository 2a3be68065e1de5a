"""Mesh: the one libp2p host of a daemon, admitting only peers that prove network membership.

    mesh = Mesh(MeshConfig(...), node_key, network_id, secret)
    async with trio.open_nursery() as nursery:
        await nursery.start(mesh.run)          # returns once listening
        await mesh.connect("/ip4/…/tcp/…/p2p/12D3KooW…")
        answer = await mesh.request(peer, "snapshot", b"…", timeout_s=10)

or, in tests, `async with open_mesh(...) as mesh:`. Cancelling `run` closes the host.

TCP + Noise + Yamux, identify and ping (py-libp2p's defaults), gossipsub via `mycelium.mesh.gossip`,
request/response via `mycelium.mesh.rpc`, discovery via `mycelium.mesh.discovery`. Every new
connection runs the membership handshake (`mycelium.mesh.membership`) on its own protocol; every
mycelium protocol handler calls `admit_stream()` first.
"""

from __future__ import annotations

import random
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING, Any, Callable

import multiaddr
import trio
from libp2p import new_host
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.x25519 import create_new_key_pair as create_x25519_key_pair
from libp2p.network.config import ConnectionConfig
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import Yamux
from libp2p.tools.anyio_service import background_trio_service

import mycelium.mesh.libp2p_setup  # noqa: F401,I001 - before any use of libp2p: fixes its logging
from mycelium.identity import SECRET_SIZE, NodeId, NodeKey
from mycelium.observability.logs import get_logger
from mycelium.mesh.admission import Admission, ConnectionWatcher
from mycelium.mesh.config import MeshConfig
from mycelium.mesh.counters import MeshCounters
from mycelium.mesh.datachannel import DataChannels, TlsChannel
from mycelium.mesh.discovery import Discovery, split_p2p_address
from mycelium.mesh.gossip import Gossip, GossipMessage, build_pubsub
from mycelium.mesh.inbound import InboundGuard
from mycelium.mesh.membership import FailureReason, Offense, PeerGate, RateLimiter
from mycelium.mesh.peers import PeerBook, PeerInfo
from mycelium.mesh.ports import advertised_addresses, claim_listen_addresses, interface_addresses
from mycelium.mesh.protocols import RPC_PEERS, NetworkProtocols
from mycelium.mesh.redial import RedialSchedule
from mycelium.mesh.rpc import Handler, RequestError, RequestResponse
from mycelium.mesh.streams import MessageStreams, StreamHandler

if TYPE_CHECKING:
    from mycelium.mesh.routing import PeerRouting


class MeshError(Exception):
    """The mesh cannot do what was asked; the message says why and what to try."""


class AdmissionFailed(MeshError):
    """A peer we connected to did not pass the membership handshake."""

    def __init__(self, node_id: NodeId, reason: str) -> None:
        super().__init__(
            f"peer {node_id} was refused: {reason} (wrong_network/bad_proof/refused_by_peer mean it belongs "
            "to another network or holds another secret; check the join token)"
        )
        self.node_id = node_id
        self.reason = reason


class Mesh:
    # what the network's failures raise from request/send_messages/publish (shell.transport.Transport);
    # libp2p errors inside are wrapped into these
    request_errors: tuple[type[Exception], ...] = (RequestError, MeshError)

    def __init__(
        self,
        config: MeshConfig,
        node_key: NodeKey,
        network_id: str,
        secret: bytes,
        *,
        rng: random.Random | None = None,
        secret_generation: int = 0,
    ) -> None:
        if len(secret) != SECRET_SIZE:
            raise MeshError(f"the network secret has {SECRET_SIZE} bytes, got {len(secret)}")
        self.config = config
        self.node_id: NodeId = node_key.node_id
        self.network_id = network_id
        self.protocols = NetworkProtocols(network_id)
        self.counters = MeshCounters()
        self.gate = PeerGate(config.gate)
        self.limiter = RateLimiter(config.inbound_rate)
        self.book = PeerBook()
        self.log = get_logger("mycelium.mesh").bind(network=self.protocols.short_id)
        self._key_pair = create_new_key_pair(node_key.seed())
        self._rng = rng or random.Random(secrets.randbits(64))
        self.redial = RedialSchedule(
            base_s=config.redial_base_s, max_s=config.redial_max_s, jitter=config.redial_jitter, rng=self._rng
        )
        self.admission = Admission(self, secret, secret_generation)
        self.inbound = InboundGuard(self, config.max_connections)
        self.libp2p_host: Any = None
        self._nursery: trio.Nursery | None = None
        self._gossip: Gossip | None = None
        self._routing: PeerRouting | None = None
        self._interfaces: tuple[list[str], list[str]] | None = None  # cached interface addresses
        self.rpc = RequestResponse(self)
        self.streams = MessageStreams(self)
        self.discovery = Discovery(self, self._rng)
        self.rpc.register(RPC_PEERS, self.discovery.serve_peers)
        self.channels = DataChannels(self, node_key)
        self._admitted_listeners: list[Callable[[NodeId], None]] = []

    # -- lifecycle -----------------------------------------------------------------------------

    @property
    def nursery(self) -> trio.Nursery:
        if self._nursery is None:
            raise MeshError("the mesh is not running; start it with `await nursery.start(mesh.run)`")
        return self._nursery

    def _build_host(self, listen: list[str]) -> Any:
        cfg = self.config
        noise = NoiseTransport(
            libp2p_keypair=self._key_pair, noise_privkey=create_x25519_key_pair().private_key, early_data=None
        )
        connections = ConnectionConfig(
            max_connections=cfg.max_connections,
            min_connections=0,  # no auto-connect to random peerstore entries: we dial members ourselves
            low_watermark=0,
            high_watermark=cfg.max_connections,
            max_connections_per_peer=2,
            dial_timeout=cfg.dial_timeout_s,
            outbound_stream_protocol_negotiation_timeout=cfg.negotiate_timeout_s,
            inbound_stream_protocol_negotiation_timeout=cfg.negotiate_timeout_s,
            enable_health_monitoring=False,  # we ping ourselves (latency_ms in peers())
            inbound_upgrade_timeout=cfg.handshake_timeout_s,  # Noise + Yamux of an inbound connection
        )
        host = new_host(
            key_pair=self._key_pair,
            sec_opt={NOISE_PROTOCOL_ID: noise},
            muxer_opt={YAMUX_PROTOCOL_ID: Yamux},
            listen_addrs=[multiaddr.Multiaddr(a) for a in listen],
            enable_mDNS=cfg.mdns,
            enable_upnp=False,
            enable_autotls=False,
            enable_metrics=False,
            bootstrap=None,  # py-libp2p's bootstrap dials without admission; ours is in Discovery
            negotiate_timeout=cfg.negotiate_timeout_s,
            enable_quic=False,
            psk=None,
            connection_config=connections,
            enable_tcp=True,
            enable_websocket=False,
        )
        # py-libp2p's AutoConnector dials any peerstore entry until (low + high watermark) / 2
        # connections exist, ignoring admission and blocks; membership-aware dialling is ours.
        auto_connector = host.get_network().auto_connector
        auto_connector.start = _auto_connector_disabled
        self.inbound.install(host.get_network())  # slots given back on close (see mesh/inbound.py)
        return host

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen, admit, discover and serve until cancelled; `started` once listening."""
        if self.libp2p_host is not None:
            raise MeshError("this Mesh already ran; build a new one to start again")
        listen, warnings = claim_listen_addresses(self.config.listen, fallback=self.config.port_fallback)
        for warning in warnings:
            self.log.warning("mesh.listen.fallback", detail=warning)
        host = self.libp2p_host = self._build_host(listen)
        _shorten_negative_dial_cache(host)
        router, pubsub = build_pubsub(host, self.config.gossip)
        self._gossip = Gossip(self, router, pubsub)
        if self.config.dht:
            from mycelium.mesh.routing import PeerRouting  # Kademlia (~1.7 MiB, 0.1 s): only when switched on

            self._routing = PeerRouting(self)
        host.get_network().register_notifee(ConnectionWatcher(self))
        host.set_stream_handler(self.protocols.membership, self.admission.on_membership_stream)
        self.rpc.install(host)
        self.streams.install(host)
        try:
            async with host.run([multiaddr.Multiaddr(a) for a in listen]):
                try:
                    async with AsyncExitStack() as services:
                        await services.enter_async_context(background_trio_service(pubsub))
                        await services.enter_async_context(background_trio_service(router))
                        if self._routing is not None:
                            await services.enter_async_context(background_trio_service(self._routing.dht))
                        await pubsub.wait_until_ready()
                        async with trio.open_nursery() as nursery:
                            self._nursery = nursery
                            await nursery.start(self.channels.run)
                            nursery.start_soon(self.discovery.maintain_loop)
                            if self.config.peer_exchange:
                                nursery.start_soon(self.discovery.exchange_loop)
                            nursery.start_soon(self.discovery.ping_loop)
                            if self.config.mdns:
                                nursery.start_soon(self.discovery.mdns_loop)
                            self.log.info("mesh.listening", node=self.node_id, addresses=self.listen_addresses())
                            task_status.started()
                            try:
                                await trio.sleep_forever()
                            finally:
                                # Close the host here, before this nursery waits for its children:
                                # one can be stuck for good in a shielded libp2p write (py-libp2p
                                # resets a failed new stream under CancelScope(shield=True) with no
                                # time limit), and once the peer stops reading, only closing the
                                # socket ends it (bench pq hung so, 2026-12-02). See _close_host.
                                with trio.CancelScope(shield=True):
                                    await self._close_host(host)
                finally:
                    # py-libp2p closes its listeners and connections in `finally` blocks that our
                    # cancellation interrupts, leaving the TCP listener open (a zombie that accepts
                    # and drops dials). Close explicitly, shielded, with a bound.
                    with trio.CancelScope(shield=True), trio.move_on_after(self.config.close_timeout_s):
                        await host.close()
        finally:
            self._nursery = None
            for rec in self.book.records():
                rec.connected = rec.admitted = False

    async def _close_host(self, host: Any) -> None:
        """host.close(); then every socket it left open, or after close_timeout_s those it has not
        closed yet. The bound is a timer beside the close, not a cancel scope around it: py-libp2p
        shields parts of its own close, which no outer timeout interrupts, but a closed socket fails
        them. The sockets are taken first: close() forgets its connections even where it could not
        close them (seen: one with a write stuck on it stayed open)."""
        sockets = connection_sockets(host)
        aborted = 0

        async def abort_later() -> None:
            nonlocal aborted
            await trio.sleep(self.config.close_timeout_s)
            aborted += close_sockets(sockets)

        async with trio.open_nursery() as closing:
            closing.start_soon(abort_later)
            with trio.move_on_after(2 * self.config.close_timeout_s):  # where close is not shielded
                await host.close()
            closing.cancel_scope.cancel()
        aborted += close_sockets(sockets)
        if aborted:
            self.log.warning("mesh.close.aborted", connections=aborted)

    # -- addresses and peers -------------------------------------------------------------------

    def listen_addresses(self) -> list[str]:
        """Full multiaddrs others can dial, each ending in /p2p/<our node id>."""
        return [f"{a}/p2p/{self.node_id}" for a in self.own_addresses()]

    def own_addresses(self) -> list[str]:
        """Our dialable addresses without /p2p: `config.announce` if set, else the bound addresses
        with wildcards (0.0.0.0, ::) replaced by this machine's interface addresses."""
        if self.config.announce:
            return list(self.config.announce)
        if self.libp2p_host is None:
            return []
        suffix = f"/p2p/{self.node_id}"
        bound = []
        for a in self.libp2p_host.get_addrs():
            text = str(a)
            bound.append(text[: -len(suffix)] if text.endswith(suffix) else text)
        if not any(b.startswith(("/ip4/0.0.0.0/", "/ip6/::/")) for b in bound):
            return bound
        if self._interfaces is None:
            self._interfaces = interface_addresses()
        return advertised_addresses(bound, *self._interfaces)

    def peers(self) -> list[PeerInfo]:
        """Every peer we know: connected or not, admitted or not, blocked or not."""
        now, wall = trio.current_time(), time.time()
        out = []
        for rec in self.book.records():
            until = self.gate.blocked_until(rec.node_id)
            rec.blocked_until = wall + (until - now) if until is not None and until > now else None
            out.append(rec.info())
        return out

    def admitted_peers(self) -> list[NodeId]:
        return [r.node_id for r in self.book.admitted()]

    def add_addresses(self, node_id: NodeId, addresses: list[str]) -> None:
        """Addresses of a member learned elsewhere (Latent spores, peer exchange): dialled when needed."""
        if node_id == self.node_id:
            return
        rec = self.book.get(node_id)
        rec.member = True
        if rec.add_addresses(list(addresses)) and not rec.connected:
            self.redial.new_address(node_id)  # a moved peer is dialled at once, not after its backoff

    async def connect(self, address: str) -> NodeId:
        """Dial a full multiaddr (…/p2p/<id>) and wait for the membership handshake.

        Raises MeshError if the dial fails, AdmissionFailed if the peer is refused."""
        node_id, addr = split_p2p_address(address)
        if node_id == self.node_id:
            raise MeshError(f"{address} is this node's own address")
        self.add_addresses(node_id, [addr])
        if self.gate.is_blocked(node_id, trio.current_time()):
            raise MeshError(f"peer {node_id} is blocked after failing ({self.book.get(node_id).failure}); retry later")
        event = self.admission.concluded_event(node_id)
        self.book.get(node_id).failure = None
        if not await self.discovery.dial(node_id, [addr]):
            await self.discovery.wait_dial(node_id)  # the mesh's own dial was in flight: its outcome is ours
            if not self.book.get(node_id).connected and not self.book.get(node_id).admitted:
                raise MeshError(f"could not connect to {address}; is the node up and the port reachable?")
        with trio.move_on_after(self.config.handshake_timeout_s + 1):
            while not self.book.get(node_id).admitted:
                await event.wait()
                rec = self.book.get(node_id)
                if rec.failure is not None and not rec.admitted:
                    raise AdmissionFailed(node_id, rec.failure)
                if not rec.connected and not rec.admitted:
                    raise AdmissionFailed(node_id, "disconnected (the peer may have blocked us)")
                event = self.admission.concluded_event(node_id)
            return node_id
        raise AdmissionFailed(node_id, FailureReason.TIMEOUT.value)

    # -- rpc and gossip (delegates) ------------------------------------------------------------

    def register_handler(self, name: str, handler: Handler) -> str:
        """Serve request/response `name`: `async handler(peer, request: bytes) -> bytes`."""
        return self.rpc.register(name, handler)

    async def request(self, node_id: NodeId, name: str, payload: bytes, timeout_s: float | None = None) -> bytes:
        """Send `payload` to `node_id`'s `name` handler on a new stream; its answer (or RequestError)."""
        return await self.rpc.request(node_id, name, payload, timeout_s)

    def register_stream_handler(self, name: str, handler: StreamHandler) -> str:
        """Serve one-way message stream `name`: `async handler(peer, message: bytes)` per message, in order."""
        return self.streams.register(name, handler)

    async def send_messages(self, node_id: NodeId, name: str, messages: list[bytes], timeout_s: float = 5.0) -> None:
        """Write `messages` to `node_id`'s `name` stream (kept open between calls) in one write."""
        await self.streams.send(node_id, name, messages, timeout_s)

    async def publish(self, topic_name: str, data: bytes) -> None:
        """Gossip `data` (small: ≤ gossip.max_message_bytes - 1 KiB) on topic `topic_name`."""
        if self._gossip is None:
            raise MeshError("the mesh is not running")
        await self._gossip.publish(topic_name, data)

    @asynccontextmanager
    async def subscribe(self, topic_name: str) -> AsyncIterator[trio.MemoryReceiveChannel[GossipMessage]]:
        """`async with mesh.subscribe("latent") as messages: async for m in messages: …` (GossipMessage)."""
        if self._gossip is None:
            raise MeshError("the mesh is not running")
        async with self._gossip.subscribe(topic_name) as channel:
            yield channel

    async def find_peer(self, node_id: NodeId, timeout_s: float = 10.0) -> list[str]:
        """Dialable addresses of `node_id`: what we know, else a DHT lookup (when `dht` is on).
        Found addresses are remembered, so the maintenance loop can dial the peer."""
        rec = self.book.find(node_id)
        if rec is not None and rec.addresses:
            return list(rec.addresses)
        if self._routing is None:
            return []
        addrs = await self._routing.find_peer(node_id, timeout_s)
        if addrs:
            self.add_addresses(node_id, addrs)
        return addrs

    async def open_channel(self, node_id: NodeId, purpose: str, *, stripes: int | None = None) -> TlsChannel:
        """A data channel to an admitted member (mycelium.mesh.channel); ChannelRefused if it is not one."""
        return await self.channels.open_channel(node_id, purpose, stripes=stripes)

    def serve_channels(self, purpose: str, handler: Any) -> None:
        """Run `handler(node_id, channel)` for each inbound channel of `purpose` (closed when it returns)."""
        self.channels.serve_channels(purpose, handler)

    async def rotate_secret(self, generation: int, secret: bytes, *, is_member: Any, overlap_s: float) -> None:
        """Rekey: prove `secret` from now on. Peers that are no longer members are disconnected at
        once; members still on the previous secret are accepted for `overlap_s`, then their old
        connections are closed (they reconnect with the new secret)."""
        self.admission.rotate(generation, secret, is_member=is_member, overlap_s=overlap_s)
        self.log.info("mesh.secret.rotated", generation=generation, overlap_s=overlap_s)
        for node in self.admitted_peers():
            if not is_member(node):
                self.admission._revoke(node)
                await self.admission.disconnect(node)
        await trio.sleep(overlap_s)
        for node in self.admission.peers_on_old_secret():
            self.admission._revoke(node)
            await self.admission.disconnect(node)

    async def wait_admitted(self, node_id: NodeId) -> None:
        """Return once `node_id` is admitted (wrap in a timeout)."""
        await self.admission.wait_admitted(node_id)

    async def admit_stream(self, node_id: NodeId) -> bool:
        """True if `node_id` may use a mycelium protocol (see Admission.admit_stream)."""
        return await self.admission.admit_stream(node_id)

    def offend(self, node_id: NodeId, offense: Offense) -> None:
        self.admission.offend(node_id, offense)

    # -- admission -----------------------------------------------------------------------------

    def wall_now(self) -> float:
        return time.time()

    def spawn(self, fn: Any, *args: Any) -> None:
        """Start a mesh task in the mesh's own nursery (dropped when the mesh is not running)."""
        if self._nursery is not None:
            self._nursery.start_soon(fn, *args)

    def on_peer_admitted(self, listener: Callable[[NodeId], None]) -> None:
        """Call `listener(node_id)` each time a peer is first admitted (synchronous, must not block)."""
        self._admitted_listeners.append(listener)

    async def on_admitted(self, peer_id: Any) -> None:
        """A peer just passed the handshake: tell the listeners, open gossip to it and exchange peer lists."""
        for listener in self._admitted_listeners:
            try:
                listener(peer_id.to_base58())
            except Exception:  # a listener's bug must not stop admission
                self.log.exception("mesh.admitted_listener_failed")
        if self._gossip is not None:
            await self._gossip.add_admitted_peer(peer_id)
        if self._routing is not None:
            await self._routing.add_member(peer_id)
        if self.config.peer_exchange:
            self.spawn(self.discovery.exchange_with, peer_id.to_base58())

async def _auto_connector_disabled() -> None:
    await trio.lowlevel.checkpoint()  # leaves AutoConnector._started False: it never runs


@asynccontextmanager
async def open_mesh(
    config: MeshConfig, node_key: NodeKey, network_id: str, secret: bytes, **kwargs: Any
) -> AsyncIterator[Mesh]:
    """Run a Mesh for the duration of the block (tests, tools); closed and awaited on exit."""
    mesh = Mesh(config, node_key, network_id, secret, **kwargs)
    async with trio.open_nursery() as nursery:
        await nursery.start(mesh.run)
        try:
            yield mesh
        finally:
            nursery.cancel_scope.cancel()


def connection_sockets(host: Any) -> list[Any]:
    """The TCP socket under every connection `host` has now."""
    found = []
    for conns in list(host.get_network().connections.values()):
        for conn in list(conns) if isinstance(conns, (list, tuple, set)) else [conns]:
            sock = _tcp_socket(conn)
            if sock is not None:
                found.append(sock)
    return found


def close_sockets(sockets: list[Any]) -> int:
    """Close those still open (no goodbye on the wire); how many. A task blocked writing to one gets
    ClosedResourceError at once (trio notifies waiters), which py-libp2p's TCP stream swallows."""
    closed = 0
    for sock in sockets:
        if sock.fileno() != -1:
            sock.close()
            closed += 1
    return closed


def _tcp_socket(conn: Any) -> Any:
    """The trio socket under a py-libp2p connection (swarm conn → Yamux → secure session → Noise
    reader/writer → raw connection → TrioTCPStream → trio.SocketStream), or None if it is not TCP."""
    obj = conn
    for _ in range(10):
        if isinstance(obj, trio.SocketStream):
            return obj.socket
        obj = next((getattr(obj, name) for name in ("muxed_conn", "secured_conn", "conn", "read_writer", "stream")
                    if getattr(obj, name, None) is not None), None)
        if obj is None:
            return None
    return None


# py-libp2p 0.8.1's swarm refuses to dial a peer for 60 s after a dial to it failed (a private
# "negative cache", not configurable). Our redial schedule already backs off with jitter; with both,
# a node cut off for a few seconds stayed unreachable for a minute after the network healed.
NEGATIVE_DIAL_CACHE_S = 1.0


def _shorten_negative_dial_cache(host: Any) -> None:
    cache = getattr(host.get_network(), "_negative_peer_cache", None)
    if cache is not None and hasattr(cache, "_ttl"):
        cache._ttl = NEGATIVE_DIAL_CACHE_S
    else:  # another py-libp2p version: nothing to shorten (logged once, for whoever upgrades)
        get_logger("mycelium.mesh").info("mesh.libp2p.no_negative_dial_cache")
