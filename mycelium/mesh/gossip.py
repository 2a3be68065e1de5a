"""Gossipsub for admitted peers only, with every parameter explicit.

py-libp2p's Pubsub opens a pubsub stream to every peer that connects. We take its connection
notifee off the network and hand it peers only once they are admitted; inbound pubsub streams from
peers that are not admitted are reset. Messages delivered to subscribers therefore come only through
admitted peers, and (strict signing) carry their origin's verified node id.
"""

from __future__ import annotations

import mycelium.mesh.libp2p_setup  # noqa: F401,I001 - before libp2p: fixes its logging

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio
from libp2p.peer.id import ID
from libp2p.pubsub.gossipsub import PROTOCOL_ID_V11, PROTOCOL_ID_V12, GossipSub
from libp2p.pubsub.pubsub import Pubsub
from libp2p.pubsub.pubsub_notifee import PubsubNotifee

from mycelium.identity import NodeId
from mycelium.mesh.config import GossipConfig

if TYPE_CHECKING:
    from mycelium.mesh.context import MeshContext

GOSSIP_OVERHEAD_BYTES = 1024  # signature, key, ids and framing around a published payload


@dataclass(frozen=True, slots=True)
class GossipMessage:
    topic: str  # the topic name as passed to subscribe(), e.g. "latent"
    sender: NodeId  # the origin (signature checked by pubsub)
    data: bytes


def build_pubsub(host: object, cfg: GossipConfig) -> tuple[GossipSub, Pubsub]:
    router = GossipSub(
        protocols=[PROTOCOL_ID_V12, PROTOCOL_ID_V11],
        degree=cfg.degree,
        degree_low=cfg.degree_low,
        degree_high=cfg.degree_high,
        direct_peers=None,
        time_to_live=cfg.time_to_live_s,
        gossip_window=cfg.gossip_window,
        gossip_history=cfg.gossip_history,
        heartbeat_initial_delay=cfg.heartbeat_initial_delay_s,
        heartbeat_interval=cfg.heartbeat_interval_s,
        direct_connect_initial_delay=cfg.direct_connect_initial_delay_s,
        direct_connect_interval=cfg.direct_connect_interval_s,
        do_px=cfg.do_px,
        px_peers_count=cfg.px_peers_count,
        prune_back_off=cfg.prune_back_off_s,
        unsubscribe_back_off=cfg.unsubscribe_back_off_s,
        score_params=None,
        max_idontwant_messages=cfg.max_idontwant_messages,
        adaptive_gossip_enabled=cfg.adaptive_gossip_enabled,
        spam_protection_enabled=cfg.spam_protection_enabled,
        max_messages_per_topic_per_second=cfg.max_messages_per_topic_per_second,
        eclipse_protection_enabled=cfg.eclipse_protection_enabled,
        min_mesh_diversity_ips=cfg.min_mesh_diversity_ips,
        my_extensions=None,
        max_pending_messages_per_peer=cfg.max_pending_messages_per_peer,
        pending_messages_ttl=cfg.pending_messages_ttl_s,
    )
    pubsub = Pubsub(
        host,  # type: ignore[arg-type]
        router,
        cache_size=cfg.cache_size,
        seen_ttl=cfg.seen_ttl_s,
        sweep_interval=cfg.sweep_interval_s,
        strict_signing=cfg.strict_signing,
        max_concurrent_validator_count=cfg.max_concurrent_validators,
        validation_cache_ttl=cfg.validation_cache_ttl_s,
        validation_cache_size=cfg.validation_cache_size,
        validation_timeout=cfg.validation_timeout_s,
        max_subscriptions_per_rpc=cfg.max_subscriptions_per_rpc,
        max_subscriptions_per_peer=cfg.max_subscriptions_per_peer,
        max_inbound_rpc_size=cfg.max_message_bytes,
        allowed_topics=None,
    )
    return router, pubsub


class _DeparturesOnly:
    """Stands in for Pubsub's notifee: passes disconnections on, keeps connections to ourselves."""

    def __init__(self, inner: PubsubNotifee) -> None:
        self.inner = inner

    async def connected(self, network: object, conn: object) -> None:
        await trio.lowlevel.checkpoint()

    async def disconnected(self, network: object, conn: object) -> None:
        await self.inner.disconnected(network, conn)  # type: ignore[arg-type]

    async def opened_stream(self, network: object, stream: object) -> None:
        await trio.lowlevel.checkpoint()

    async def closed_stream(self, network: object, stream: object) -> None:
        await trio.lowlevel.checkpoint()

    async def listen(self, network: object, multiaddr: object) -> None:
        await trio.lowlevel.checkpoint()

    async def listen_close(self, network: object, multiaddr: object) -> None:
        await trio.lowlevel.checkpoint()


