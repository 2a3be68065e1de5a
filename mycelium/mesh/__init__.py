"""libp2p host, network-membership proof, discovery, pubsub and peer routing (the only importer of libp2p).

Public interface (everything else is internal to the package):

    from mycelium.mesh.config import MeshConfig, GossipConfig     # frozen, every field commented
    from mycelium.mesh.host import Mesh, MeshError, AdmissionFailed, open_mesh
    from mycelium.mesh.rpc import BadRequest, RequestError, PeerNotAdmitted, RequestTimeout,
                                  RequestRefused, RemoteError
    from mycelium.mesh.gossip import GossipMessage               # (topic, sender, data)
    from mycelium.mesh.peers import PeerInfo                     # one row of Mesh.peers()
    from mycelium.mesh.protocols import TOPIC_LATENT, TOPIC_CONSENSUS, RPC_PEERS
    from mycelium.mesh.ports import PortTaken

    mesh = Mesh(config, node_key, network_id, secret)
    await nursery.start(mesh.run)                                # listening once it returns
    mesh.listen_addresses() -> list[str]                         # …/p2p/<node id>
    await mesh.connect(multiaddr) -> node_id                     # dial + membership handshake
    mesh.add_addresses(node_id, [multiaddr, …])                  # e.g. from Latent spores
    await mesh.find_peer(node_id) -> [multiaddr, …]              # known, else DHT (config.dht)
    mesh.peers() -> list[PeerInfo]; mesh.admitted_peers() -> list[node_id]
    mesh.register_handler(name, async fn(peer, bytes) -> bytes)  # raise BadRequest for bad input
    await mesh.request(peer, name, payload, timeout_s) -> bytes  # one stream per request, MBs are fine
    await mesh.publish(topic_name, small_bytes)
    async with mesh.subscribe(topic_name) as messages: async for m in messages: …
    mesh.counters.snapshot() -> dict[str, int]                   # for Prometheus
    await mesh.open_channel(node_id, purpose, stripes=k)         # bulk data channel (mesh.channel)
    mesh.serve_channels(purpose, async fn(node_id, channel))

Pure cores (no libp2p): `membership` (handshake, PeerGate, RateLimiter), `redial`, `peers`.
"""

from mycelium.mesh import libp2p_trim as _libp2p_trim

_libp2p_trim.install()  # before any mesh module imports libp2p: QUIC, AutoTLS, relay … stay unloaded
