"""Self-upgrade: the network rolls out a new Mycelium release to its own nodes (issue 20).

versions.py   release versions and the wire/control protocol ranges a build speaks (pure)
rules.py      the signed `release` operation: publish (admins) and per-node reports (pure)
rollout.py    the staged rollout as a function of the Primary: canary, then rhizomorphs and hyphae,
              then validators one at a time; why each node is held back (pure)
wheel.py      a wheel's version and protocols read from the file, its sha256 (no install)
verify.py     a fetched wheel checked against its release: sha256, size, the admin's signature
health.py     the health check a new version must pass after switching (pure)
transfer.py   the wheel travels peer to peer over the mesh rpc "release", verified before use
switch.py     the only I/O that changes the node: a new virtualenv beside the running one, the
              `current` link, the switch record the supervisor acts on
supervise.py  the small supervisor process: runs the new version on trial, rolls back on failure
agent.py      the session task: reports this node's version, follows the rollout, switches
"""
