"""Latent spore gossip (mycelium.spores) plugged into the simulator: `--protocol latent`.

Each simulated node is a `LatentNode`: the `LatentGossip` anti-entropy core plus what the daemon does
around it, reduced to what matters here: every `author_interval_s` (until the faulty phase ends) it
authors one signed entry, rotating through its NODE record, a USAGE series and a HEALTH observation
of a peer, and publishes it; it persists its store across crashes.

Invariants:
- limits (safety): no store ever holds more than the per-(author, type) caps, more than
  `max_authors` authors, or temporal entries outside the author's window;
- own-node-record-kept (safety): a node's own store always holds its NODE record at (at least) the
  highest version it authored (catches a merge that lets older versions win);
- converged (liveness): after heal and the quiet tail, all live honest stores have equal digests
  (catches a non-commutative tie-break, e.g. under equivocation).

Byzantine hooks: `mutate` re-signs the node's own entries in a Delta with a false body (same
version for equivocation, so honest replicas must break the tie identically); `classify` names
messages Digest / RangeRequest / Delta / garbage.
"""

from __future__ import annotations

from random import Random
from typing import Any

from mycelium.shell.effects import SetTimer
from mycelium.identity import NodeId, NodeKey
from mycelium.sim.byzantine import ByzantineHooks
from mycelium.sim.invariants import Converged, EveryHonestNode
from mycelium.sim.protocols import Scenario, ScenarioParams
from mycelium.spores.entry import MASTER_SCOPE, TEMPORAL_TYPES, Entry, EntryKey, EntryType, make_entry, next_temporal_version
from mycelium.spores.gossip import Delta, GossipConfig, LatentGossip, MessageError, decode_message, encode_message
from mycelium.spores.latent import LatentLimits, LatentStore
from mycelium.spores.validation import EntryValidator

CLOCK_ORIGIN_S = 1_700_000_000.0  # nodes' clocks start at this unix time (entries carry unix ms)

# small limits, so that caps and windows are exercised within a short run
SIM_LIMITS = LatentLimits(
    max_entries_per_type={EntryType.NODE: 1, EntryType.USAGE: 2, EntryType.HEALTH: 4},
    default_cap=2,
    window_ms=120_000,
)
USAGE_SERIES = ("cpu", "ram", "disk")  # three series, cap 2: one is always evicted


class LatentNode:
    """Sans-IO core: LatentGossip plus periodic authoring; persists (entries, authored versions)."""

    def __init__(
        self, key: NodeKey, network_id: str, members: list[NodeId], *, limits: LatentLimits,
        gossip: GossipConfig, author_interval_s: float, write_until_s: float, persisted: Any = None,
    ) -> None:
        self.key = key
        self.node_id = key.node_id
        self.network_id = network_id
        self.members = members
        self.author_interval_s = author_interval_s
        self.write_until_s = write_until_s
        self.store = LatentStore(MASTER_SCOPE, limits)
        validator = EntryValidator(network_id, scope=MASTER_SCOPE, members=frozenset(members))
        self.gossip = LatentGossip(self.node_id, self.store, validator, gossip)
        self.gossip.set_peers(members)
        self.authored: dict[EntryKey, int] = {}  # highest version we authored, per key
        self.rounds = 0
        self.next_author_at: float | None = None
        if persisted is not None:
            entries, authored, self.rounds = persisted
            self.store.merge_entries(entries)  # validated when first received
            self.authored = dict(authored)

    def persist(self) -> tuple:
        return (tuple(self.store.entries()), tuple(self.authored.items()), self.rounds)

    def on_message(self, sender: NodeId, message: Any, now: float) -> list:
        return self.gossip.on_message(sender, message, now)

    def on_tick(self, now: float) -> list:
        effects: list = []
        if now < self.write_until_s and (self.next_author_at is None or now >= self.next_author_at):
            effects.extend(self.gossip.publish(self._author(now), now))
            self.next_author_at = now + self.author_interval_s
        effects.extend(self.gossip.on_tick(now))
        if self.next_author_at is not None and now < self.write_until_s:
            effects.append(SetTimer("sim.author", self.next_author_at))
        return effects

    def _author(self, now: float) -> Entry:
        now_ms = int(now * 1000)
        kind = self.rounds % 3
        self.rounds += 1
        if kind == 0:
            type_, name, subject, body = EntryType.NODE, "", None, {"round": self.rounds}
        elif kind == 1:
            type_, name, subject = EntryType.USAGE, USAGE_SERIES[self.rounds % len(USAGE_SERIES)], None
            body = {"permille": self.rounds * 37 % 1000}
        else:
            peer = self.members[self.rounds * 7 % len(self.members)]
            type_, name, subject, body = EntryType.HEALTH, "", peer, {"ok": self.rounds % 5 != 0}
        key = (int(type_), self.node_id, subject or self.node_id, name)
        previous = self.authored.get(key, 0)
        # a hybrid clock for every type, so a node that lost its disk still outranks its old versions
        version = timestamp = next_temporal_version(previous, now_ms)
        self.authored[key] = version
        return make_entry(self.key, self.network_id, type_, body, version=version, timestamp_ms=timestamp,
                          subject=subject, name=name)


