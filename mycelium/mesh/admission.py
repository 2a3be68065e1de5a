"""Admission: every new connection proves network membership before any mycelium protocol is served.

The dialling side opens the membership stream and runs the initiator half of the handshake
(`mycelium.mesh.membership.Handshake`); the accepting side answers as responder. Either side that
finds the other wanting refuses (with a reason the other side hears), disconnects, counts the
reason and records an offense in the PeerGate, which blocks the peer with exponential backoff.
A connection that breaks mid-handshake is only redialled later, not blocked. Protocol handlers
call `admit_stream()` before serving anything.
"""

from __future__ import annotations

import mycelium.mesh.libp2p_setup  # noqa: F401,I001 - before libp2p: fixes its logging

import secrets
from collections import Counter
from typing import TYPE_CHECKING, Any

import trio
from libp2p.exceptions import BaseLibp2pError
from libp2p.peer.id import ID

from mycelium.identity import NodeId, scheme_of
from mycelium.mesh.framing import FrameError, read_frame, write_frame
from mycelium.mesh.open_stream import open_stream
from mycelium.mesh.membership import (
    MAX_HANDSHAKE_MESSAGE,
    FailureReason,
    Handshake,
    HandshakeState,
    Offense,
    ReplayGuard,
    Role,
)

if TYPE_CHECKING:
    from mycelium.mesh.context import MeshContext

# redialled, not blocked (SECRET_AHEAD: the peer rotated the secret before we did; we catch up first)
TRANSIENT_FAILURES = frozenset({FailureReason.STREAM_ERROR, FailureReason.TIMEOUT, FailureReason.SECRET_AHEAD})
MAX_HANDSHAKES_PER_PEER = 2  # concurrent responder handshakes per peer (two connections at once)
BLOCKED_GRACE_S = 0.5  # a blocked peer's connection lives this long, so its handshake hears "blocked"


class ConnectionWatcher:
    """libp2p network notifee: tells the mesh about connections opening and closing."""

    def __init__(self, mesh: MeshContext) -> None:
        self._mesh = mesh

    async def connected(self, network: Any, conn: Any) -> None:
        self._mesh.admission.on_connected(conn)
        await trio.lowlevel.checkpoint()

    async def disconnected(self, network: Any, conn: Any) -> None:
        self._mesh.admission.on_disconnected(conn)
        await trio.lowlevel.checkpoint()

    async def opened_stream(self, network: Any, stream: Any) -> None:
        await trio.lowlevel.checkpoint()

    async def closed_stream(self, network: Any, stream: Any) -> None:
        await trio.lowlevel.checkpoint()

    async def listen(self, network: Any, maddr: Any) -> None:
        await trio.lowlevel.checkpoint()

    async def listen_close(self, network: Any, maddr: Any) -> None:
        await trio.lowlevel.checkpoint()


