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

import logging
import os
import random
import secrets
from collections import Counter
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import libp2p  # noqa: F401 - imported first: it rewires the `libp2p` logger, which we then reset
import multiaddr
import trio
from libp2p import new_host
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.x25519 import create_new_key_pair as create_x25519_key_pair
from libp2p.exceptions import BaseLibp2pError
from libp2p.network.config import ConnectionConfig
from libp2p.peer.id import ID
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import Yamux
from libp2p.tools.anyio_service import background_trio_service

from mycelium.identity import SECRET_SIZE, NodeId, NodeKey
from mycelium.logs import get_logger, tame_library_loggers
from mycelium.mesh.config import MeshConfig
from mycelium.mesh.counters import MeshCounters
from mycelium.mesh.discovery import Discovery, split_p2p_address
from mycelium.mesh.framing import FrameError, read_frame, write_frame
from mycelium.mesh.gossip import Gossip, GossipMessage, build_pubsub
from mycelium.mesh.membership import (
    MAX_HANDSHAKE_MESSAGE,
    FailureReason,
    Handshake,
    HandshakeState,
    Offense,
    PeerGate,
    RateLimiter,
    ReplayGuard,
    Role,
)
from mycelium.mesh.peers import PeerBook, PeerInfo
from mycelium.mesh.ports import claim_listen_addresses
from mycelium.mesh.protocols import RPC_PEERS, NetworkProtocols
from mycelium.mesh.redial import RedialSchedule
from mycelium.mesh.rpc import Handler, RequestResponse

tame_library_loggers()
# These py-libp2p loggers report, at ERROR, conditions the mesh expects, handles and counts itself
# (a redial to a node that is down, a plain libp2p peer declining our protocols); keep them quiet
# unless LIBP2P_DEBUG is set for a debugging session.
if not os.environ.get("LIBP2P_DEBUG"):
    for _name in (
        "libp2p.transport.tcp.tcp",
        "libp2p.protocol_muxer.multiselect_client",
        "libp2p.host.basic_host",
    ):
        logging.getLogger(_name).setLevel(logging.CRITICAL)

TRANSIENT_FAILURES = frozenset({FailureReason.STREAM_ERROR, FailureReason.TIMEOUT})  # redialled, not blocked
BLOCKED_GRACE_S = 0.5  # a blocked peer's connection lives this long, so its handshake hears "blocked"


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


class _ConnectionWatcher:
    """libp2p network notifee: tells the mesh about connections opening and closing."""

    def __init__(self, mesh: Mesh) -> None:
        self._mesh = mesh

    async def connected(self, network: Any, conn: Any) -> None:
        self._mesh._on_connected(conn)
        await trio.lowlevel.checkpoint()

    async def disconnected(self, network: Any, conn: Any) -> None:
        self._mesh._on_disconnected(conn)
        await trio.lowlevel.checkpoint()

    async def opened_stream(self, network: Any, stream: Any) -> None:
        await trio.lowlevel.checkpoint()

    async def closed_stream(self, network: Any, stream: Any) -> None:
        await trio.lowlevel.checkpoint()

    async def listen(self, network: Any, maddr: Any) -> None:
        await trio.lowlevel.checkpoint()

    async def listen_close(self, network: Any, maddr: Any) -> None:
        await trio.lowlevel.checkpoint()


