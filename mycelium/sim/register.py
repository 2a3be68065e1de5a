"""A tiny reference protocol for the simulator itself: gossip of one max-register.

Each node holds a register (value, writer). While `now < write_until_s` every node writes, every
`write_every_rounds` rounds, the number of the current write window (now // (interval_s x
write_every_rounds)), so most nodes write equal values and the writer id breaks the tie; and every `interval_s` it pushes its register to `fanout` pseudo-random peers.
Merge keeps the larger (value, writer) pair: a join-semilattice, so all replicas converge after the
writes stop. `RegisterGossip.merge` is a static method on purpose: tests replace it with a broken
rule and check that the simulator's invariants catch it.

It exists to test and benchmark `mycelium.sim` without depending on a real protocol; it is not part
of Mycelium's wire protocol.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any

from mycelium.shell.effects import Send, SetTimer
from mycelium.encoding import EncodingError, canonical, decode
from mycelium.identity import NodeId
from mycelium.sim.byzantine import ByzantineHooks
from mycelium.sim.invariants import Converged, EveryHonestNode
from mycelium.sim.protocols import Scenario, ScenarioParams


@dataclass(frozen=True, slots=True)
class RegisterValue:
    value: int
    writer: NodeId

    def to_wire(self) -> list:
        return [self.value, self.writer]

    @classmethod
    def from_wire(cls, obj: object) -> RegisterValue:
        if not (isinstance(obj, list) and len(obj) == 2 and type(obj[0]) is int and isinstance(obj[1], str)):
            raise EncodingError(f"a register value is [int, str], got {obj!r}")
        return cls(obj[0], obj[1])


class RegisterCodec:
    """Canonical msgpack of [value, writer]; anything else fails to decode (EncodingError is a ValueError)."""

    def encode(self, message: RegisterValue) -> bytes:
        return canonical(message.to_wire())

    def decode(self, data: bytes) -> RegisterValue:
        return RegisterValue.from_wire(decode(data, max_size=1024))


@dataclass(frozen=True, slots=True)
class RegisterConfig:
    interval_s: float = 1.0  # time between gossip rounds
    fanout: int = 2  # peers pushed to per round; more = faster convergence, more messages
    write_every_rounds: int = 5  # a node writes once per this many rounds
    write_until_s: float = float("inf")  # local time after which nobody writes (so replicas can converge)


class RegisterGossip:
    """Sans-IO core (see mycelium.shell.effects.Core); persists its register across crashes."""

    def __init__(self, node_id: NodeId, peers: list[NodeId], config: RegisterConfig, persisted: Any = None) -> None:
        self.node_id = node_id
        self.peers = peers
        self.config = config
        self.register = RegisterValue(0, "")
        self.last_write = RegisterValue(0, "")  # our latest own write: must never be lost
        self.rounds = 0
        self.rejected = 0  # messages that were not register values (dropped and counted)
        self._state = zlib.crc32(node_id.encode()) | 1  # xorshift state for peer choice
        if persisted is not None:
            self.register, self.last_write = persisted

    @staticmethod
    def merge(mine: RegisterValue, theirs: RegisterValue) -> RegisterValue:
        return theirs if (theirs.value, theirs.writer) > (mine.value, mine.writer) else mine

    def persist(self) -> tuple[RegisterValue, RegisterValue]:
        return (self.register, self.last_write)

    def on_message(self, sender: NodeId, message: Any, now: float) -> list:
        if type(message) is not RegisterValue:
            self.rejected += 1
            return []
        self.register = self.merge(self.register, message)
        return []

    def on_tick(self, now: float) -> list:
        cfg = self.config
        self.rounds += 1
        if now < cfg.write_until_s and self.rounds % cfg.write_every_rounds == 0:
            epoch = int(now // (cfg.interval_s * cfg.write_every_rounds))  # shared by all writers in a window
            self.last_write = RegisterValue(epoch, self.node_id)
            self.register = self.merge(self.register, self.last_write)
        effects: list = [SetTimer("gossip", now + cfg.interval_s)]
        if self.peers:
            for _ in range(cfg.fanout):
                x = self._state
                x ^= (x << 13) & 0xFFFFFFFF
                x ^= x >> 17
                x ^= (x << 5) & 0xFFFFFFFF
                self._state = x
                effects.append(Send(self.peers[x % len(self.peers)], self.register))
        return effects


def own_write_kept(core: RegisterGossip) -> str | None:
    """No write is lost: the register never falls below the node's own latest value (equal values
    written by others are as good; the writer only breaks ties)."""
    mine, own = core.register, core.last_write
    if mine.value < own.value:
        return f"register {mine} is below the node's own write {own}"
    return None


def scenario(params: ScenarioParams) -> Scenario:
    ids = [f"n{i:04d}" for i in range(params.nodes)]
    config = RegisterConfig(write_until_s=params.duration_s)

    def make_core(node_id: NodeId, persisted: Any) -> RegisterGossip:
        return RegisterGossip(node_id, [p for p in ids if p != node_id], config, persisted)

    def mutate(author: NodeId, message: Any, rng: Any) -> Any:
        if type(message) is not RegisterValue:
            return message
        # claims another node's write as its own: a bounded lie, so honest replicas can still converge
        return RegisterValue(message.value, author)

    def report(world: Any) -> dict:
        return {"rejected": sum(n.inner.rejected for n in world.nodes if n.up)}

    return Scenario(
        node_ids=ids,
        report=report,
        make_core=make_core,
        invariants=[
            EveryHonestNode(own_write_kept, name="own-write-kept"),
            Converged(lambda core: core.register, name="converged"),
        ],
        hooks=ByzantineHooks(mutate=mutate),
        codec=RegisterCodec() if params.wire else None,
    )
