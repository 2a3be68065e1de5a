"""Byzantine behaviours as wrappers around any core.

A wrapper is itself a core: it passes inputs to the honest core inside (`inner_core`) and rewrites
the effects that come out. The behaviours are generic (they work on Send/Broadcast effects) and use
two optional protocol hooks from `ByzantineHooks`:
- `mutate(author, message, rng) -> message`: a plausible but false variant of `message` authored by
  `author` (e.g. a re-signed Latent entry with a bumped value). Used by `lie` and `equivocate`.
- `adopt(author, own, observed, rng) -> message`: pass off `observed` (another node's result) as
  `author`'s own. Used by `copy`; the default re-sends the observed message unchanged.
- `junk(author, message, rng) -> message`: protocol-shaped junk in place of `message` (broken
  fields, bad signatures, signed but absurd rounds). Used by `garbage`; the default is random bytes.

Every behaviour takes `types`: only messages whose type (`classify`) is listed are rewritten (all if
empty); the others go out as the honest core sent them.

Behaviours (names used in fault plans):
- equivocate: a broadcast goes out as two different versions, each to a random half of the peers;
- copy:       outgoing messages are replaced by the latest message of the same type seen from others;
- withhold:   outgoing messages are never sent;
- lie:        each outgoing message is replaced by `mutate(...)` with probability `probability`;
- garbage:    with probability `probability` a message is replaced by junk (or, with `keep`, junk is
              sent to the same recipients after it: a node that behaves and also sends junk).

All randomness comes from the world's seeded RNG.
"""

from __future__ import annotations

from dataclasses import dataclass
from random import Random
from typing import Any, Callable

from mycelium.shell.effects import Broadcast, Send
from mycelium.identity import NodeId
from mycelium.sim.network import SimConfigError

Mutate = Callable[[NodeId, Any, Random], Any]
Adopt = Callable[[NodeId, Any, Any, Random], Any]


@dataclass(frozen=True, slots=True)
class ByzantineHooks:
    """Protocol-specific help for the generic behaviours (None = behaviour unavailable / default)."""

    mutate: Mutate | None = None  # needed by "lie" and "equivocate"
    adopt: Adopt | None = None  # used by "copy"; None = re-send the observed message as is
    # names a message's type for the `types` option (e.g. decode bytes to "Digest"/"Delta");
    # None = the Python type name
    classify: Callable[[Any], str] | None = None
    junk: Mutate | None = None  # used by "garbage"; None = random bytes

    def type_of(self, message: Any) -> str:
        return type(message).__name__ if self.classify is None else self.classify(message)


class ByzantineCore:
    """Base wrapper: honest core inside, `rewrite()` applied to everything it emits."""

    behaviour = "honest"

    def __init__(self, inner: Any, node_id: NodeId, peers: list[NodeId], rng: Random, hooks: ByzantineHooks,
                 *, types: tuple[str, ...] = ()) -> None:
        self.inner_core = inner
        self.node_id = node_id
        self.peers = peers  # every other node id, in world order
        self.rng = rng
        self.hooks = hooks
        self.types = frozenset(types)  # message type names to rewrite; empty = every message

    def on_message(self, sender: NodeId, message: Any, now: float) -> list:
        self.observe(sender, message)
        return self.rewrite(self.inner_core.on_message(sender, message, now))

    def on_tick(self, now: float) -> list:
        return self.rewrite(self.inner_core.on_tick(now))

    def persist(self) -> Any:
        persist = getattr(self.inner_core, "persist", None)
        return persist() if persist is not None else None

    def observe(self, sender: NodeId, message: Any) -> None:
        """Hook for behaviours that learn from incoming traffic."""

    def rewrite(self, effects: list) -> list:
        out: list = []
        for effect in effects:
            kind = type(effect)
            if (kind is Send or kind is Broadcast) and (not self.types or self.hooks.type_of(effect.message) in self.types):
                out.extend(self.rewrite_message(effect))
            else:
                out.append(effect)
        return out

    def rewrite_message(self, effect: Send | Broadcast) -> list:
        return [effect]


def _with_message(effect: Send | Broadcast, message: Any) -> Send | Broadcast:
    return Send(effect.to, message) if type(effect) is Send else Broadcast(message)


