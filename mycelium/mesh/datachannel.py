"""The mesh's data channel: TLS 1.3 over TCP, striped, bound to both node identities (trio shell).

    mesh.serve_channels("storage", handler)                         # handler(node_id, channel)
    channel = await mesh.open_channel(node_id, "storage", stripes=4)

Opening (see `channel_wire` for the formats):
1. The opener asks the peer over the admitted libp2p connection (rpc `channel`), sending its
   ephemeral certificate and its node key's signature binding it to its node id and this network.
   The rpc layer refuses anyone not admitted (so non-members and other networks never get further).
2. The acceptor checks the signature and the purpose, answers with its own certificate, signature,
   data port and a fresh channel id, and expects `2 × stripes` TLS connections pinned to exactly the
   opener's certificate.
3. The opener dials them (`stripes` it writes, `stripes` the acceptor writes), each asking for its
   stripe's label as TLS server name and pinning the acceptor's certificate.

In a --pq network (`channel_pq`) the request also carries the opener's ephemeral ML-KEM-768 key
and the answer the acceptor's ciphertext, both under the hybrid signatures, and every chunk is
sealed again inside TLS with keys from the KEM secret; an open without the KEM, either way, is
refused with a reason that says so. Classic networks send exactly what they always sent.

Data then never touches py-libp2p (`mycelium.mesh.tls_channel`: each connection is written by one
side only, from a long-lived worker thread running blocking `ssl` I/O; OpenSSL releases the GIL, so
both cores work). Back-pressure: `send` waits on a bounded chunk queue, writers on TCP, readers on
the reassembly window and on a bounded queue of whole messages that `receive` drains. Any broken
connection (error, tampered record, peer gone) breaks the whole channel: `receive` returns the whole
messages already received, then raises ChannelClosed with the reason; `send` raises at once.
An inbound channel is closed when its handler returns (as trio's serve_listeners does).
"""

from __future__ import annotations

import mycelium.mesh.libp2p_setup  # noqa: F401,I001 - before libp2p: fixes its logging

import secrets
import socket
import ssl
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import trio
from libp2p.peer.id import ID

from mycelium.identity import NodeId, NodeKey, scheme_of, verify
from mycelium.mesh.channel import (
    ChannelError,
    ChannelHandler,
    ChannelRefused,
    ChannelUnreachable,
)
from mycelium.mesh.channel_pq import (
    KemOffer,
    Sealing,
    Transcript,
    answer_binding,
    encapsulate,
    open_binding,
    schedule,
)
from mycelium.mesh.channel_tls import (
    Certificate,
    accept_handshake,
    dial,
    listening_context,
    make_certificate,
    pinned_context,
)
from mycelium.mesh.channel_wire import (
    MAX_STRIPES,
    OpenAnswer,
    OpenRequest,
    WireError,
    binding_payload,
    check_purpose,
    parse_stripe_label,
    stripe_label,
)
from mycelium.mesh.rpc import BadRequest, RequestError, RequestTimeout
from mycelium.mesh.tls_channel import TlsChannel, close_now

if TYPE_CHECKING:
    from mycelium.mesh.context import MeshContext

RPC_CHANNEL = "channel"
MAX_HANDSHAKING = 16  # inbound TLS handshakes at once; more connections are dropped unread


@dataclass(slots=True)
class _Pending:
    """An accepted open request waiting for its stripe connections."""

    peer: NodeId
    purpose: str
    peer_der: bytes
    stripes: int
    context: ssl.SSLContext
    sealing: Sealing | None = None  # the PQ inner layer's keys (None in a classic network)
    connections: dict[tuple[str, int], ssl.SSLSocket] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return len(self.connections) == 2 * self.stripes


