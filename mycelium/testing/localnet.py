"""Consensus validators on the simulator's World (mycelium.sim.world), the one in-process network.

A view for consensus tests: n validators (sorted by node id) with the toy LedgerApp, a uniform
delay in [1 ms, `max_delay_s`], loss at `drop_rate` until `lossy_until`, Byzantine validators
from mycelium.sim.byzantine (`byzantine={node: "equivocate" | (behaviour, options)}`, made
consensus-aware by `consensus_hooks`), and every protocol output of node i in `outputs[i]`. Crashes and
restarts are the World's; a restarted node boots from its disk as in the consensus scenario (its
decided heights and last PersistLock). A run is a pure function of its arguments.
"""

from __future__ import annotations

from random import Random
from typing import Any

from mycelium.consensus.config import ConsensusConfig
from mycelium.consensus.outcomes import Decided, PersistLock
from mycelium.encoding import hash_value
from mycelium.identity import NodeId, NodeKey
from mycelium.sim.byzantine import make_wrapper
from mycelium.sim.consensus import boot_validator, consensus_hooks
from mycelium.sim.network import NetworkConfig, UniformLatency
from mycelium.sim.toy_ledger import GENESIS_HASH, LedgerApp
from mycelium.sim.world import World

__all__ = ["GENESIS_HASH", "LedgerApp", "LocalNet", "localnet_key"]


def localnet_key(seed: int, index: int) -> NodeKey:
    return NodeKey.from_seed(hash_value([seed, index], person=b"myc-test-key"))


class LocalNet:
    def __init__(self, n: int, *, seed: int = 0, config: ConsensusConfig | None = None,
                 max_delay_s: float = 0.05, drop_rate: float = 0.0, lossy_until: float = 0.0,
                 byzantine: dict[int, str | tuple[str, dict]] | None = None,
                 schedule: dict[int, list[int]] | None = None, extra_keys: int = 0) -> None:
        self.network_id = hash_value(["localnet", seed]).hex()
        self.keys = sorted((localnet_key(seed, i) for i in range(n + extra_keys)), key=lambda k: k.node_id)
        self.ids: list[NodeId] = [k.node_id for k in self.keys]
        sets = {h: [self.ids[i] for i in members] for h, members in (schedule or {0: list(range(n))}).items()}
        self.config = config or ConsensusConfig.local()
        self.apps = [LedgerApp(dict(sets)) for _ in self.keys]
        self.outputs: list[list[Any]] = [[] for _ in self.keys]
        self.byzantine = set(byzantine or {})
        network = NetworkConfig(latency=UniformLatency(0.001, max_delay_s), loss=drop_rate if lossy_until > 0 else 0.0)
        self.world = World(self.ids, self._boot, rng=Random(seed), network=network, boot_jitter_s=0.01,
                           on_output=lambda world, node, effect: self.outputs[node.index].append(effect))
        self.world.schedule(lossy_until, lambda world: setattr(world.net, "loss", 0.0))
        hooks = consensus_hooks({k.node_id: k for k in self.keys}, self.network_id)
        for i, spec in (byzantine or {}).items():
            behaviour, options = (spec, {}) if isinstance(spec, str) else spec
            peers = [nid for nid in self.ids if nid != self.ids[i]]
            self.world.add_wrapper(i, make_wrapper(behaviour, self.ids[i], peers, self.world.rng, hooks, options),
                                   behaviour)
        self.world.start()

    def _boot(self, node_id: NodeId, persisted: Any) -> Any:
        i = self.ids.index(node_id)
        locks = [e.state for e in self.outputs[i] if isinstance(e, PersistLock)]
        return boot_validator(self.keys[i], self.network_id, self.apps[i], self.config, locks[-1] if locks else None)

    # -- the World, seen per validator ----------------------------------------------------------------

    def run(self, until: float) -> None:
        self.world.run_until(until)

    def crash(self, node: int) -> None:
        """Stop `node` (kill -9): it loses its timers and every message sent to it while down."""
        self.world.crash(node)

    def restart(self, node: int) -> None:
        self.world.restart(node)

    @property
    def now(self) -> float:
        return self.world.now

    @property
    def cores(self) -> list[Any]:
        return [node.core for node in self.world.nodes]

    @property
    def up(self) -> list[bool]:
        return [node.up for node in self.world.nodes]

    def honest(self) -> list[int]:
        return [i for i in range(len(self.ids)) if i not in self.byzantine]

    def decisions(self, node: int) -> dict[int, Decided]:
        return {d.height: d for d in self.outputs[node] if isinstance(d, Decided)}

    def min_height(self, nodes: list[int] | None = None) -> int:
        """The lowest number of heights decided by any of `nodes` (default: honest nodes that are up)."""
        nodes = [i for i in self.honest() if self.up[i]] if nodes is None else nodes
        return min(len(self.decisions(i)) for i in nodes)
