"""Commit-reveal BFT consensus (Tendermint rounds and locks), trust and redundant execution. Pure.

- core.py        ConsensusCore: the state machine (messages and ticks in, effects out)
- messages.py    signed, versioned wire messages; commitment hashes and nonces
- outcomes.py    PersistLock, Decided, Evidence (+ verify_evidence), Participation effects
- votes.py       per-round vote bookkeeping and equivocation detection
- persist.py     checking persisted state before a restarted core resumes from it
- config.py      ConsensusConfig (timeouts that grow per round, heartbeat, rebroadcast)
- application.py the Application protocol the core calls (validators, batches, execute, commit)
- trust.py       fixed-point trust scores; redundant.py: k-node commit-reveal computations
- driver.py      the trio shell: runs the core over the mesh, fsyncs PersistLock before sending
(The simulator scenario is mycelium.sim.consensus; tests view it per validator through mycelium.testing.localnet.)
"""