class DataChannels:
    """The data-channel half of a Mesh: listener, open requests, channels."""

    def __init__(self, mesh: MeshContext, node_key: NodeKey) -> None:
        self._mesh = mesh
        self._node_key = node_key
        self._handlers: dict[str, ChannelHandler] = {}
        self._pending: dict[bytes, _Pending] = {}
        self._open: set[TlsChannel] = set()
        self._cert: Certificate | None = None
        self._listen_ctx: ssl.SSLContext | None = None
        self._handshaking = 0
        cfg = mesh.config
        self._limiter = trio.CapacityLimiter(2 * MAX_STRIPES * cfg.channel_max_open + 8)
        self._handshake_limiter = trio.CapacityLimiter(MAX_HANDSHAKING)
        self.port: int | None = None
        # node id → (host, port) dialled instead of the peer's libp2p address and announced port
        # (a port forward; tests put a tampering proxy here)
        self.dial_overrides: dict[NodeId, tuple[str, int]] = {}
        mesh.rpc.register(RPC_CHANNEL, self._on_open)

    @property
    def open_count(self) -> int:
        return len(self._open)

    def serve_channels(self, purpose: str, handler: ChannelHandler) -> None:
        self._handlers[check_purpose(purpose)] = handler

    # -- listener -------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        host, family = _listen_host(self._mesh.config.listen)
        listener = trio.socket.socket(family, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            await listener.bind((host, self._mesh.config.channel_port))
            listener.listen(128)
            self.port = listener.getsockname()[1]
            task_status.started()
            async with trio.open_nursery() as nursery:
                while True:
                    conn, _ = await listener.accept()
                    raw = socket.socket(conn.family, conn.type, fileno=conn.detach())
                    raw.setblocking(True)
                    if self._handshaking >= MAX_HANDSHAKING:
                        self._mesh.counters.channel_refused += 1
                        raw.close()
                        continue
                    self._handshaking += 1
                    nursery.start_soon(self._accept, raw)
        finally:
            self.port = None
            listener.close()
            for pending in list(self._pending.values()):
                for sock in pending.connections.values():
                    close_now(sock)
            self._pending.clear()

    def _identity(self) -> Certificate:
        if self._cert is None:
            self._cert = make_certificate()
            self._listen_ctx = listening_context(self._cert, self._context_for)
        return self._cert

    def _signature(self) -> bytes:
        return self._node_key.sign_for(self._mesh.network_id, binding_payload(self._mesh.network_id, self._identity().der))

    @property
    def post_quantum(self) -> bool:
        return scheme_of(self._mesh.network_id).post_quantum

    def _context_for(self, server_name: str | None) -> ssl.SSLContext | None:
        """(called in a handshake thread) The pinned context of the channel a stripe asks for."""
        label = parse_stripe_label(server_name)
        pending = self._pending.get(label[0]) if label else None
        return pending.context if pending is not None else None

    async def _accept(self, raw: socket.socket) -> None:
        counters, cfg = self._mesh.counters, self._mesh.config
        try:
            self._identity()
            assert self._listen_ctx is not None
            tls, name = await trio.to_thread.run_sync(
                accept_handshake, raw, self._listen_ctx, cfg.channel_open_timeout_s,
                abandon_on_cancel=True, limiter=self._handshake_limiter)
        except (OSError, ValueError) as exc:
            counters.channel_refused += 1
            self._mesh.log.debug("mesh.channel.handshake_refused", error=str(exc))
            close_now(raw)
            return
        finally:
            self._handshaking -= 1
        label = parse_stripe_label(name)
        pending = self._pending.get(label[0]) if label else None
        if label is None or pending is None or tls.getpeercert(binary_form=True) != pending.peer_der:
            counters.channel_refused += 1
            close_now(tls)
            return
        _, direction, index = label
        if index >= pending.stripes or (direction, index) in pending.connections:
            counters.channel_refused += 1
            close_now(tls)
            return
        pending.connections[(direction, index)] = tls
        if not pending.complete:
            return
        del self._pending[label[0]]
        outgoing = [pending.connections[("d", i)] for i in range(pending.stripes)]
        incoming = [pending.connections[("u", i)] for i in range(pending.stripes)]
        channel = self._channel(pending.peer, outgoing, incoming, pending.sealing)
        handler = self._handlers.get(pending.purpose)
        self._mesh.spawn(self._serve_one, channel, handler)

    async def _serve_one(self, channel: TlsChannel, handler: ChannelHandler | None) -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(self._run_channel, channel)
            try:
                if handler is not None:
                    self._mesh.counters.channels_accepted += 1
                    await handler(channel.peer, channel)
            except ChannelError as exc:  # usually the peer closing: the normal end of a handler
                self._mesh.log.debug("mesh.channel.handler_ended", peer=channel.peer, error=str(exc))
            except Exception:
                self._mesh.log.exception("mesh.channel.handler_failed", peer=channel.peer)
            finally:
                with trio.CancelScope(shield=True):
                    await channel.aclose()

    async def _run_channel(self, channel: TlsChannel, *, task_status: trio.TaskStatus[None]) -> None:
        self._open.add(channel)
        try:
            await channel.run(task_status=task_status)
        finally:
            self._open.discard(channel)

    def _channel(self, peer: NodeId, outgoing: list[ssl.SSLSocket], incoming: list[ssl.SSLSocket],
                 sealing: Sealing | None) -> TlsChannel:
        cfg = self._mesh.config
        k = len(outgoing)
        return TlsChannel(peer, outgoing, incoming, self._limiter, queue_chunks=2 * k + 2,
                          window_chunks=4 * k + 4, message_queue=cfg.channel_message_queue,
                          close_timeout_s=cfg.close_timeout_s, sealing=sealing)

    async def _expire(self, channel_id: bytes) -> None:
        await trio.sleep(self._mesh.config.channel_open_timeout_s)
        pending = self._pending.pop(channel_id, None)
        if pending is not None:
            self._mesh.log.info("mesh.channel.open_expired", peer=pending.peer, stripes=len(pending.connections))
            for sock in pending.connections.values():
                close_now(sock)

    # -- opening ----------------------------------------------------------------------------------

    async def _on_open(self, peer: NodeId, data: bytes) -> bytes:
        """rpc `channel` (the rpc layer already refused anyone not admitted)."""
        cfg = self._mesh.config
        try:
            request = OpenRequest.decode(data)
        except WireError as exc:
            raise BadRequest(f"bad channel open request: {exc}") from exc
        net, pq = self._mesh.network_id, self.post_quantum
        if pq != (request.kem is not None):
            self._mesh.counters.channel_refused += 1
            return OpenAnswer(refused=_kem_refusal(pq, "open request")).encode()
        bound = open_binding(net, request.cert, request.kem) if request.kem is not None else binding_payload(net, request.cert)
        if not verify(peer, bound, request.sig, net):
            raise BadRequest("the certificate is not signed by your node key for this network")
        if request.purpose not in self._handlers:
            return OpenAnswer(refused=f"no {request.purpose!r} channels are served here").encode()
        if self.port is None:
            return OpenAnswer(refused="the data-channel listener is not running").encode()
        if len(self._pending) >= cfg.channel_max_pending or len(self._open) >= cfg.channel_max_open:
            return OpenAnswer(refused="too many channels open or opening; retry later").encode()
        cert = self._identity()
        channel_id = secrets.token_bytes(16)
        context = pinned_context(True, cert, request.cert)
        sealing, ct, sig = None, None, None
        if request.kem is not None:
            try:
                shared, ct = encapsulate(request.kem)
            except WireError as exc:
                raise BadRequest(f"bad channel open request: {exc}") from exc
            keys = schedule(shared, Transcript(net, channel_id, peer, self._mesh.node_id, request.cert, cert.der,
                                               request.kem, ct))
            sealing = Sealing(*keys.for_acceptor())
            sig = self._node_key.sign_for(net, answer_binding(net, cert.der, channel_id, ct, request.kem))
        self._pending[channel_id] = _Pending(peer, request.purpose, request.cert, request.stripes, context, sealing)
        self._mesh.spawn(self._expire, channel_id)
        return OpenAnswer(port=self.port, cert=cert.der, sig=sig or self._signature(), channel_id=channel_id,
                          ct=ct).encode()

    async def open_channel(self, node_id: NodeId, purpose: str, *, stripes: int | None = None) -> TlsChannel:
        mesh, cfg = self._mesh, self._mesh.config
        check_purpose(purpose)
        k = cfg.channel_stripes if stripes is None else stripes
        if not 1 <= k <= MAX_STRIPES:
            raise ValueError(f"stripes must be 1..{MAX_STRIPES}, got {k}")
        if node_id == mesh.node_id:
            raise ChannelRefused("a channel to this node itself")
        rec = mesh.book.find(node_id)
        if mesh.libp2p_host is None or rec is None or not (rec.admitted and rec.connected):
            mesh.counters.channel_refused += 1
            raise ChannelRefused(f"{node_id} is not an admitted, connected member of this network")
        if len(self._open) >= cfg.channel_max_open:
            raise ChannelError(f"{len(self._open)} channels are open (channel_max_open); close some first")
        cert = self._identity()
        net = mesh.network_id
        offer = KemOffer() if self.post_quantum else None
        if offer is None:
            request = OpenRequest(purpose, k, cert.der, self._signature())
        else:
            request = OpenRequest(purpose, k, cert.der, self._node_key.sign_for(net, open_binding(net, cert.der, offer.public)),
                                  kem=offer.public)
        try:
            raw = await mesh.request(node_id, RPC_CHANNEL, request.encode(), timeout_s=cfg.channel_open_timeout_s)
        except RequestTimeout as exc:
            raise ChannelUnreachable(f"{node_id} did not answer the channel request: {exc}") from exc
        except RequestError as exc:
            mesh.counters.channel_refused += 1
            raise ChannelRefused(f"{node_id} refused a {purpose!r} channel: {exc}") from exc
        try:
            answer = OpenAnswer.decode(raw)
        except WireError as exc:
            raise ChannelRefused(f"{node_id} answered the channel request with garbage: {exc}") from exc
        if answer.refused is not None:
            mesh.counters.channel_refused += 1
            raise ChannelRefused(f"{node_id} refused a {purpose!r} channel: {answer.refused}")
        if (offer is not None) != (answer.ct is not None):
            mesh.counters.channel_refused += 1
            raise ChannelRefused(f"{node_id} answered a {purpose!r} channel: {_kem_refusal(offer is not None, 'open answer')}")
        pq_bound = offer is not None and answer.ct is not None
        bound = (answer_binding(net, answer.cert, answer.channel_id, answer.ct, offer.public) if pq_bound
                 else binding_payload(net, answer.cert))
        if not verify(node_id, bound, answer.sig, net):
            raise ChannelRefused(f"{node_id}'s data-channel certificate is not bound to its node id")
        sealing = None
        if pq_bound:
            try:
                shared = offer.shared(answer.ct)
            except WireError as exc:
                raise ChannelRefused(f"{node_id} answered with a broken ML-KEM ciphertext: {exc}") from exc
            transcript = Transcript(net, answer.channel_id, mesh.node_id, node_id, cert.der, answer.cert, offer.public, answer.ct)
            sealing = Sealing(*schedule(shared, transcript).for_opener())
        host, port = self.dial_overrides.get(node_id) or (self._peer_host(node_id), answer.port)
        context = pinned_context(False, cert, answer.cert)
        connections: dict[tuple[str, int], ssl.SSLSocket] = {}
        errors: list[BaseException] = []

        async def dial_one(direction: str, index: int) -> None:
            label = stripe_label(answer.channel_id, direction, index)
            try:
                connections[(direction, index)] = await trio.to_thread.run_sync(
                    dial, host, port, context, label, answer.cert, cfg.channel_open_timeout_s,
                    abandon_on_cancel=True, limiter=self._handshake_limiter)
            except (OSError, ValueError) as exc:
                errors.append(exc)

        try:
            async with trio.open_nursery() as nursery:
                for direction in "ud":
                    for index in range(k):
                        nursery.start_soon(dial_one, direction, index)
        finally:
            if errors or len(connections) != 2 * k:
                for sock in connections.values():
                    close_now(sock)
        if errors:
            raise ChannelUnreachable(f"no data path to {node_id} at {host}:{port}: {errors[0]}")
        channel = self._channel(node_id, [connections[("u", i)] for i in range(k)],
                                [connections[("d", i)] for i in range(k)], sealing)
        await mesh.nursery.start(self._run_channel, channel)
        mesh.counters.channels_opened += 1
        return channel

    def _peer_host(self, node_id: NodeId) -> str:
        network = self._mesh.libp2p_host.get_network()
        for conn in network.get_connections(ID.from_base58(node_id)):
            try:
                address = conn.muxed_conn.get_remote_address()
            except Exception:  # noqa: BLE001 - py-libp2p raises many kinds here
                address = None
            if address:
                return str(address[0])
        raise ChannelUnreachable(f"no libp2p connection to {node_id} tells its address")


def _kem_refusal(pq: bool, what: str) -> str:
    """Why an open request or answer with the wrong KEM field is refused (both ends see it)."""
    if pq:
        return (f"this network is post-quantum: a channel {what} must carry ML-KEM-768 (it had none: the "
                "peer runs a version without it, or it was stripped on the way); TLS's X25519 alone is refused")
    return f"this network is classic: a channel {what} carrying ML-KEM-768 is not expected here"


def _listen_host(listen: tuple[str, ...]) -> tuple[str, int]:
    """The IP of the first TCP listen address (the data channel listens beside libp2p)."""
    for text in listen:
        parts = text.split("/")
        if len(parts) >= 5 and parts[3] == "tcp" and parts[1] in ("ip4", "ip6"):
            return parts[2], socket.AF_INET if parts[1] == "ip4" else socket.AF_INET6
    return "0.0.0.0", socket.AF_INET
