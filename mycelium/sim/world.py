"""The world: N sans-IO cores, one virtual clock, one seeded RNG, one event queue.

Events live in a heap ordered by (virtual time, sequence number); the sequence number is a global
counter, so two events at the same instant run in the order they were scheduled and a run is a pure
function of (seed, code, configuration). The world never reads the wall clock and never touches the
global `random`.

How cores are driven (any object with `on_message(sender, message, now)` / `on_tick(now)`, see
`mycelium.shell.effects.Core`):
- a node is built by `make_core(node_id, persisted_state)`; `persisted_state` is None at first boot;
- when a node boots (first start or restart) the world calls `on_tick(now)` once, after a seeded
  random jitter of up to `boot_jitter_s`, so the core can set its first timers;
- effects are carried out by the shell's one interpreter (mycelium.shell.interpreter), wired here to
  the virtual wire: `Send` / `Broadcast` go through the network model; `Broadcast` reaches every other node;
- `SetTimer(name, at)` calls `on_tick` at the node's local time `at` (a later timer with the same
  name replaces the earlier one; a clock jump re-schedules pending timers on the new local clock);
- any other effect is protocol output: it is counted by type name and handed to the handler
  registered for its type in `outputs` ({Decided: fn(world, node, effect), …}, passed to the
  interpreter as its per-type table), else to `on_output(world, node, effect)` if given.

Tests can also act as the wire's adversary or observer: `tap(src, dst, message)` sees every message
put on the wire; `in_flight()` / `deliver_one(k, drop=)` take the k-th message in flight out of
order (a model checker's choice; with a large latency nothing arrives unless the test delivers
it); `apply(i, effects)` carries out effects a test obtained from node i's core directly.

A node's `now` is virtual time + its clock offset: the offset starts at `clock_origin_s` (e.g. a
unix time, for protocols that sign timestamps) and clock-jump faults change it.

Crash and restart: `crash(i)` keeps what the core's optional `persist()` returns (see `Persistent`;
the model is "everything the core relies on was fsynced before it sent anything", so the state at
the crash instant is the durable state), drops its timers and every message addressed to it while
it is down. `restart(i)` rebuilds the core with `make_core(node_id, persisted)` (None if the core
has no `persist()` or the disk was wiped) and re-applies the node's Byzantine wrappers.

Messages are passed as objects by default (fast). With a `Codec`, every message is encoded to bytes
when sent and decoded on delivery, as a real shell would: bytes that do not decode are dropped and
counted as `undecodable`, so garbage and bit-flips exercise the real decoder. Without a codec, raw
`bytes` messages (garbage from a Byzantine node) are delivered as-is and the core must drop them.
"""

from __future__ import annotations

import heapq
from itertools import count
from random import Random
from typing import Any, Callable, Iterable, Mapping, Protocol, runtime_checkable

from mycelium.identity import NodeId
from mycelium.shell.interpreter import Interpreter
from mycelium.sim.network import Network, NetworkConfig, SimConfigError

_DELIVER, _TIMER, _CALL, _BOOT = 0, 1, 2, 3


@runtime_checkable
class Persistent(Protocol):
    """Optional: a core that can survive a crash. `persist()` returns its durable state, which the
    world passes back to `make_core(node_id, state)` on restart. It must not be mutated afterwards."""

    def persist(self) -> Any: ...


class Codec(Protocol):
    """Optional wire format: encode a message to bytes, decode bytes back (raise ValueError on junk)."""

    def encode(self, message: Any) -> bytes: ...

    def decode(self, data: bytes) -> Any: ...


MakeCore = Callable[[NodeId, Any], Any]
OutputHandler = Callable[["World", "SimNode", Any], None]  # (world, node, effect)
Wrapper = Callable[[Any], Any]  # core -> core (a Byzantine behaviour)


class SimNode:
    """One simulated node: its core, liveness, clock offset and pending timers."""

    __slots__ = ("index", "id", "core", "up", "offset", "timers", "wrappers", "persisted", "tags", "incarnation",
                 "interpret")

    def __init__(self, index: int, node_id: NodeId) -> None:
        self.index = index
        self.id = node_id
        self.core: Any = None
        self.up = False
        self.offset = 0.0  # local clock = virtual time + offset
        self.timers: dict[str, tuple[float, int]] = {}  # name -> (local deadline, event sequence)
        self.wrappers: list[Wrapper] = []  # Byzantine behaviours, innermost first
        self.persisted: Any = None
        self.tags: list[str] = []  # behaviour names, for reports ("equivocate", ...)
        self.incarnation = 0  # boots so far; a pending boot event of an earlier life is ignored
        self.interpret: Interpreter | None = None  # the shell's one interpreter, wired to the world

    @property
    def honest(self) -> bool:
        return not self.wrappers

    @property
    def inner(self) -> Any:
        """The protocol core under any Byzantine wrappers (what invariants inspect)."""
        core = self.core
        while hasattr(core, "inner_core"):
            core = core.inner_core
        return core