class Mesh:
    def __init__(
        self,
        config: MeshConfig,
        node_key: NodeKey,
        network_id: str,
        secret: bytes,
        *,
        rng: random.Random | None = None,
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
        self._secret = secret
        self._key_pair = create_new_key_pair(node_key.seed())
        self._rng = rng or random.Random(secrets.randbits(64))
        self.redial = RedialSchedule(
            base_s=config.redial_base_s, max_s=config.redial_max_s, jitter=config.redial_jitter, rng=self._rng
        )
        self._replay = ReplayGuard()
        self._handshaking: Counter[NodeId] = Counter()  # handshakes running per peer
        self._admitted_events: dict[NodeId, trio.Event] = {}
        self._connected_at: dict[NodeId, float] = {}
        self._concluded: dict[NodeId, trio.Event] = {}
        self.libp2p_host: Any = None
        self._nursery: trio.Nursery | None = None
        self._gossip: Gossip | None = None
        self.rpc = RequestResponse(self)
        self.discovery = Discovery(self, self._rng)
        self.rpc.register(RPC_PEERS, self.discovery.serve_peers)

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
        return host

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen, admit, discover and serve until cancelled; `started` once listening."""
        if self.libp2p_host is not None:
            raise MeshError("this Mesh already ran; build a new one to start again")
        listen, warnings = claim_listen_addresses(self.config.listen, fallback=self.config.port_fallback)
        for warning in warnings:
            self.log.warning("mesh.listen.fallback", detail=warning)
        host = self.libp2p_host = self._build_host(listen)
        router, pubsub = build_pubsub(host, self.config.gossip)
        self._gossip = Gossip(self, router, pubsub)
        host.get_network().register_notifee(_ConnectionWatcher(self))
        host.set_stream_handler(self.protocols.membership, self._on_membership_stream)
        self.rpc.install(host)
        try:
            async with host.run([multiaddr.Multiaddr(a) for a in listen]):
                try:
                    async with background_trio_service(pubsub), background_trio_service(router):
                        await pubsub.wait_until_ready()
                        async with trio.open_nursery() as nursery:
                            self._nursery = nursery
                            nursery.start_soon(self.discovery.maintain_loop)
                            nursery.start_soon(self.discovery.exchange_loop)
                            nursery.start_soon(self.discovery.ping_loop)
                            if self.config.mdns:
                                nursery.start_soon(self.discovery.mdns_loop)
                            self.log.info("mesh.listening", node=self.node_id, addresses=self.listen_addresses())
                            task_status.started()
                            await trio.sleep_forever()
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

    # -- addresses and peers -------------------------------------------------------------------

    def listen_addresses(self) -> list[str]:
        """Full multiaddrs others can dial, each ending in /p2p/<our node id>."""
        return [f"{a}/p2p/{self.node_id}" for a in self.own_addresses()]

    def own_addresses(self) -> list[str]:
        if self.libp2p_host is None:
            return []
        suffix = f"/p2p/{self.node_id}"
        out = []
        for a in self.libp2p_host.get_addrs():
            text = str(a)
            out.append(text[: -len(suffix)] if text.endswith(suffix) else text)
        return out

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
        rec.add_addresses(list(addresses))

    async def connect(self, address: str) -> NodeId:
        """Dial a full multiaddr (…/p2p/<id>) and wait for the membership handshake.

        Raises MeshError if the dial fails, AdmissionFailed if the peer is refused."""
        node_id, addr = split_p2p_address(address)
        if node_id == self.node_id:
            raise MeshError(f"{address} is this node's own address")
        self.add_addresses(node_id, [addr])
        if self.gate.is_blocked(node_id, trio.current_time()):
            raise MeshError(f"peer {node_id} is blocked after failing ({self.book.get(node_id).failure}); retry later")
        event = self._concluded.setdefault(node_id, trio.Event())
        self.book.get(node_id).failure = None
        if not await self.discovery.dial(node_id, [addr]) and not self.book.get(node_id).connected:
            raise MeshError(f"could not connect to {address}; is the node up and the port reachable?")
        with trio.move_on_after(self.config.handshake_timeout_s + 1):
            while not self.book.get(node_id).admitted:
                await event.wait()
                rec = self.book.get(node_id)
                if rec.failure is not None and not rec.admitted:
                    raise AdmissionFailed(node_id, rec.failure)
                if not rec.connected and not rec.admitted:
                    raise AdmissionFailed(node_id, "disconnected (the peer may have blocked us)")
                event = self._concluded.setdefault(node_id, trio.Event())
            return node_id
        raise AdmissionFailed(node_id, FailureReason.TIMEOUT.value)

    # -- rpc and gossip (delegates) ------------------------------------------------------------

    def register_handler(self, name: str, handler: Handler) -> str:
        """Serve request/response `name`: `async handler(peer, request: bytes) -> bytes`."""
        return self.rpc.register(name, handler)

    async def request(self, node_id: NodeId, name: str, payload: bytes, timeout_s: float | None = None) -> bytes:
        """Send `payload` to `node_id`'s `name` handler on a new stream; its answer (or RequestError)."""
        return await self.rpc.request(node_id, name, payload, timeout_s)

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

    async def wait_admitted(self, node_id: NodeId) -> None:
        """Return once `node_id` is admitted (wrap in a timeout)."""
        while not self.book.get(node_id).admitted:
            await self._admitted_event(node_id).wait()

    # -- admission -----------------------------------------------------------------------------

    def wall_now(self) -> float:
        return time.time()

    def _admitted_event(self, node_id: NodeId) -> trio.Event:
        return self._admitted_events.setdefault(node_id, trio.Event())

    def _on_connected(self, conn: Any) -> None:
        peer_id = conn.muxed_conn.peer_id
        node = peer_id.to_base58()
        self.counters.connections_opened += 1
        now = trio.current_time()
        if self.gate.is_blocked(node, now):
            self.counters.blocked_dropped += 1
            self._spawn(self._disconnect, node, BLOCKED_GRACE_S)  # time to tell it why (see below)
            return
        rec = self.book.get(node)
        rec.connected = True
        rec.last_seen = self.wall_now()
        rec.via_relay = any("/p2p-circuit" in str(a) for a in _transport_addrs(conn))
        self._connected_at.setdefault(node, now)
        if str(getattr(conn, "direction", "")).lower().endswith("outbound"):
            self._spawn(self._initiate, peer_id, conn)

    def _on_disconnected(self, conn: Any) -> None:
        node = conn.muxed_conn.peer_id.to_base58()
        self.counters.connections_closed += 1
        host = self.libp2p_host
        if host is not None and host.get_network().get_connections(conn.muxed_conn.peer_id):
            return  # another connection to this peer is still open
        rec = self.book.get(node)
        rec.connected = rec.admitted = False
        self._connected_at.pop(node, None)
        concluded = self._concluded.pop(node, None)
        if concluded is not None:
            concluded.set()  # wakes connect(): the peer went away before admitting us
        self._admitted_events.pop(node, None)  # the next connection must prove membership again

    def _spawn(self, fn: Any, *args: Any) -> None:
        if self._nursery is not None:
            self._nursery.start_soon(fn, *args)

    async def admit_stream(self, node_id: NodeId) -> bool:
        """True if `node_id` may use a mycelium protocol; otherwise count, penalise and say no.

        A peer whose handshake may still be running (connection younger than admission_wait_s) is
        given that long to finish, so a stream racing the end of the handshake is not refused."""
        now = trio.current_time()
        if self.gate.is_blocked(node_id, now):
            self.counters.blocked_dropped += 1
            return False
        rec = self.book.find(node_id)
        if rec is not None and rec.admitted:
            return True
        opened = self._connected_at.get(node_id)
        if self._handshaking[node_id] or (opened is not None and now - opened < self.config.admission_wait_s):
            with trio.move_on_after(self.config.admission_wait_s):
                await self.wait_admitted(node_id)
                return True
        self.counters.unadmitted_access += 1
        self.offend(node_id, Offense.UNADMITTED_ACCESS)
        return False

    def offend(self, node_id: NodeId, offense: Offense) -> None:
        block = self.gate.record(node_id, offense, trio.current_time())
        if block is None:
            return
        self.counters.blocked += 1
        self.log.warning(
            "mesh.peer.blocked", peer=node_id, offense=offense.value, for_s=block.duration_s, times=block.blocks
        )
        self._spawn(self._disconnect, node_id)

    async def _disconnect(self, node_id: NodeId, after_s: float = 0.0) -> None:
        await trio.sleep(after_s)
        if self.libp2p_host is None:
            return
        try:
            await self.libp2p_host.disconnect(ID.from_base58(node_id))
        except BaseLibp2pError as exc:
            self.log.debug("mesh.disconnect.failed", peer=node_id, error=str(exc))

    async def _initiate(self, peer_id: ID, conn: Any) -> None:
        node = peer_id.to_base58()
        rec = self.book.get(node)
        if rec.admitted or self._handshaking[node]:
            return
        self._handshaking[node] += 1
        hs = self._handshake(Role.INITIATOR, node)
        try:
            with trio.move_on_after(self.config.handshake_timeout_s):
                started = getattr(conn, "event_started", None)
                if started is not None:
                    await started.wait()  # the notifee fires before the muxer is ready for streams
                try:
                    stream = await self.libp2p_host.new_stream(peer_id, [self.protocols.membership])
                except BaseLibp2pError as exc:
                    hs.fail(_classify_open_failure(exc))
                else:
                    await self._drive(hs, stream, hs.start())
            hs.fail(FailureReason.TIMEOUT)  # no-op when the handshake already ended
        finally:
            self._release_handshake(node)
        await self._conclude(peer_id, hs)

    async def _on_membership_stream(self, stream: Any) -> None:
        peer_id = stream.muxed_conn.peer_id
        node = peer_id.to_base58()
        if self.gate.is_blocked(node, trio.current_time()):
            refusal = self._handshake(Role.RESPONDER, node).fail(FailureReason.BLOCKED)
            with trio.move_on_after(BLOCKED_GRACE_S):
                try:
                    await write_frame(stream, refusal or b"", max_size=MAX_HANDSHAKE_MESSAGE)
                    await stream.close()
                except (FrameError, BaseLibp2pError):
                    pass  # it is being disconnected anyway; the refusal was a courtesy
            return
        self._handshaking[node] += 1
        hs = self._handshake(Role.RESPONDER, node)
        try:
            with trio.move_on_after(self.config.handshake_timeout_s):
                await self._drive(hs, stream, None)
            hs.fail(FailureReason.TIMEOUT)
        finally:
            self._release_handshake(node)
        await self._conclude(peer_id, hs)

    def _release_handshake(self, node: NodeId) -> None:
        self._handshaking[node] -= 1
        if self._handshaking[node] <= 0:
            del self._handshaking[node]

    def _handshake(self, role: Role, node: NodeId) -> Handshake:
        return Handshake(
            role,
            secret=self._secret,
            network_id=self.network_id,
            local=self.node_id,
            remote=node,
            nonce=secrets.token_bytes(32),
            replay_guard=self._replay,
        )

    async def _drive(self, hs: Handshake, stream: Any, first: bytes | None) -> None:
        try:
            if first is not None:
                await write_frame(stream, first, max_size=MAX_HANDSHAKE_MESSAGE)
            while not hs.done:
                reply = hs.receive(await read_frame(stream, max_size=MAX_HANDSHAKE_MESSAGE))
                if reply is not None:
                    await write_frame(stream, reply, max_size=MAX_HANDSHAKE_MESSAGE)
            await stream.close()
        except FrameError as exc:
            hs.fail(FailureReason.MALFORMED if exc.is_peer_fault else FailureReason.STREAM_ERROR)
            await _reset(stream)
        except BaseLibp2pError:
            hs.fail(FailureReason.STREAM_ERROR)
            await _reset(stream)

    async def _conclude(self, peer_id: ID, hs: Handshake) -> None:
        node = peer_id.to_base58()
        rec = self.book.get(node)
        concluded = self._concluded.pop(node, None)
        if hs.state is HandshakeState.ADMITTED:
            first = not rec.admitted
            rec.admitted = rec.member = True
            rec.failure = None
            self.redial.succeeded(node)
            self.counters.handshake_ok += 1
            self._admitted_event(node).set()
            if concluded is not None:
                concluded.set()
            if first:
                self.log.info("mesh.peer.admitted", peer=node, role=hs.role.value)
                if self._gossip is not None:
                    await self._gossip.add_admitted_peer(peer_id)
                self._spawn(self.discovery.exchange_with, node)
            return
        reason = hs.failure.value if hs.failure else "unknown"
        self.counters.handshake_failed += 1
        self.counters.handshake_failed_by_reason[reason] += 1
        if hs.remote_reason:
            reason = f"{reason}:{hs.remote_reason}"
        if concluded is not None:
            concluded.set()
        if rec.admitted:
            return  # a duplicate handshake on a second connection failed; the first one stands
        rec.failure = reason
        if hs.failure in TRANSIENT_FAILURES:
            # the connection broke or stalled (a restart, a flaky link): retry later, no block
            delay = self.redial.failed(node, trio.current_time())
            self.log.info("mesh.peer.handshake_interrupted", peer=node, reason=reason, retry_in_s=round(delay, 2))
        else:
            self.log.warning("mesh.peer.refused", peer=node, reason=reason, role=hs.role.value)
            self.offend(node, Offense.HANDSHAKE_FAILED)
        await self._disconnect(node)


async def _auto_connector_disabled() -> None:
    await trio.lowlevel.checkpoint()  # leaves AutoConnector._started False: it never runs


def _classify_open_failure(exc: BaseException) -> FailureReason:
    """Opening the membership stream failed: did the peer decline the protocol (a plain libp2p
    node, or a node of another network), or did the connection break?"""
    while exc is not None:
        if "protocols not supported" in str(exc):
            return FailureReason.NO_PROTOCOL
        exc = exc.__cause__  # type: ignore[assignment]
    return FailureReason.STREAM_ERROR


def _transport_addrs(conn: Any) -> list[Any]:
    try:
        return list(conn.get_transport_addresses() or [])
    except (AttributeError, BaseLibp2pError):
        return []


async def _reset(stream: Any) -> None:
    try:
        await stream.reset()
    except BaseLibp2pError:
        pass  # already gone


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
