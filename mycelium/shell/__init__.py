"""What sans-IO cores return, and the trio shell that carries it over the mesh.

effects.py   the Core protocol and its effects (Send, Broadcast, SetTimer): the only thing a pure core
             imports from here (no trio, no libp2p)
exchange.py  PeerQueues + CoreShell: runs any core over the mesh (rpc queues per peer, gossip, timers)
"""
