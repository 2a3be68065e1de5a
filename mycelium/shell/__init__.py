"""The one shell that runs every sans-IO core (STYLE §14).

effects.py      the Core protocol and its effects (Send, Broadcast, SetTimer): the only thing a pure
                core imports from here (no trio, no libp2p)
interpreter.py  Interpreter + Timers: how effects are carried out — used by the daemon's loops, the
                simulator's World and the in-process test networks alike (pure)
loop.py         CoreLoop: the trio loop around one core (bounded inbox, timers, local calls)
exchange.py     PeerQueues + CoreShell: a core over any Transport (rpc queues per peer, gossip,
                in-band request/answer)
transport.py    Transport: what a network session needs of the network (Mesh implements it;
                mycelium.testing.transport has the in-memory one)
"""
