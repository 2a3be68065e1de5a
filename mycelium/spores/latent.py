"""The Latent spore store: a bounded, state-based CRDT of signed entries.

State and merge
---------------
The state is `prune(S)` for the set S of every entry ever merged, and merging two states is
`merge(a, b) = prune(a ∪ b)`. `prune` is deterministic and does, in order:

1. per key, keep the entry of highest `Entry.rank()` = (version, author, digest);
2. per group g = (author, type), for temporal types, drop entries older than the group's newest
   timestamp minus `window_ms` (the window is anchored to the author's own newest observation,
   never to a local clock, so every replica prunes alike);
3. per group, keep the `cap(type)` entries of highest rank;
4. if more than `max_authors` authors remain, keep the `max_authors` whose BLAKE2b(node id) is
   smallest (a static order: an author's presence cannot be taken away by merging).

Why the laws hold on the pruned state (a sketch; tests/property/test_spores_latent.py checks it).
Every step only drops an entry because of entries that rank above it *in its own group* (same
key ⊂ same group, a newer timestamp in its group, `cap` better entries in its group) or because of
authors that are present; none of those reasons can disappear when more entries are added, since
within a group "higher rank" and "newer" are the same order (temporal entries have version ==
timestamp_ms). So (i) dropping is upward closed: dropped from x ⇒ dropped from x ∪ y; and (ii) an
entry that is dropped never influences what else is kept. From (i)+(ii): prune(prune(x) ∪ y) =
prune(x ∪ y). Hence merge is commutative (∪ is), idempotent (prune(a ∪ a) = prune(a) = a for a
pruned a) and associative (both groupings equal prune(a ∪ b ∪ c)).

This is also why there is no cap on an author's entries *across* types, nor on a type across
authors: such a cap lets an entry that became stale in one group free a slot for an entry of
another group that some replica already evicted, and associativity breaks. The per-author total is
therefore the sum of the per-type caps, and the number of authors is bounded by `max_authors`
(and by the member set, which validation enforces).

Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, Mapping

from mycelium.encoding import HASH_SIZE, EncodingError, canonical, decode, digest, hash_value
from mycelium.identity import NodeId
from mycelium.spores.entry import MASTER_SCOPE, Entry, EntryKey, EntryType

_DEFAULT_CAPS = {
    EntryType.NODE: 1,  # one node record per author
    EntryType.ENDPOINT: 16,  # endpoints the author serves
    EntryType.HEALTH: 64,  # health observations (one per observed subject)
    EntryType.USAGE: 4,  # usage series names (cpu, ram, disk, net)
    EntryType.CONNECTION: 64,  # one per peer the author is connected to
    EntryType.CAPABILITY: 1,  # one capability profile
    EntryType.SERVICE: 32,  # service replicas the author runs
    EntryType.OVERLAY: 1,  # one WireGuard key and endpoint
}


@dataclass(frozen=True, slots=True)
class LatentLimits:
    """Bounds of the Latent store. Memory ≤ max_authors × max_entries_per_author entries."""

    # entries kept per (author, type); a type not listed gets `default_cap`. More = richer view,
    # more memory and gossip traffic. Eviction keeps the highest (version, author) entries.
    max_entries_per_type: Mapping[EntryType, int] = field(default_factory=lambda: dict(_DEFAULT_CAPS))
    default_cap: int = 8  # for types added later than this build's table
    # temporal entries (health, usage, connection) older than the author's newest one of that type
    # minus this window are dropped: 10 min keeps recent history without growing with uptime
    window_ms: int = 10 * 60 * 1000
    # authors kept at most (those with the smallest node-id hash); members are also checked by
    # validation, this is the backstop that keeps memory bounded when no member set is known
    max_authors: int = 1024
    # intermittency: a peer that changes connection state at least `intermittent_flaps` times within
    # `intermittent_window_ms` is tagged intermittent; its events are then condensed into counters
    # published at most once per `condense_interval_ms` instead of one entry version per event
    intermittent_flaps: int = 6
    intermittent_window_ms: int = 10 * 60 * 1000
    condense_interval_ms: int = 60 * 1000

    def __post_init__(self) -> None:
        caps = self.max_entries_per_type
        if not all(isinstance(v, int) and v >= 0 for v in caps.values()) or self.default_cap < 0:
            raise ValueError("LatentLimits caps must be non-negative integers")
        for name in ("window_ms", "max_authors", "intermittent_flaps", "intermittent_window_ms", "condense_interval_ms"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"LatentLimits.{name} must be a non-negative integer, got {value!r}")

    def cap(self, type_: EntryType) -> int:
        return self.max_entries_per_type.get(type_, self.default_cap)

    @property
    def max_entries_per_author(self) -> int:
        """Implied by the per-type caps (see the module docstring for why it is not a separate cap)."""
        return sum(self.cap(t) for t in EntryType)


def author_rank(author: NodeId) -> bytes:
    """Static order used by the max_authors bound (smaller is kept)."""
    return digest(author.encode(), person=b"myc-author")


def _prune_group(entries: Iterable[Entry], limits: LatentLimits, ranks: Mapping[EntryKey, tuple]) -> list[Entry]:
    """Steps 2 and 3 of `prune` for one (author, type) group of per-key winners."""
    group = list(entries)
    if not group:
        return []
    type_ = group[0].type
    if group[0].temporal:
        anchor = max(e.timestamp_ms for e in group)
        group = [e for e in group if e.timestamp_ms >= anchor - limits.window_ms]
    group.sort(key=lambda e: ranks[e.key], reverse=True)
    return group[: limits.cap(type_)]


def prune(entries: Iterable[Entry], limits: LatentLimits) -> dict[EntryKey, Entry]:
    """The canonical pruning function (module docstring): per-key winners, windows, caps, authors."""
    best: dict[EntryKey, Entry] = {}
    ranks: dict[EntryKey, tuple] = {}
    for e in entries:
        r = e.rank()
        if e.key not in ranks or r > ranks[e.key]:
            best[e.key], ranks[e.key] = e, r
    groups: dict[tuple[NodeId, int], list[Entry]] = {}
    for e in best.values():
        groups.setdefault((e.author, int(e.type)), []).append(e)
    kept = [e for g in groups.values() for e in _prune_group(g, limits, ranks)]
    authors = sorted({e.author for e in kept}, key=author_rank)[: limits.max_authors]
    allowed = set(authors)
    return {e.key: e for e in kept if e.author in allowed}


class LatentStore:
    """One scope's Latent entries (master scope or one service), kept as `prune(everything merged)`.

    Only entries that passed validation should be merged; the store itself refuses entries whose
    shape is wrong, whose observer is not the author, or that belong to another scope, because its
    laws depend on those invariants."""

    def __init__(self, scope: str = MASTER_SCOPE, limits: LatentLimits | None = None, *, bucket_bits: int = 4) -> None:
        if not 0 <= bucket_bits <= 8:
            raise ValueError("bucket_bits must be between 0 and 8")
        self.scope = scope
        self.limits = limits or LatentLimits()
        self.bucket_bits = bucket_bits
        self._entries: dict[EntryKey, Entry] = {}
        self._ranks: dict[EntryKey, tuple] = {}
        self._groups: dict[tuple[NodeId, int], set[EntryKey]] = {}
        self._buckets: list[set[EntryKey]] = [set() for _ in range(1 << bucket_bits)]
        self._bucket_cache: list[bytes | None] = [None] * (1 << bucket_bits)
        self._root_cache: bytes | None = None
        self.evicted = Counter()  # entries dropped by limits, by type name (pruned or refused)
        self.refused = 0  # entries refused for shape, scope or observer != author
        self.equivocations: Counter[NodeId] = Counter()  # same key and version signed twice, by author

    # -- reading ---------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def get(self, key: EntryKey) -> Entry | None:
        return self._entries.get(key)

    def entries(self) -> list[Entry]:
        """All entries in a deterministic order (by key)."""
        return [self._entries[k] for k in sorted(self._entries)]

    def authors(self) -> set[NodeId]:
        return {author for author, _ in self._groups}

    def summary(self) -> dict:
        by_type = Counter(EntryType(k[0]).name.lower() for k in self._entries)
        by_author = Counter(e.author for e in self._entries.values())
        return {
            "scope": self.scope,
            "entries": len(self._entries),
            "by_type": dict(sorted(by_type.items())),
            "by_author": dict(sorted(by_author.items())),
            "evicted": dict(sorted(self.evicted.items())),
            "refused": self.refused,
            "equivocations": dict(sorted(self.equivocations.items())),
            "digest": self.digest().hex(),
        }

    def intermittent_nodes(self) -> set[NodeId]:
        """Subjects that some observer's connection entry tags as intermittent."""
        return {
            e.subject
            for e in self._entries.values()
            if e.type == EntryType.CONNECTION and e.body.get("intermittent") is True
        }

    # -- merging ---------------------------------------------------------------------------------

    def merge_entry(self, entry: Entry) -> bool:
        """Merge one entry; True if it is now part of the state (it was new and survived the limits)."""
        if entry.scope != self.scope or entry.observer != entry.author or entry.shape_error() is not None:
            self.refused += 1
            return False
        key = entry.key
        rank = entry.rank()
        held = self._ranks.get(key)
        if held is not None and held[0] == rank[0] and held != rank:
            self.equivocations[entry.author] += 1  # one version, two contents: the digest decides
        if held is not None and held >= rank:
            return False
        self._put(key, entry, rank)
        self._prune_after_insert(entry)
        return self._entries.get(key) is entry

    def merge_entries(self, entries: Iterable[Entry]) -> int:
        """Merge several entries; returns how many became part of the state."""
        return sum(1 for e in entries if self.merge_entry(e))

    def merge(self, other: LatentStore) -> None:
        """State-based merge: self := prune(self ∪ other)."""
        self.merge_entries(other._entries.values())

    def copy(self) -> LatentStore:
        clone = LatentStore(self.scope, self.limits, bucket_bits=self.bucket_bits)
        for key, entry in self._entries.items():
            clone._put(key, entry, self._ranks[key])
        clone.evicted = Counter(self.evicted)
        clone.refused = self.refused
        clone.equivocations = Counter(self.equivocations)
        return clone

    def snapshot(self) -> bytes:
        """Canonical bytes of the whole state, for the node's own disk (restore with `restore`)."""
        return canonical({"sc": self.scope, "e": [e.to_wire() for e in self.entries()]})

    @classmethod
    def restore(cls, data: bytes, limits: LatentLimits | None = None, *, bucket_bits: int = 4) -> LatentStore:
        """Rebuild a store from `snapshot()` bytes; EntryError/EncodingError if they are corrupt."""
        obj = decode(data, max_size=64 << 20)
        if not isinstance(obj, dict) or not isinstance(obj.get("sc"), str) or not isinstance(obj.get("e"), list):
            raise EncodingError("Latent snapshot must be a map of scope and entries")
        store = cls(obj["sc"], limits, bucket_bits=bucket_bits)
        store.merge_entries(Entry.from_wire(e) for e in obj["e"])
        return store

    def _put(self, key: EntryKey, entry: Entry, rank: tuple) -> None:
        self._entries[key] = entry
        self._ranks[key] = rank
        self._groups.setdefault((entry.author, key[0]), set()).add(key)
        b = self.bucket_of(key)
        self._buckets[b].add(key)
        self._bucket_cache[b] = None
        self._root_cache = None

    def _remove(self, key: EntryKey) -> None:
        entry = self._entries.pop(key)
        del self._ranks[key]
        gkey = (entry.author, key[0])
        self._groups[gkey].discard(key)
        if not self._groups[gkey]:
            del self._groups[gkey]
        b = self.bucket_of(key)
        self._buckets[b].discard(key)
        self._bucket_cache[b] = None
        self._root_cache = None
        self.evicted[EntryType(key[0]).name.lower()] += 1

    def _prune_after_insert(self, entry: Entry) -> None:
        """Re-apply prune to the one group that changed, then the authors bound (equivalent to
        prune over the whole state because prune works group by group)."""
        gkey = (entry.author, int(entry.type))
        group = [self._entries[k] for k in self._groups[gkey]]
        kept = {e.key for e in _prune_group(group, self.limits, self._ranks)}
        for e in group:
            if e.key not in kept:
                self._remove(e.key)
        if len(self._groups) and len(self.authors()) > self.limits.max_authors:
            allowed = set(sorted(self.authors(), key=author_rank)[: self.limits.max_authors])
            for key in [k for k, e in self._entries.items() if e.author not in allowed]:
                self._remove(key)

    # -- digests for convergence checks and anti-entropy ----------------------------------------

    def bucket_of(self, key: EntryKey) -> int:
        if self.bucket_bits == 0:
            return 0
        return hash_value(list(key), person=b"myc-bucket")[0] >> (8 - self.bucket_bits)

    def bucket_digests(self) -> tuple[bytes, ...]:
        """One digest per key-hash bucket (2**bucket_bits of them), for range comparison."""
        for b, cached in enumerate(self._bucket_cache):
            if cached is None:
                ids = sorted(self._entries[k].digest() for k in self._buckets[b])
                self._bucket_cache[b] = digest(b"".join(ids), person=b"myc-bucket")
        return tuple(self._bucket_cache)  # type: ignore[arg-type]

    def digest(self) -> bytes:
        """Hash of the whole state: equal on two replicas iff they hold the same entries."""
        if self._root_cache is None:
            ids = sorted(e.digest() for e in self._entries.values())
            self._root_cache = digest(self.scope.encode() + b"\0" + b"".join(ids), person=b"myc-latent")
        return self._root_cache

    def differing_buckets(self, remote_bucket_digests: Iterable[bytes]) -> list[int]:
        remote = list(remote_bucket_digests)
        mine = self.bucket_digests()
        if len(remote) != len(mine) or not all(isinstance(d, bytes) and len(d) == HASH_SIZE for d in remote):
            return list(range(len(mine)))  # not comparable: treat every bucket as different
        return [b for b in range(len(mine)) if mine[b] != remote[b]]

    def entries_in_buckets(self, buckets: Iterable[int]) -> list[Entry]:
        out: list[Entry] = []
        for b in sorted(set(buckets)):
            if 0 <= b < len(self._buckets):
                out.extend(self._entries[k] for k in sorted(self._buckets[b]))
        return out

    def entries_missing_from(self, remote_bucket_digests: Iterable[bytes]) -> list[Entry]:
        """The delta to send a peer with these bucket digests: our entries in every bucket where
        the digests differ (the peer merges them; what it already has is a no-op)."""
        return self.entries_in_buckets(self.differing_buckets(remote_bucket_digests))


