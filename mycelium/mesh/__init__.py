"""libp2p host, network-membership proof, discovery, pubsub and relays (the only importer of libp2p)."""
