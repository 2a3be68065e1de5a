"""MeshConfig: every parameter of the libp2p host, gossipsub and our own mesh logic, explicitly.

py-libp2p's defaults are inconsistent (e.g. a 120 s gossipsub heartbeat), so nothing here is left to
them: `Mesh` passes each field through by name.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from mycelium.mesh.membership import GateConfig, RateLimitConfig


@dataclass(frozen=True, slots=True)
class GossipConfig:
    """GossipSub v1.1 parameters (names follow the spec: D, D_lo, D_hi …)."""

    degree: int = 6  # D: mesh peers per topic; more = faster, more redundant, more bandwidth
    degree_low: int = 4  # D_lo: below this the heartbeat grafts peers
    degree_high: int = 12  # D_hi: above this the heartbeat prunes peers
    heartbeat_initial_delay_s: float = 0.1  # first heartbeat after start
    heartbeat_interval_s: int = 1  # mesh maintenance period (the spec's 1 s; py-libp2p defaults to 120!)
    time_to_live_s: int = 60  # fanout state for topics we publish to but are not subscribed to
    gossip_window: int = 3  # heartbeats of message ids advertised in IHAVE
    gossip_history: int = 5  # heartbeats of messages kept for IWANT
    prune_back_off_s: int = 60  # a pruned peer may not re-graft for this long
    unsubscribe_back_off_s: int = 10  # back-off after we leave a topic
    do_px: bool = False  # gossipsub peer exchange; off: we exchange peers ourselves, admitted only
    px_peers_count: int = 16  # peers offered in PX when enabled
    direct_connect_initial_delay_s: float = 0.1  # (no direct peers are configured)
    direct_connect_interval_s: int = 300
    max_idontwant_messages: int = 10  # IDONTWANT ids per message
    adaptive_gossip_enabled: bool = False  # py-libp2p extension; off for predictable behaviour
    spam_protection_enabled: bool = True  # py-libp2p per-topic publish rate guard …
    max_messages_per_topic_per_second: float = 100.0  # … at this rate per peer and topic
    eclipse_protection_enabled: bool = False  # needs ≥ min_mesh_diversity_ips distinct IPs; off (LANs, loopback)
    min_mesh_diversity_ips: int = 1
    max_pending_messages_per_peer: int = 100  # messages queued while a peer's stream opens
    pending_messages_ttl_s: float = 30.0
    # Pubsub (the layer under the router)
    seen_ttl_s: int = 120  # message ids remembered to drop duplicates
    sweep_interval_s: int = 60  # how often the seen-cache is swept
    cache_size: int = 1024  # seen-message LRU entries
    strict_signing: bool = True  # every message signed by its origin's node key, checked on receipt
    validation_timeout_s: float = 5.0  # async validators give up after this
    validation_cache_ttl_s: int = 300
    validation_cache_size: int = 1000
    max_concurrent_validators: int = 32
    max_subscriptions_per_rpc: int = 100  # subscription entries per inbound pubsub RPC
    max_subscriptions_per_peer: int = 100  # distinct topics a peer may subscribe to
    max_message_bytes: int = 64 * 1024  # inbound pubsub RPC frame limit; keep gossip SMALL (yamux bug
    #                                     interleaves concurrent writes > ~64 KiB): large data goes by rpc
    subscription_buffer: int = 256  # messages buffered per `subscribe()` before new ones are dropped


@dataclass(frozen=True, slots=True)
class MeshConfig:
    listen: tuple[str, ...] = ("/ip4/0.0.0.0/tcp/4701",)  # TCP multiaddrs; port 0 = ephemeral
    port_fallback: bool = True  # a taken fixed port → ephemeral port + warning; False → PortTaken error
    announce: tuple[str, ...] = ()  # addresses to advertise instead of the bound ones (port forwards, NAT)
    bootstrap: tuple[str, ...] = ()  # full multiaddrs with /p2p/<node id>; dialled on start and kept
    mdns: bool = False  # find peers on the LAN by mDNS (the daemon turns it on; tests leave it off)
    dht: bool = False  # Kademlia peer routing among members (find_peer); for networks beyond ~50 nodes
    target_connections: int = 8  # keep at least this many admitted peers; dial known peers below it
    max_connections: int = 64  # stop dialling (and exchange fewer peers) above this
    # -- admission -------------------------------------------------------------------------------
    handshake_timeout_s: float = 10.0  # a membership handshake must finish within this
    admission_wait_s: float = 5.0  # a stream from a peer whose handshake is still running waits this long
    gate: GateConfig = field(default_factory=GateConfig)  # offenses → blocks with exponential backoff
    # new inbound connections per remote IP address (checked before any crypto); a household behind
    # one NAT address reconnecting all at once stays well under the burst
    inbound_connection_rate: RateLimitConfig = field(
        default_factory=lambda: RateLimitConfig(rate_per_s=2.0, burst=30.0, max_tracked_peers=4096)
    )
    # -- request/response ------------------------------------------------------------------------
    max_request_bytes: int = 16 * 1024 * 1024  # largest request or response frame (snapshots, chunks)
    request_timeout_s: float = 30.0  # default for `request()`
    inbound_rate: RateLimitConfig = field(default_factory=RateLimitConfig)  # per-peer inbound requests
    max_inbound_requests: int = 256  # requests served at once, all peers together
    # -- discovery and liveness ------------------------------------------------------------------
    maintenance_interval_s: float = 2.0  # how often we check connection count and redial
    dial_timeout_s: float = 10.0  # one dial attempt (py-libp2p waits ≥ 250 ms per dial)
    redial_base_s: float = 1.0  # first retry of a failed peer; doubles per failure …
    redial_max_s: float = 300.0  # … up to this; each delay is jittered by ±redial_jitter
    redial_jitter: float = 0.2
    peer_exchange: bool = True  # ask admitted peers for the members they know (on admission, then periodically)
    exchange_interval_s: float = 15.0  # peer exchange with one admitted peer this often
    max_exchanged_peers: int = 64  # peers returned by (and accepted from) one peer exchange
    ping_interval_s: float = 15.0  # latency probe of each connected peer
    ping_timeout_s: float = 5.0
    # After this many pings in a row fail, the peer is dropped as unresponsive (its connection closed,
    # redialled later). A cut cable or a silent partition leaves TCP connections "open" for minutes;
    # without this the node would keep counting unreachable validators as reachable.
    ping_failures_to_drop: int = 3
    # -- data channel (bulk transfer off libp2p: mycelium.mesh.datachannel) ------------------------
    channel_port: int = 0  # TCP port of the data-channel listener, beside libp2p's IP (0: ephemeral;
    #                        peers learn it over libp2p, so only a firewall needs a fixed one)
    channel_stripes: int = 2  # TLS connections per direction of a channel (open_channel(stripes=) overrides)
    channel_max_open: int = 64  # open channels, both directions together; opens beyond are refused
    channel_max_pending: int = 32  # accepted open requests still waiting for their connections
    channel_open_timeout_s: float = 10.0  # open request, dials and TLS handshakes of one channel
    channel_message_queue: int = 8  # whole messages received but not yet taken by receive()
    # -- libp2p host -----------------------------------------------------------------------------
    negotiate_timeout_s: int = 10  # multistream-select negotiation of one stream
    close_timeout_s: float = 5.0  # shutdown: closing connections and listeners may take this long
    gossip: GossipConfig = field(default_factory=GossipConfig)

    @classmethod
    def local(cls, **overrides: object) -> MeshConfig:
        """Loopback, ephemeral port, fast timers, no mDNS."""
        base = cls(
            listen=("/ip4/127.0.0.1/tcp/0",),
            maintenance_interval_s=0.5,
            redial_base_s=0.2,
            redial_max_s=2.0,
            exchange_interval_s=0.5,
            ping_interval_s=1.0,
            handshake_timeout_s=5.0,
            admission_wait_s=1.0,
            dial_timeout_s=5.0,
        )
        return replace(base, **overrides)  # type: ignore[arg-type]
