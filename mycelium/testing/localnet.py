"""A small deterministic in-process network of consensus cores, for tests, demos and benchmarks.

Virtual time, one seeded RNG, one event heap: a run is a pure function of its arguments. Messages
are delivered with a random delay, may be dropped while `lossy_until` has not passed, and nodes may
be wrapped by Byzantine behaviours (any object with the Core interface). Effects other than
Send/Broadcast/SetTimer are recorded per node in `outputs`. The fuller mycelium.sim does the same
with more faults; this one exists so consensus can be tested on its own.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from itertools import count
from random import Random
from typing import Any, Callable

from mycelium.shell.interpreter import Interpreter
from mycelium.encoding import hash_value
from mycelium.identity import NodeId, NodeKey

from mycelium.consensus.config import ConsensusConfig
from mycelium.consensus.core import ConsensusCore
from mycelium.consensus.outcomes import Decided, PersistLock

GENESIS_HASH = hash_value("genesis", person=b"myc-test-genesis")


def localnet_key(seed: int, index: int) -> NodeKey:
    return NodeKey.from_seed(hash_value([seed, index], person=b"myc-test-key"))


@dataclass
class LedgerApp:
    """A toy application: operations are short strings; the candidate hash chains them.
    `schedule` maps a first height to the validator set from that height on."""

    schedule: dict[int, list[NodeId]]
    pending: list[str] = field(default_factory=list)
    decided: dict[int, tuple[bytes, tuple]] = field(default_factory=dict)

    def validators(self, height: int) -> list[NodeId]:
        start = max(h for h in self.schedule if h <= height)
        return sorted(self.schedule[start])

    def make_batch(self, height: int) -> list[Any]:
        return list(self.pending[:8])

    def validate_batch(self, height: int, batch: list[Any]) -> bool:
        return all(isinstance(op, str) and 0 < len(op) <= 64 for op in batch)

    def execute(self, height: int, batch: list[Any], prev_hash: bytes) -> bytes:
        return hash_value([height, prev_hash, batch], person=b"myc-test-exec")

    def commit(self, height: int, value: bytes, batch: list[Any]) -> None:
        self.decided[height] = (value, tuple(batch))
        self.pending = [op for op in self.pending if op not in batch]


class LocalNet:
    """n validators (sorted by node id) running ConsensusCore over a simulated network."""

    def __init__(self, n: int, *, seed: int = 0, config: ConsensusConfig | None = None,
                 max_delay_s: float = 0.05, drop_rate: float = 0.0, lossy_until: float = 0.0,
                 byzantine: dict[int, Callable[[Any, NodeKey, str], Any]] | None = None,
                 schedule: dict[int, list[int]] | None = None, extra_keys: int = 0) -> None:
        self.rng = Random(seed)
        self.network_id = hash_value(["localnet", seed]).hex()
        keys = sorted((localnet_key(seed, i) for i in range(n + extra_keys)), key=lambda k: k.node_id)
        self.keys = keys
        self.ids = [k.node_id for k in keys]
        sets = {h: [self.ids[i] for i in members] for h, members in (schedule or {0: list(range(n))}).items()}
        self.config = config or ConsensusConfig.local()
        self.max_delay_s, self.drop_rate, self.lossy_until = max_delay_s, drop_rate, lossy_until
        self.apps = [LedgerApp(dict(sets)) for _ in keys]
        self.cores: list[Any] = [
            ConsensusCore(k, self.network_id, app, self.config, height=1, prev_hash=GENESIS_HASH)
            for k, app in zip(keys, self.apps)
        ]
        self.byzantine = set((byzantine or {}).keys())
        for i, wrap in (byzantine or {}).items():
            self.cores[i] = wrap(self.cores[i], keys[i], self.network_id)
        self.outputs: list[list[Any]] = [[] for _ in keys]
        self._interpreters = [self._interpreter(i) for i in range(len(keys))]
        self.up = [True] * len(keys)
        self.now = 0.0
        self._queue: list[tuple[float, int, str, int, Any]] = []
        self._seq = count()
        self._timers: dict[tuple[int, str], float] = {}
        self.delivered = 0
        for i in range(len(keys)):
            self._push(self.rng.uniform(0, 0.01), "tick", i, None)

    def _push(self, at: float, kind: str, node: int, payload: Any) -> None:
        heapq.heappush(self._queue, (at, next(self._seq), kind, node, payload))

    def _deliver(self, sender: int, to: int, message: Any) -> None:
        if to == sender or (self.now < self.lossy_until and self.rng.random() < self.drop_rate):
            return
        self._push(self.now + self.rng.uniform(0.001, self.max_delay_s), "msg", to, (self.ids[sender], message))

    def _handle(self, node: int, effects: list[Any]) -> None:
        self._interpreters[node](effects)

    def _interpreter(self, node: int) -> Interpreter:
        def broadcast(message: Any) -> None:
            for to in range(len(self.cores)):
                self._deliver(node, to, message)

        def send(to: NodeId, message: Any) -> None:
            if to in self.ids:
                self._deliver(node, self.ids.index(to), message)

        def set_timer(name: str, at: float) -> None:
            self._timers[(node, name)] = at
            self._push(max(at, self.now), "timer", node, name)

        return Interpreter(send=send, broadcast=broadcast, set_timer=set_timer, other=self.outputs[node].append)

    def run(self, until: float, stop: Callable[[LocalNet], bool] | None = None) -> None:
        while self._queue and self._queue[0][0] <= until:
            at, _, kind, node, payload = heapq.heappop(self._queue)
            self.now = max(self.now, at)
            if not self.up[node]:
                continue
            core = self.cores[node]
            if kind == "msg":
                self.delivered += 1
                self._handle(node, core.on_message(payload[0], payload[1], self.now))
            elif kind == "tick" or self._timers.get((node, payload)) == at:
                self._handle(node, core.on_tick(self.now))
            if stop is not None and stop(self):
                return
        self.now = max(self.now, until)

    # -- crashes -----------------------------------------------------------------------------------

    def crash(self, node: int) -> None:
        """Stop `node` (kill -9): it loses its timers and every message sent to it while down."""
        self.up[node] = False

    def restart(self, node: int) -> None:
        """Rebuild `node` from what it had on disk: its decided heights (the application's store)
        and the last PersistLock state, and boot it."""
        app = self.apps[node]
        height = max(app.decided, default=0) + 1
        prev_hash = app.decided[height - 1][0] if height > 1 else GENESIS_HASH
        locks = [e.state for e in self.outputs[node] if isinstance(e, PersistLock)]
        self.cores[node] = ConsensusCore.restore(
            self.keys[node], self.network_id, app, self.config, height=height, prev_hash=prev_hash,
            state=locks[-1] if locks else None,
        )
        self.up[node] = True
        self._timers = {k: v for k, v in self._timers.items() if k[0] != node}
        self._push(self.now, "tick", node, None)

    # -- observations ------------------------------------------------------------------------------

    def honest(self) -> list[int]:
        return [i for i in range(len(self.cores)) if i not in self.byzantine]

    def decisions(self, node: int) -> dict[int, Decided]:
        return {d.height: d for d in self.outputs[node] if isinstance(d, Decided)}

    def min_height(self, nodes: list[int] | None = None) -> int:
        """The lowest number of heights decided by any of `nodes` (default: honest nodes that are up)."""
        nodes = [i for i in self.honest() if self.up[i]] if nodes is None else nodes
        return min(len(self.decisions(i)) for i in nodes)
