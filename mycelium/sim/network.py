"""The simulated network: latency, loss, duplication, reordering, partitions and slow nodes.

Everything random is drawn from the world's one seeded `random.Random`, never the global one, and
only when the corresponding fault is active (so a fault-free run draws exactly one latency sample per
message). Nodes are addressed by their index in the world (0..n-1), not their node id, to keep the
hot path cheap.

Partitions are modelled as *components*: every node carries a bit mask of the components it is in,
and two nodes can talk iff their masks share a bit. No partition = everyone in component 1. Two
halves = masks 1 and 2; a bridge node sits in both (mask 3); an isolated node has a bit of its own.
Reachability is checked when a message is sent (a partition cuts connections; messages already on
the wire still arrive).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from random import Random
from typing import Iterable, Protocol


class SimConfigError(ValueError):
    """A simulator setting or fault record is invalid; the message names the field and the fix."""


# ------------------------------------------------------------------------------------ latency


class Latency(Protocol):
    def sample(self, rng: Random) -> float: ...

    def to_json(self) -> dict: ...


@dataclass(frozen=True, slots=True)
class FixedLatency:
    """Every message takes exactly `delay_s` (useful for hand-written scenarios)."""

    delay_s: float = 0.05  # one-way delay in seconds

    def sample(self, rng: Random) -> float:
        return self.delay_s

    def to_json(self) -> dict:
        return {"kind": "fixed", "delay_s": self.delay_s}


@dataclass(frozen=True, slots=True)
class UniformLatency:
    """Delay drawn uniformly from [low_s, high_s]; different delays reorder messages naturally."""

    low_s: float = 0.01  # fastest one-way delay in seconds
    high_s: float = 0.2  # slowest one-way delay in seconds

    def sample(self, rng: Random) -> float:
        return self.low_s + (self.high_s - self.low_s) * rng.random()

    def to_json(self) -> dict:
        return {"kind": "uniform", "low_s": self.low_s, "high_s": self.high_s}


@dataclass(frozen=True, slots=True)
class LogNormalLatency:
    """Internet-like delay: log-normal around `median_s` with a long tail, capped at `max_s`.

    delay = min(max_s, median_s * exp(sigma * N(0, 1))); sigma 0.5 puts the 99th percentile near
    3.2 x the median.
    """

    median_s: float = 0.05  # typical one-way delay in seconds
    sigma: float = 0.5  # spread of log(delay); larger = heavier tail
    max_s: float = 2.0  # cap, so a single sample cannot stall a run

    def sample(self, rng: Random) -> float:
        return min(self.max_s, self.median_s * math.exp(self.sigma * rng.gauss(0.0, 1.0)))

    def to_json(self) -> dict:
        return {"kind": "lognormal", "median_s": self.median_s, "sigma": self.sigma, "max_s": self.max_s}


def latency_from_json(obj: object) -> Latency:
    """Build a latency model from its JSON form, e.g. {"kind": "uniform", "low_s": 0.01, "high_s": 0.2}."""
    if not isinstance(obj, dict) or not isinstance(obj.get("kind"), str):
        raise SimConfigError(f"latency must be an object with a 'kind', got {obj!r}")
    kinds = {"fixed": FixedLatency, "uniform": UniformLatency, "lognormal": LogNormalLatency}
    cls = kinds.get(obj["kind"])
    if cls is None:
        raise SimConfigError(f"unknown latency kind {obj['kind']!r}; use one of {sorted(kinds)}")
    fields = {k: v for k, v in obj.items() if k != "kind"}
    try:
        model = cls(**{k: float(v) for k, v in fields.items()})
    except (TypeError, ValueError) as exc:
        raise SimConfigError(f"bad {obj['kind']} latency {fields}: {exc}") from exc
    if any(v < 0 for v in fields.values()):
        raise SimConfigError(f"latency parameters must be >= 0, got {fields}")
    return model


# ------------------------------------------------------------------------------------ network

ALL_CONNECTED = 1  # the component mask every node has when there is no partition


@dataclass(frozen=True, slots=True)
class NetworkConfig:
    """The network's steady state before any fault; faults change the live `Network` copy."""

    latency: Latency = LogNormalLatency()  # one-way delay model
    loss: float = 0.0  # probability a message is silently dropped
    duplicate: float = 0.0  # probability a delivered message arrives a second time
    reorder: float = 0.0  # probability a message gets an extra random delay (overtaken by later ones)
    reorder_delay_s: float = 1.0  # the extra delay is uniform in [0, reorder_delay_s]

    @classmethod
    def lan(cls) -> NetworkConfig:
        """A quiet local network: 1-5 ms, nothing lost."""
        return cls(latency=UniformLatency(0.001, 0.005))

    @classmethod
    def wan(cls) -> NetworkConfig:
        """Home connections over the internet: ~50 ms log-normal with a tail, 1% loss."""
        return cls(latency=LogNormalLatency(0.05, 0.5, 2.0), loss=0.01)


class Network:
    """The live network state the world consults on every send. Faults mutate it; `heal()` resets."""

    __slots__ = ("base", "latency", "loss", "duplicate", "reorder", "reorder_delay_s", "masks", "slow")

    def __init__(self, config: NetworkConfig, n_nodes: int) -> None:
        self.base = config
        self.masks: list[int] = [ALL_CONNECTED] * n_nodes  # component bit mask per node
        self.slow: list[float] = [1.0] * n_nodes  # latency multiplier for messages to/from a node
        self.reset_links()

    def reset_links(self) -> None:
        """Back to the configured latency/loss/duplication/reordering."""
        c = self.base
        self.latency = c.latency
        self.loss = c.loss
        self.duplicate = c.duplicate
        self.reorder = c.reorder
        self.reorder_delay_s = c.reorder_delay_s

    def heal(self) -> None:
        """Remove every partition, slow node and link fault (clock offsets are the world's)."""
        self.masks = [ALL_CONNECTED] * len(self.masks)
        self.slow = [1.0] * len(self.slow)
        self.reset_links()

    def partition(self, groups: Iterable[Iterable[int]]) -> None:
        """Split the network into components. A node listed in several groups bridges them; a node
        in no group is isolated (a component of its own)."""
        n = len(self.masks)
        masks = [0] * n
        bit = 1
        for group in groups:
            for i in group:
                if not 0 <= i < n:
                    raise SimConfigError(f"partition names node {i} but the world has nodes 0..{n - 1}")
                masks[i] |= bit
            bit <<= 1
        for i in range(n):
            if masks[i] == 0:
                masks[i] = bit
                bit <<= 1
        self.masks = masks

    def connected(self, a: int, b: int) -> bool:
        return bool(self.masks[a] & self.masks[b])

    def delay(self, rng: Random, src: int, dst: int) -> float:
        """One message's delay from `src` to `dst` (latency x slowest endpoint, plus reordering)."""
        d = self.latency.sample(rng)
        slow = max(self.slow[src], self.slow[dst])
        if slow != 1.0:
            d *= slow
        if self.reorder and rng.random() < self.reorder:
            d += self.reorder_delay_s * rng.random()
        return d