class Stats:
    """Counters of one run; `as_dict()` is part of the summary (deterministic)."""

    __slots__ = (
        "events", "sent", "delivered", "duplicated", "timers_fired", "boots", "crashes",
        "dropped_partition", "dropped_loss", "dropped_down", "dropped_unknown_peer", "undecodable",
        "outputs",
    )

    def __init__(self) -> None:
        for name in self.__slots__:
            setattr(self, name, 0)
        self.outputs: dict[str, int] = {}

    def as_dict(self) -> dict:
        d = {name: getattr(self, name) for name in self.__slots__ if name != "outputs"}
        d["outputs"] = dict(sorted(self.outputs.items()))
        return d


class World:
    def __init__(
        self,
        node_ids: Iterable[NodeId],
        make_core: MakeCore,
        *,
        rng: Random,
        network: NetworkConfig | None = None,
        codec: Codec | None = None,
        on_output: OutputHandler | None = None,
        outputs: Mapping[type, OutputHandler] | None = None,
        tap: Callable[[int, int, Any], None] | None = None,
        boot_jitter_s: float = 1.0,
        clock_origin_s: float = 0.0,
        check_every: int = 100,
    ) -> None:
        ids = list(node_ids)
        if len(set(ids)) != len(ids):
            raise SimConfigError("node ids must be distinct")
        self.rng = rng
        self.make_core = make_core
        self.codec = codec
        self.on_output = on_output
        self.outputs = dict(outputs or {})
        self.tap = tap
        self.boot_jitter_s = boot_jitter_s
        self.nodes = [SimNode(i, nid) for i, nid in enumerate(ids)]
        for node in self.nodes:
            node.offset = clock_origin_s
            node.interpret = self._interpreter(node)
        self.index = {nid: i for i, nid in enumerate(ids)}
        self.net = Network(network or NetworkConfig(), len(ids))
        self.stats = Stats()
        self.now = 0.0
        self._heap: list[tuple] = []
        self._seq = count()
        self.checkers: list[Callable[[World], None]] = []  # run every `check_every` events
        self.check_every = check_every
        self._next_check = check_every

    # -------------------------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Boot every node (each after its own seeded jitter)."""
        for node in self.nodes:
            self.boot(node.index)

    def boot(self, i: int, persisted: Any = None) -> None:
        node = self.nodes[i]
        core = self.make_core(node.id, persisted)
        for wrap in node.wrappers:
            core = wrap(core)
        node.core = core
        node.up = True
        node.timers = {}
        node.incarnation += 1
        delay = self.boot_jitter_s * self.rng.random() if self.boot_jitter_s else 0.0
        heapq.heappush(self._heap, (self.now + delay, next(self._seq), _BOOT, i, node.incarnation, None))

    def crash(self, i: int) -> None:
        node = self.nodes[i]
        if not node.up:
            return
        persist = getattr(node.core, "persist", None)
        node.persisted = persist() if persist is not None else None
        node.up = False
        node.core = None
        node.timers = {}
        self.stats.crashes += 1

    def restart(self, i: int, *, wipe: bool = False) -> None:
        node = self.nodes[i]
        if node.up:
            return
        self.boot(i, None if wipe else node.persisted)

    def add_wrapper(self, i: int, wrap: Wrapper, tag: str) -> None:
        """Make node i Byzantine from now on (and after restarts)."""
        node = self.nodes[i]
        node.wrappers.append(wrap)
        node.tags.append(tag)
        if node.up:
            node.core = wrap(node.core)

    def jump_clock(self, i: int, delta_s: float) -> None:
        """Move node i's clock by delta_s; pending timers follow the node's local clock."""
        node = self.nodes[i]
        node.offset += delta_s
        for name, (at, _) in list(node.timers.items()):
            self._set_timer(node, name, at)

    def schedule(self, at: float, fn: Callable[[World], None]) -> None:
        """Run `fn(world)` at virtual time `at` (faults, heal, custom scenario steps)."""
        heapq.heappush(self._heap, (max(at, self.now), next(self._seq), _CALL, fn, None, None))

    def cancel_calls(self) -> None:
        """Drop every pending `schedule`d call (the plan's remaining faults and undos)."""
        self._heap[:] = [ev for ev in self._heap if ev[2] != _CALL]  # in place: run_until holds a reference
        heapq.heapify(self._heap)

    def local_now(self, i: int) -> float:
        return self.now + self.nodes[i].offset

    def honest_nodes(self, *, up_only: bool = True) -> list[SimNode]:
        return [n for n in self.nodes if n.honest and (n.up or not up_only)]

    # -------------------------------------------------------------------------------- running

    def run_until(self, t_end: float) -> None:
        """Process every event up to and including virtual time `t_end`; the clock ends at t_end."""
        heap = self._heap
        pop = heapq.heappop
        stats = self.stats
        nodes = self.nodes
        while heap and heap[0][0] <= t_end:
            t, seq, kind, a, b, c = pop(heap)
            self.now = t
            stats.events += 1
            if kind == _DELIVER:
                self._deliver(t, a, b, c)
            elif kind == _TIMER:
                node = nodes[a]
                pending = node.timers.get(b)
                if node.up and pending is not None and pending[1] == c:
                    del node.timers[b]
                    stats.timers_fired += 1
                    self._apply(node, node.core.on_tick(t + node.offset))
            elif kind == _BOOT:
                node = nodes[a]
                if node.up and node.incarnation == b:  # not crashed (and maybe rebooted) meanwhile
                    stats.boots += 1
                    self._apply(node, node.core.on_tick(t + node.offset))
            else:
                a(self)
            if stats.events >= self._next_check:
                self._next_check = stats.events + self.check_every
                self.check()
        if t_end > self.now:
            self.now = t_end

    def _deliver(self, t: float, dst: int, src: int, payload: Any) -> None:
        node = self.nodes[dst]
        if not node.up:
            self.stats.dropped_down += 1
            return
        message = payload
        if self.codec is not None:
            try:
                message = self.codec.decode(payload)
            except ValueError:  # a peer's junk: dropped and counted, as a shell would
                self.stats.undecodable += 1
                return
        self.stats.delivered += 1
        self._apply(node, node.core.on_message(self.nodes[src].id, message, t + node.offset))

    def check(self) -> None:
        for checker in self.checkers:
            checker(self)

    # -------------------------------------------------------------------------------- effects

    def _apply(self, node: SimNode, effects: Iterable[Any]) -> None:
        node.interpret(effects)

    def apply(self, i: int, effects: Iterable[Any]) -> None:
        """Carry out effects a test got from node i's core directly (e.g. `core.publish(...)`)."""
        self._apply(self.nodes[i], effects)

    def _interpreter(self, node: SimNode) -> Interpreter:
        """The shell's interpreter with the world as its wire: Send/Broadcast through the network
        model, SetTimer on the node's local clock, anything else counted and handed to its handler in
        `outputs`, else to on_output."""
        src = node.index

        def send(to: NodeId, message: Any) -> None:
            dst = self.index.get(to)
            if dst is None:
                self.stats.dropped_unknown_peer += 1
                return
            self.send(src, dst, self._encode(message))

        def broadcast(message: Any) -> None:
            payload = self._encode(message)
            for dst in range(len(self.nodes)):
                if dst != src:
                    self.send(src, dst, payload)

        def counted(handler: OutputHandler | None) -> Callable[[Any], None]:
            def output(effect: Any) -> None:
                name = type(effect).__name__
                self.stats.outputs[name] = self.stats.outputs.get(name, 0) + 1
                if handler is not None:
                    handler(self, node, effect)
            return output

        return Interpreter(send=send, broadcast=broadcast, set_timer=lambda name, at: self._set_timer(node, name, at),
                           outputs={kind: counted(fn) for kind, fn in self.outputs.items()},
                           other=counted(self.on_output))

    def _encode(self, message: Any) -> Any:
        if self.codec is None or isinstance(message, (bytes, bytearray)):
            return message
        return self.codec.encode(message)

    def _set_timer(self, node: SimNode, name: str, at: float) -> None:
        seq = next(self._seq)
        node.timers[name] = (at, seq)
        fire = at - node.offset
        if fire < self.now:
            fire = self.now
        heapq.heappush(self._heap, (fire, seq, _TIMER, node.index, name, seq))

    def send(self, src: int, dst: int, payload: Any) -> None:
        """Put one message on the wire from node `src` to node `dst` (already encoded if a codec is set)."""
        net = self.net
        stats = self.stats
        stats.sent += 1
        if self.tap is not None:
            self.tap(src, dst, payload)
        if not net.masks[src] & net.masks[dst]:
            stats.dropped_partition += 1
            return
        rng = self.rng
        if net.loss and rng.random() < net.loss:
            stats.dropped_loss += 1
            return
        heapq.heappush(
            self._heap, (self.now + net.delay(rng, src, dst), next(self._seq), _DELIVER, dst, src, payload)
        )
        if net.duplicate and rng.random() < net.duplicate:
            stats.duplicated += 1
            heapq.heappush(
                self._heap, (self.now + net.delay(rng, src, dst), next(self._seq), _DELIVER, dst, src, payload)
            )

    def in_flight(self) -> int:
        """How many messages are on the wire (sent, not yet delivered or dropped)."""
        return sum(1 for ev in self._heap if ev[2] == _DELIVER)

    def deliver_one(self, k: int, *, drop: bool = False) -> None:
        """Take the k-th message in flight (in arrival order) off the wire now and deliver it, or
        lose it: a test choosing the order (Hypothesis' rule machines) rather than the latency model."""
        flight = sorted(ev for ev in self._heap if ev[2] == _DELIVER)
        chosen = flight[k]
        self._heap.remove(chosen)
        heapq.heapify(self._heap)
        if drop:
            self.stats.dropped_loss += 1
        else:
            self._deliver(self.now, chosen[3], chosen[4], chosen[5])