def limits_respected(node: LatentNode) -> str | None:
    store, limits = node.store, node.store.limits
    groups: dict[tuple[str, int], list[Entry]] = {}
    for e in store.entries():
        groups.setdefault((e.author, int(e.type)), []).append(e)
    for (author, t), entries in groups.items():
        cap = limits.cap(EntryType(t))
        if len(entries) > cap:
            return f"{len(entries)} {EntryType(t).name} entries by {author} exceed the cap of {cap}"
        if EntryType(t) in TEMPORAL_TYPES:
            newest = max(e.timestamp_ms for e in entries)
            old = [e for e in entries if e.timestamp_ms < newest - limits.window_ms]
            if old:
                return f"{EntryType(t).name} entry by {author} is {newest - old[0].timestamp_ms} ms older than the newest"
    authors = {author for author, _ in groups}
    if len(authors) > limits.max_authors:
        return f"{len(authors)} authors exceed max_authors {limits.max_authors}"
    return None


def own_node_record_kept(node: LatentNode) -> str | None:
    key = (int(EntryType.NODE), node.node_id, node.node_id, "")
    authored = node.authored.get(key)
    if authored is None:
        return None
    held = node.store.get(key)
    if held is None or held.version < authored:
        return f"own NODE record version {authored} was replaced by {None if held is None else held.version}"
    return None


def _classify(message: Any) -> str:
    try:
        return type(decode_message(message, max_bytes=1 << 20)).__name__
    except MessageError:
        return "garbage"


def scenario(params: ScenarioParams) -> Scenario:
    rng = params.rng
    keys = [NodeKey.from_seed(rng.randbytes(32)) for _ in range(params.nodes)]
    by_id = {k.node_id: k for k in keys}
    ids = [k.node_id for k in keys]
    network_id = "sim-" + rng.randbytes(8).hex()
    gossip = GossipConfig(interval_s=2.0, fanout=2)
    write_until_s = CLOCK_ORIGIN_S + params.duration_s

    def make_core(node_id: NodeId, persisted: Any) -> LatentNode:
        return LatentNode(by_id[node_id], network_id, ids, limits=SIM_LIMITS, gossip=gossip,
                          author_interval_s=20.0, write_until_s=write_until_s, persisted=persisted)

    def mutate(author: NodeId, message: Any, rng: Random) -> Any:
        """Re-sign the author's own entries in a Delta with a false body and the same version."""
        try:
            msg = decode_message(message, max_bytes=1 << 20)
        except MessageError:
            return message
        if not isinstance(msg, Delta):
            return message
        out = []
        for wire in msg.entries:
            try:
                entry = Entry.from_wire(wire)
            except ValueError:
                out.append(wire)
                continue
            if entry.author == author:
                lie = make_entry(by_id[author], network_id, entry.type, {"lie": rng.randrange(1 << 30)},
                                 version=entry.version, timestamp_ms=entry.timestamp_ms,
                                 subject=entry.subject, name=entry.name, scope=entry.scope)
                wire = lie.to_wire()
            out.append(wire)
        return encode_message(Delta(msg.scope, tuple(out)))

    def report(world: Any) -> dict:
        """Honest live nodes' totals: entries held, and drops by reason (garbage shows up as malformed)."""
        honest = [n.inner for n in world.honest_nodes()]
        drops: dict[str, int] = {}
        for core in honest:
            for reason, count in core.gossip.drops.as_dict().items():
                drops[reason] = drops.get(reason, 0) + count
        out = {"entries": sum(len(c.store) for c in honest)}
        out.update({f"dropped_{k}": v for k, v in sorted(drops.items())})
        return out

    return Scenario(
        node_ids=ids,
        report=report,
        make_core=make_core,
        invariants=[
            EveryHonestNode(limits_respected, name="limits"),
            EveryHonestNode(own_node_record_kept, name="own-node-record-kept"),
            Converged(lambda core: core.store.digest(), name="converged"),
        ],
        hooks=ByzantineHooks(mutate=mutate, classify=_classify),
        clock_origin_s=CLOCK_ORIGIN_S,
        max_clock_jump_s=20.0,  # below the validator's 30 s skew tolerance (see Scenario)
    )