class Admission:
    def __init__(self, mesh: MeshContext, secret: bytes, generation: int = 0) -> None:
        self._mesh = mesh
        self._secret = secret
        self._generation = generation  # rotations of the network secret so far (rekey on removal)
        self._previous: bytes | None = None  # the secret before the last rotation, during the overlap
        self._overlap_until = float("-inf")
        self._is_member: Any = lambda node: True  # who may still prove the previous secret
        self._peer_generation: dict[NodeId, int] = {}  # admitted peer → generation its proof used
        self._replay = ReplayGuard()
        self._handshaking: Counter[NodeId] = Counter()  # handshakes running per peer
        self._admitted_events: dict[NodeId, trio.Event] = {}
        self._connected_at: dict[NodeId, float] = {}
        self._concluded: dict[NodeId, trio.Event] = {}

    async def wait_admitted(self, node_id: NodeId) -> None:
        """Return once `node_id` is admitted (wrap in a timeout)."""
        while not self._mesh.book.get(node_id).admitted:
            await self.admitted_event(node_id).wait()

    def concluded_event(self, node_id: NodeId) -> trio.Event:
        """Set when the next handshake with `node_id` ends (either way) or the peer disconnects."""
        return self._concluded.setdefault(node_id, trio.Event())

    def admitted_event(self, node_id: NodeId) -> trio.Event:
        return self._admitted_events.setdefault(node_id, trio.Event())

    def on_connected(self, conn: Any) -> None:
        peer_id = conn.muxed_conn.peer_id
        node = peer_id.to_base58()
        self._mesh.counters.connections_opened += 1
        now = trio.current_time()
        if self._mesh.gate.is_blocked(node, now):
            self._mesh.counters.blocked_dropped += 1
            self._revoke(node)
            self._mesh.spawn(self.disconnect, node, BLOCKED_GRACE_S)  # time to tell it why (see below)
            return
        rec = self._mesh.book.get(node)
        rec.connected = True
        rec.last_seen = self._mesh.wall_now()
        rec.via_relay = any("/p2p-circuit" in str(a) for a in _transport_addrs(conn))
        self._connected_at.setdefault(node, now)
        self._mesh.spawn(self._deadline, node, conn)
        if str(getattr(conn, "direction", "")).lower().endswith("outbound"):
            self._mesh.spawn(self._initiate, peer_id, conn)

    async def _deadline(self, node: NodeId, conn: Any) -> None:
        """A connection whose peer is not admitted `handshake_timeout_s` after it opened — it never
        started the membership handshake (a plain libp2p node, a scanner) — is closed. A handshake
        still running has its own timeout of the same length and ends the connection itself."""
        await trio.sleep(self._mesh.config.handshake_timeout_s)
        rec = self._mesh.book.find(node)
        if (rec is not None and rec.admitted) or self._handshaking[node] or _is_closed(conn):
            return
        self._mesh.counters.handshake_deadline_closed += 1
        self._mesh.log.info("mesh.peer.handshake_deadline", peer=node, after_s=self._mesh.config.handshake_timeout_s)
        try:
            await conn.close()
        except BaseLibp2pError as exc:
            self._mesh.log.debug("mesh.disconnect.failed", peer=node, error=str(exc))

    def on_disconnected(self, conn: Any) -> None:
        node = conn.muxed_conn.peer_id.to_base58()
        self._mesh.counters.connections_closed += 1
        host = self._mesh.libp2p_host
        if host is not None and host.get_network().get_connections(conn.muxed_conn.peer_id):
            return  # another connection to this peer is still open
        if host is not None:
            # libp2p's new_stream dials a peer it has no connection to from the addresses in its
            # peerstore — a redial behind the mesh's back that skips the block gate, the connection
            # cap and the backoff. Every dial of ours passes its addresses (the book keeps them).
            host.get_peerstore().clear_addrs(conn.muxed_conn.peer_id)
        rec = self._mesh.book.get(node)
        rec.connected = rec.admitted = False
        self._connected_at.pop(node, None)
        concluded = self._concluded.pop(node, None)
        if concluded is not None:
            concluded.set()  # wakes connect(): the peer went away before admitting us
        self._admitted_events.pop(node, None)  # the next connection must prove membership again
        self._mesh.streams.forget(node)
        self._peer_generation.pop(node, None)

    async def admit_stream(self, node_id: NodeId) -> bool:
        """True if `node_id` may use a mycelium protocol; otherwise count, penalise and say no.

        A peer whose handshake may still be running (connection younger than admission_wait_s) is
        given that long to finish, so a stream racing the end of the handshake is not refused."""
        now = trio.current_time()
        if self._mesh.gate.is_blocked(node_id, now):
            self._mesh.counters.blocked_dropped += 1
            return False
        rec = self._mesh.book.find(node_id)
        if rec is not None and rec.admitted:
            return True
        opened = self._connected_at.get(node_id)
        if self._handshaking[node_id] or (opened is not None and now - opened < self._mesh.config.admission_wait_s):
            with trio.move_on_after(self._mesh.config.admission_wait_s):
                await self.wait_admitted(node_id)
                return True
        self._mesh.counters.unadmitted_access += 1
        self.offend(node_id, Offense.UNADMITTED_ACCESS)
        return False

    def offend(self, node_id: NodeId, offense: Offense) -> None:
        block = self._mesh.gate.record(node_id, offense, trio.current_time())
        if block is None:
            return
        self._mesh.counters.blocked += 1
        self._mesh.log.warning(
            "mesh.peer.blocked", peer=node_id, offense=offense.value, for_s=block.duration_s, times=block.blocks
        )
        self._revoke(node_id)
        self._mesh.spawn(self.disconnect, node_id)

    def _revoke(self, node_id: NodeId) -> None:
        """A blocked peer is not admitted, at once (its connections close a moment later)."""
        rec = self._mesh.book.find(node_id)
        if rec is not None:
            rec.admitted = False
        self._admitted_events.pop(node_id, None)

    async def disconnect(self, node_id: NodeId, after_s: float = 0.0) -> None:
        await trio.sleep(after_s)
        if self._mesh.libp2p_host is None:
            return
        try:
            await self._mesh.libp2p_host.disconnect(ID.from_base58(node_id))
        except BaseLibp2pError as exc:
            self._mesh.log.debug("mesh.disconnect.failed", peer=node_id, error=str(exc))

    async def _initiate(self, peer_id: ID, conn: Any) -> None:
        node = peer_id.to_base58()
        rec = self._mesh.book.get(node)
        if rec.admitted or self._handshaking[node]:
            return
        self._handshaking[node] += 1
        hs = self._handshake(Role.INITIATOR, node)
        try:
            with trio.move_on_after(self._mesh.config.handshake_timeout_s):
                started = getattr(conn, "event_started", None)
                if started is not None:
                    await started.wait()  # the notifee fires before the muxer is ready for streams
                try:
                    stream = await open_stream(self._mesh.libp2p_host, peer_id, [self._mesh.protocols.membership])
                except BaseLibp2pError as exc:
                    hs.fail(_classify_open_failure(exc))
                else:
                    await self._drive(hs, stream, hs.start())
            hs.fail(FailureReason.TIMEOUT)  # no-op when the handshake already ended
        finally:
            self._release_handshake(node)
        await self._conclude(peer_id, hs)

    async def on_membership_stream(self, stream: Any) -> None:
        peer_id = stream.muxed_conn.peer_id
        node = peer_id.to_base58()
        if self._mesh.gate.is_blocked(node, trio.current_time()):
            refusal = self._handshake(Role.RESPONDER, node).fail(FailureReason.BLOCKED)
            with trio.move_on_after(BLOCKED_GRACE_S):
                try:
                    await write_frame(stream, refusal or b"", max_size=MAX_HANDSHAKE_MESSAGE)
                    await stream.close()
                except (FrameError, BaseLibp2pError):
                    pass  # it is being disconnected anyway; the refusal was a courtesy
            return
        if self._handshaking[node] >= MAX_HANDSHAKES_PER_PEER:
            # an honest peer runs one handshake per connection; piling them up is an attack
            self._mesh.counters.garbage += 1
            self.offend(node, Offense.GARBAGE)
            await _reset(stream)
            return
        self._handshaking[node] += 1
        hs = self._handshake(Role.RESPONDER, node)
        try:
            with trio.move_on_after(self._mesh.config.handshake_timeout_s):
                await self._drive(hs, stream, None)
            hs.fail(FailureReason.TIMEOUT)
        finally:
            self._release_handshake(node)
        await self._conclude(peer_id, hs)

    def _release_handshake(self, node: NodeId) -> None:
        self._handshaking[node] -= 1
        if self._handshaking[node] <= 0:
            del self._handshaking[node]

    def rotate(self, generation: int, secret: bytes, *, is_member: Any, overlap_s: float) -> None:
        """Use `secret` (generation `generation`) from now on; accept the previous one from current
        members only, for `overlap_s` (they may not have opened their envelope yet)."""
        if generation <= self._generation:
            return
        self._previous = self._secret if generation == self._generation + 1 else None
        self._secret, self._generation, self._is_member = secret, generation, is_member
        self._overlap_until = trio.current_time() + overlap_s

    def peers_on_old_secret(self) -> list[NodeId]:
        return sorted(n for n, g in self._peer_generation.items() if g < self._generation)

    def _accepted(self, node: NodeId) -> dict[int, bytes]:
        accepted = {self._generation: self._secret}
        if self._previous is not None and trio.current_time() < self._overlap_until and self._is_member(node):
            accepted[self._generation - 1] = self._previous
        return accepted

    def _handshake(self, role: Role, node: NodeId) -> Handshake:
        return Handshake(
            role,
            secret=self._secret,
            network_id=self._mesh.network_id,
            local=self._mesh.node_id,
            remote=node,
            nonce=secrets.token_bytes(32),
            replay_guard=self._replay,
            post_quantum=scheme_of(self._mesh.network_id).post_quantum,
            generation=self._generation,
            accepted=self._accepted(node),
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
        rec = self._mesh.book.get(node)
        concluded = self._concluded.pop(node, None)
        if hs.state is HandshakeState.ADMITTED:
            first = not rec.admitted
            rec.admitted = rec.member = True
            rec.failure = None
            self._peer_generation[node] = hs.peer_generation
            self._mesh.redial.succeeded(node)
            self._mesh.counters.handshake_ok += 1
            self.admitted_event(node).set()
            if concluded is not None:
                concluded.set()
            if first:
                self._mesh.log.info("mesh.peer.admitted", peer=node, role=hs.role.value)
                await self._mesh.on_admitted(peer_id)
            return
        reason = hs.failure.value if hs.failure else "unknown"
        self._mesh.counters.handshake_failed += 1
        self._mesh.counters.handshake_failed_by_reason[reason] += 1
        if hs.remote_reason:
            reason = f"{reason}:{hs.remote_reason}"
        if concluded is not None:
            concluded.set()
        if rec.admitted:
            return  # a duplicate handshake on a second connection failed; the first one stands
        rec.failure = reason
        if hs.failure in TRANSIENT_FAILURES or hs.remote_reason == FailureReason.SECRET_AHEAD.value:
            # the connection broke or stalled (a restart, a flaky link): retry later, no block;
            # a peer that opens handshakes and stalls them costs strikes, so it cannot tie us up
            delay = self._mesh.redial.failed(node, trio.current_time())
            self._mesh.log.info("mesh.peer.handshake_interrupted", peer=node, reason=reason, retry_in_s=round(delay, 2))
            if hs.role is Role.RESPONDER and hs.failure is FailureReason.TIMEOUT:
                self.offend(node, Offense.GARBAGE)
        elif hs.failure is FailureReason.NO_PROTOCOL:
            # It speaks no protocol of this network: a node of another network (often found by mDNS
            # on the same LAN) or a plain libp2p node. Not an offence — blocking it would shut out a
            # neighbour that joins this network a minute later — just not ours: do not redial it.
            self._mesh.log.warning("mesh.peer.refused", peer=node, reason=reason, role=hs.role.value)
            rec.member = False
        else:
            self._mesh.log.warning("mesh.peer.refused", peer=node, reason=reason, role=hs.role.value)
            self.offend(node, Offense.HANDSHAKE_FAILED)
        await self.disconnect(node)


def _classify_open_failure(exc: BaseException) -> FailureReason:
    """Opening the membership stream failed: did the peer decline the protocol (a plain libp2p
    node, or a node of another network), or did the connection break?"""
    while exc is not None:
        if "protocols not supported" in str(exc):
            return FailureReason.NO_PROTOCOL
        exc = exc.__cause__  # type: ignore[assignment]
    return FailureReason.STREAM_ERROR


def _is_closed(conn: Any) -> bool:
    muxed = getattr(conn, "muxed_conn", conn)
    closed = getattr(muxed, "is_closed", False)
    return bool(closed() if callable(closed) else closed)


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