class Gossip:
    """Admission-gated pubsub: publish, subscribe (fan-out to several local subscribers)."""

    def __init__(self, mesh: MeshContext, router: GossipSub, pubsub: Pubsub) -> None:
        self._mesh = mesh
        self.router = router
        self.pubsub = pubsub
        self._subscribers: dict[str, list[trio.MemorySendChannel[GossipMessage]]] = {}
        self._pumps: dict[str, trio.CancelScope] = {}
        network = mesh.libp2p_host.get_network()  # type: ignore[union-attr]
        notifees = [n for n in network.notifees if isinstance(n, PubsubNotifee)]
        if len(notifees) != 1:
            raise RuntimeError(f"expected one PubsubNotifee on the network, found {len(notifees)}")
        self._pubsub_notifee = notifees[0]
        network.remove_notifee(self._pubsub_notifee)
        network.register_notifee(_DeparturesOnly(self._pubsub_notifee))
        for protocol in router.get_protocols():
            mesh.libp2p_host.set_stream_handler(protocol, self._gated_stream_handler)  # type: ignore[union-attr]

    async def _gated_stream_handler(self, stream) -> None:  # type: ignore[no-untyped-def]
        node = stream.muxed_conn.peer_id.to_base58()
        if not await self._mesh.admit_stream(node):
            try:
                await stream.reset()
            except Exception:  # noqa: BLE001 - already gone; the peer is refused either way
                pass
            return
        await self.pubsub.stream_handler(stream)

    async def add_admitted_peer(self, peer_id: ID) -> None:
        """Let pubsub open its stream to a peer that just passed the membership handshake."""
        with trio.move_on_after(self._mesh.config.handshake_timeout_s):
            await self._pubsub_notifee.initiator_peers_queue.send(peer_id)

    async def publish(self, name: str, data: bytes) -> None:
        limit = self._mesh.config.gossip.max_message_bytes - GOSSIP_OVERHEAD_BYTES
        if len(data) > limit:
            raise ValueError(
                f"gossip message of {len(data)} bytes exceeds {limit}; keep gossip small and send large "
                "payloads with Mesh.request() on their own stream"
            )
        await self.pubsub.publish(self._mesh.protocols.topic(name), bytes(data))
        self._mesh.counters.gossip_published += 1

    @asynccontextmanager
    async def subscribe(self, name: str) -> AsyncIterator[trio.MemoryReceiveChannel[GossipMessage]]:
        topic = self._mesh.protocols.topic(name)
        send, receive = trio.open_memory_channel[GossipMessage](self._mesh.config.gossip.subscription_buffer)
        subscribers = self._subscribers.setdefault(topic, [])
        subscribers.append(send)
        if topic not in self._pumps:
            subscription = await self.pubsub.subscribe(topic)
            self._pumps[topic] = await self._mesh.nursery.start(self._pump, name, topic, subscription)
        try:
            yield receive
        finally:
            subscribers.remove(send)
            send.close()
            if not subscribers:
                del self._subscribers[topic]
                self._pumps.pop(topic).cancel()
                with trio.CancelScope(shield=True), trio.move_on_after(2):
                    await self.pubsub.unsubscribe(topic)

    async def _pump(self, name: str, topic: str, subscription, *, task_status=trio.TASK_STATUS_IGNORED) -> None:  # type: ignore[no-untyped-def]
        counters = self._mesh.counters
        with trio.CancelScope() as scope:
            task_status.started(scope)
            async for msg in subscription:
                try:
                    sender = ID(msg.from_id).to_base58()
                except Exception:  # noqa: BLE001 - an unparseable origin: drop and count
                    counters.gossip_dropped += 1
                    continue
                if sender == self._mesh.node_id:
                    continue  # our own message coming back
                counters.gossip_received += 1
                message = GossipMessage(name, sender, bytes(msg.data))
                for send in list(self._subscribers.get(topic, ())):
                    try:
                        send.send_nowait(message)
                    except trio.WouldBlock:
                        counters.gossip_dropped += 1  # a slow subscriber loses messages, nobody blocks
                    except (trio.ClosedResourceError, trio.BrokenResourceError):
                        pass  # that subscriber is leaving
