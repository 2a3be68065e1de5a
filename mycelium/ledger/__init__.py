"""The ledger: what the network agreed on, and the one deterministic function that applies it.

operations.py  signed operations (join, leave, profile, liveness, deploy, …) and `apply_batch`, the
               deterministic apply every validator runs (roles, placement, liveness, slashing)
store.py       Ledger: the Primary chain on disk; ConsensusApp: the consensus Application over it
"""