class ConnectionCondenser:
    """Author-side: decides which connection events become a new CONNECTION entry version.

    A peer that flaps (≥ intermittent_flaps state changes within intermittent_window_ms) is tagged
    intermittent: its events are then only counted, and `due()` yields a condensed body at most once
    per condense_interval_ms. Bodies: {"up": bool, "flaps": int, "intermittent": bool, "since_ms": int}.
    """

    def __init__(self, limits: LatentLimits | None = None) -> None:
        self.limits = limits or LatentLimits()
        self._events: dict[NodeId, list[int]] = {}  # change times within the window
        self._up: dict[NodeId, bool] = {}
        self._since: dict[NodeId, int] = {}
        self._last_published: dict[NodeId, int] = {}
        self._pending: set[NodeId] = set()

    def is_intermittent(self, peer: NodeId) -> bool:
        return len(self._events.get(peer, ())) >= self.limits.intermittent_flaps > 0

    def observe(self, peer: NodeId, up: bool, now_ms: int) -> dict | None:
        """Record a connect (up=True) or disconnect; returns a body to publish now, or None when
        the event is condensed (publish later via `due`)."""
        if self._up.get(peer) == up:
            return None  # no state change, nothing to report
        self._up[peer] = up
        self._since[peer] = now_ms
        times = [t for t in self._events.get(peer, []) if t > now_ms - self.limits.intermittent_window_ms]
        was_intermittent = len(times) >= self.limits.intermittent_flaps > 0
        times.append(now_ms)
        self._events[peer] = times[-max(self.limits.intermittent_flaps, 1) * 4 :]  # bounded
        if was_intermittent and self.is_intermittent(peer):  # becoming intermittent is news
            last = self._last_published.get(peer)
            if last is not None and now_ms - last < self.limits.condense_interval_ms:
                self._pending.add(peer)
                return None
        return self._publish(peer, now_ms)

    def due(self, now_ms: int) -> dict[NodeId, dict]:
        """Condensed bodies whose interval has passed (call from the owner's tick)."""
        out = {}
        for peer in sorted(self._pending):
            if now_ms - self._last_published.get(peer, 0) >= self.limits.condense_interval_ms:
                out[peer] = self._publish(peer, now_ms)
        return out

    def _publish(self, peer: NodeId, now_ms: int) -> dict:
        self._pending.discard(peer)
        self._last_published[peer] = now_ms
        return {
            "up": self._up[peer],
            "flaps": len(self._events.get(peer, ())),
            "intermittent": self.is_intermittent(peer),
            "since_ms": self._since[peer],
        }