class Equivocate(ByzantineCore):
    behaviour = "equivocate"

    def rewrite_message(self, effect: Send | Broadcast) -> list:
        mutate = self.hooks.mutate
        assert mutate is not None  # checked by make_wrapper
        if type(effect) is Send:  # one recipient: it gets one of the two versions at random
            if self.rng.random() < 0.5:
                return [Send(effect.to, mutate(self.node_id, effect.message, self.rng))]
            return [effect]
        other = mutate(self.node_id, effect.message, self.rng)
        out = []
        for peer in self.peers:
            out.append(Send(peer, effect.message if self.rng.random() < 0.5 else other))
        return out


class Copy(ByzantineCore):
    behaviour = "copy"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seen: dict[str, Any] = {}  # message type name -> latest such message from another node

    def observe(self, sender: NodeId, message: Any) -> None:
        self.seen[self.hooks.type_of(message)] = message

    def rewrite_message(self, effect: Send | Broadcast) -> list:
        observed = self.seen.get(self.hooks.type_of(effect.message))
        if observed is None:
            return [effect]
        adopt = self.hooks.adopt
        message = observed if adopt is None else adopt(self.node_id, effect.message, observed, self.rng)
        return [_with_message(effect, message)]


class Withhold(ByzantineCore):
    behaviour = "withhold"

    def rewrite_message(self, effect: Send | Broadcast) -> list:
        return []


class Lie(ByzantineCore):
    behaviour = "lie"

    def __init__(self, *args: Any, probability: float = 1.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.probability = probability

    def rewrite_message(self, effect: Send | Broadcast) -> list:
        mutate = self.hooks.mutate
        assert mutate is not None  # checked by make_wrapper
        if self.rng.random() < self.probability:
            return [_with_message(effect, mutate(self.node_id, effect.message, self.rng))]
        return [effect]


class Garbage(ByzantineCore):
    behaviour = "garbage"

    def __init__(self, *args: Any, probability: float = 0.5, max_bytes: int = 64, keep: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.probability = probability
        self.max_bytes = max_bytes
        self.keep = keep  # True = the real message still goes out, the junk follows it

    def rewrite_message(self, effect: Send | Broadcast) -> list:
        if self.rng.random() >= self.probability:
            return [effect]
        if self.hooks.junk is not None:
            junk = self.hooks.junk(self.node_id, effect.message, self.rng)
        else:
            junk = self.rng.randbytes(self.rng.randint(0, self.max_bytes))
        return [effect, _with_message(effect, junk)] if self.keep else [_with_message(effect, junk)]


BEHAVIOURS: dict[str, type[ByzantineCore]] = {
    cls.behaviour: cls for cls in (Equivocate, Copy, Withhold, Lie, Garbage)
}
NEEDS_MUTATE = frozenset({"equivocate", "lie"})


def available_behaviours(hooks: ByzantineHooks) -> list[str]:
    """Behaviour names a protocol with these hooks supports, in a fixed order."""
    return [b for b in BEHAVIOURS if b not in NEEDS_MUTATE or hooks.mutate is not None]


def make_wrapper(
    behaviour: str, node_id: NodeId, peers: list[NodeId], rng: Random, hooks: ByzantineHooks, options: dict
) -> Callable[[Any], ByzantineCore]:
    """A core -> Byzantine-core function for `behaviour`, validated now rather than mid-run."""
    cls = BEHAVIOURS.get(behaviour)
    if cls is None:
        raise SimConfigError(f"unknown Byzantine behaviour {behaviour!r}; use one of {sorted(BEHAVIOURS)}")
    if behaviour in NEEDS_MUTATE and hooks.mutate is None:
        raise SimConfigError(f"behaviour {behaviour!r} needs the protocol's mutate hook, which it does not provide")
    allowed = {"types"} | {"lie": {"probability"}, "garbage": {"probability", "max_bytes", "keep"}}.get(behaviour, set())
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise SimConfigError(f"behaviour {behaviour!r} takes options {sorted(allowed)}, not {unknown}")
    kwargs = dict(options)
    if "types" in kwargs:
        kwargs["types"] = tuple(kwargs["types"])

    def wrap(core: Any) -> ByzantineCore:
        return cls(core, node_id, peers, rng, hooks, **kwargs)

    return wrap
