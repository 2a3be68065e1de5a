"""Sans-IO anti-entropy for one Latent scope: digest exchange, range requests, deltas.

Every `interval_s` the core sends its `Digest` (whole-state hash + one hash per key-hash bucket) to
`fanout` peers chosen by a seeded RNG. A peer whose digest differs answers with a `Delta` of its
entries in the differing buckets and a `RangeRequest` for the same buckets, so one exchange repairs
both sides. Local updates are merged and broadcast as a small `Delta` (the gossipsub path).

Messages travel as canonical msgpack bytes (`encode_message`/`decode_message`); `on_message` also
accepts message objects (the simulator may skip encoding). Garbage, oversized, unknown or
malformed messages are dropped and counted in `drops`; each entry in a Delta is validated on its
own (mycelium.spores.validation) so one bad entry does not spoil the rest. Pure: no I/O, no clock.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Iterable, Union

from mycelium.shell.effects import Broadcast, Effect, Send, SetTimer
from mycelium.encoding import HASH_SIZE, EncodingError, canonical, decode, digest
from mycelium.identity import NodeId
from mycelium.spores.entry import MAX_ENTRY_BYTES, MAX_SCOPE_CHARS, Entry
from mycelium.spores.latent import LatentStore
from mycelium.spores.validation import DropCounter, DropReason, EntryValidator, parse_entry

PROTOCOL_VERSION = 1
MAX_BUCKETS = 256  # bucket_bits ≤ 8
MAX_DELTA_ENTRIES = 256  # per message; larger deltas are split


class MessageType(IntEnum):
    """WARNING: ONLY APPEND TO THIS LIST (the numbers are on the wire)."""

    DIGEST = 1
    RANGE_REQUEST = 2
    DELTA = 3


@dataclass(frozen=True, slots=True)
class Digest:
    scope: str
    root: bytes  # LatentStore.digest()
    buckets: tuple[bytes, ...]  # LatentStore.bucket_digests()

    def to_wire(self) -> dict:
        return {"sc": self.scope, "root": self.root, "bk": list(self.buckets)}


@dataclass(frozen=True, slots=True)
class RangeRequest:
    scope: str
    buckets: tuple[int, ...]  # bucket numbers whose entries the sender wants

    def to_wire(self) -> dict:
        return {"sc": self.scope, "bk": list(self.buckets)}


@dataclass(frozen=True, slots=True)
class Delta:
    scope: str
    entries: tuple[Any, ...]  # wire maps of entries; each is parsed and validated on its own

    def to_wire(self) -> dict:
        return {"sc": self.scope, "e": list(self.entries)}


Message = Union[Digest, RangeRequest, Delta]
_TYPES = {Digest: MessageType.DIGEST, RangeRequest: MessageType.RANGE_REQUEST, Delta: MessageType.DELTA}


class MessageError(ValueError):
    def __init__(self, reason: DropReason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def encode_message(msg: Message) -> bytes:
    return canonical({"v": PROTOCOL_VERSION, "t": int(_TYPES[type(msg)]), **msg.to_wire()})


def decode_message(data: bytes, *, max_bytes: int) -> Message:
    """Parse wire bytes strictly; MessageError names the drop reason."""
    if not isinstance(data, (bytes, bytearray)):
        raise MessageError(DropReason.MALFORMED, f"expected bytes, got {type(data).__name__}")
    if len(data) > max_bytes:
        raise MessageError(DropReason.OVERSIZE, f"message of {len(data)} bytes exceeds {max_bytes}")
    try:
        obj = decode(bytes(data), max_size=max_bytes)
    except EncodingError as exc:
        raise MessageError(DropReason.MALFORMED, str(exc)) from exc
    if not isinstance(obj, dict):
        raise MessageError(DropReason.MALFORMED, "message must be a map")
    if obj.get("v") != PROTOCOL_VERSION:
        raise MessageError(DropReason.UNSUPPORTED_VERSION, f"protocol version {obj.get('v')!r}, this build speaks {PROTOCOL_VERSION}")
    t = obj.get("t")
    try:
        mtype = MessageType(t) if isinstance(t, int) and not isinstance(t, bool) else None
    except ValueError:
        mtype = None
    if mtype is None:
        raise MessageError(DropReason.UNKNOWN_TYPE, f"message type {t!r} is unknown")
    scope = obj.get("sc")
    if not (isinstance(scope, str) and 1 <= len(scope) <= MAX_SCOPE_CHARS):
        raise MessageError(DropReason.MALFORMED, "message scope must be a short string")
    fields = set(obj) - {"v", "t", "sc"}
    if mtype is MessageType.DIGEST:
        root, buckets = obj.get("root"), obj.get("bk")
        if fields != {"root", "bk"} or not _is_hash(root) or not isinstance(buckets, list):
            raise MessageError(DropReason.MALFORMED, "digest needs a 32-byte root and a bucket list")
        if not 1 <= len(buckets) <= MAX_BUCKETS or not all(_is_hash(b) for b in buckets):
            raise MessageError(DropReason.MALFORMED, f"digest needs 1-{MAX_BUCKETS} 32-byte bucket digests")
        return Digest(scope, root, tuple(buckets))
    if mtype is MessageType.RANGE_REQUEST:
        buckets = obj.get("bk")
        if fields != {"bk"} or not isinstance(buckets, list) or len(buckets) > MAX_BUCKETS:
            raise MessageError(DropReason.MALFORMED, f"range request needs at most {MAX_BUCKETS} bucket numbers")
        if not all(isinstance(b, int) and not isinstance(b, bool) and 0 <= b < MAX_BUCKETS for b in buckets):
            raise MessageError(DropReason.MALFORMED, "range request bucket numbers must be 0-255")
        return RangeRequest(scope, tuple(buckets))
    entries = obj.get("e")
    if fields != {"e"} or not isinstance(entries, list):
        raise MessageError(DropReason.MALFORMED, "delta needs an entry list")
    if len(entries) > MAX_DELTA_ENTRIES:
        raise MessageError(DropReason.OVERSIZE, f"delta of {len(entries)} entries exceeds {MAX_DELTA_ENTRIES}")
    return Delta(scope, tuple(entries))


def _is_hash(value: object) -> bool:
    return isinstance(value, bytes) and len(value) == HASH_SIZE


@dataclass(frozen=True, slots=True)
class GossipConfig:
    interval_s: float = 1.0  # time between anti-entropy rounds; shorter = faster repair, more traffic
    fanout: int = 2  # peers sent our digest per round; repair time ~ log_fanout(N) rounds
    # largest message we send or accept; a gossipsub message should stay well under its 1 MiB cap
    max_message_bytes: int = 64 * 1024
    timer_name: str = "spores.latent.anti_entropy"
    # a peer's Digest or RangeRequest is answered at most once per this many intervals: an honest
    # peer sends about one of each per round, a flooding one cannot make us send our state faster
    # (0 = answer everything; unanswered requests are repaired by the next round)
    answer_spacing_intervals: float = 0.25

    def __post_init__(self) -> None:
        if self.interval_s <= 0 or self.fanout < 0:
            raise ValueError("GossipConfig: interval_s must be positive and fanout non-negative")
        if self.answer_spacing_intervals < 0:
            raise ValueError("GossipConfig.answer_spacing_intervals must not be negative")
        if self.max_message_bytes < MAX_ENTRY_BYTES + 64:
            raise ValueError(f"GossipConfig.max_message_bytes must hold one entry ({MAX_ENTRY_BYTES + 64} bytes)")


class LatentGossip:
    """Anti-entropy core for one LatentStore (implements mycelium.shell.effects.Core)."""

    def __init__(
        self,
        node_id: NodeId,
        store: LatentStore,
        validator: EntryValidator,
        config: GossipConfig | None = None,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self.node_id = node_id
        self.store = store
        self.validator = validator
        self.config = config or GossipConfig()
        seed = int.from_bytes(digest(node_id.encode(), person=b"myc-gossip-rng")[:8], "big")
        self.rng = rng or random.Random(seed)
        self.peers: tuple[NodeId, ...] = ()
        self.next_round_at: float | None = None
        self.sent: Counter[str] = Counter()  # messages sent, by type name
        self.received: Counter[str] = Counter()  # messages accepted, by type name
        self.unanswered: Counter[str] = Counter()  # requests not answered (answer spacing), by type
        self._answered_at: dict[tuple[NodeId, str], float] = {}

    @property
    def drops(self) -> DropCounter:
        """Dropped messages and entries, by reason (shared with the validator)."""
        return self.validator.drops

    def set_peers(self, peers: Iterable[NodeId]) -> None:
        self.peers = tuple(sorted(p for p in set(peers) if p != self.node_id))

    # -- local updates ---------------------------------------------------------------------------

    def publish(self, entry: Entry, now: float) -> list[Effect]:
        """Merge a locally authored entry and broadcast it. Returns [] if the store refused it
        (older than what we hold, or evicted by the limits)."""
        if not self.store.merge_entry(entry):
            return []
        return [Broadcast(m) for m in self._deltas([entry])]

    # -- Core ------------------------------------------------------------------------------------

    def on_tick(self, now: float) -> list[Effect]:
        effects: list[Effect] = []
        if self.next_round_at is None or now >= self.next_round_at:
            effects.extend(self._round())
            self.next_round_at = now + self.config.interval_s
        effects.append(SetTimer(self.config.timer_name, self.next_round_at))
        return effects

    def on_message(self, sender: NodeId, message: Any, now: float) -> list[Effect]:
        msg = self._parse(message)
        if msg is None:
            return []
        if msg.scope != self.store.scope:
            self.drops.count(DropReason.WRONG_SCOPE)
            return []
        kind = type(msg).__name__
        self.received[kind] += 1
        if not isinstance(msg, Delta) and not self._may_answer(sender, kind, now):
            self.unanswered[kind] += 1
            return []
        if isinstance(msg, Digest):
            return self._on_digest(sender, msg)
        if isinstance(msg, RangeRequest):
            return [Send(sender, m) for m in self._deltas(self.store.entries_in_buckets(msg.buckets))]
        self._on_delta(sender, msg, now)
        return []

    # -- internals -------------------------------------------------------------------------------

    def _parse(self, message: Any) -> Message | None:
        if isinstance(message, (Digest, RangeRequest, Delta)):
            try:  # objects from the simulator get the same bounds as bytes from the wire
                message = encode_message(message)
            except EncodingError:  # an object with no canonical encoding is a malformed message
                self.drops.count(DropReason.MALFORMED)
                return None
        try:
            return decode_message(message, max_bytes=self.config.max_message_bytes)
        except MessageError as exc:
            self.drops.count(exc.reason)
            return None

    def _may_answer(self, sender: NodeId, kind: str, now: float) -> bool:
        spacing = self.config.answer_spacing_intervals * self.config.interval_s
        last = self._answered_at.get((sender, kind))
        if last is not None and 0 <= now - last < spacing:
            return False
        if len(self._answered_at) > 4 * (len(self.peers) + 64):
            self._answered_at.clear()  # bounded: forgetting only makes us answer once more
        self._answered_at[(sender, kind)] = now
        return True

    def _round(self) -> list[Effect]:
        if not self.peers or self.config.fanout == 0:
            return []
        chosen = self.rng.sample(self.peers, min(self.config.fanout, len(self.peers)))
        msg = Digest(self.store.scope, self.store.digest(), self.store.bucket_digests())
        data = self._encode(msg)
        return [Send(peer, data) for peer in chosen]

    def _on_digest(self, sender: NodeId, msg: Digest) -> list[Effect]:
        if msg.root == self.store.digest():
            return []
        differing = self.store.differing_buckets(msg.buckets)
        if not differing:
            return []
        effects: list[Effect] = [Send(sender, m) for m in self._deltas(self.store.entries_in_buckets(differing))]
        effects.append(Send(sender, self._encode(RangeRequest(self.store.scope, tuple(differing)))))
        return effects

    def _on_delta(self, sender: NodeId, msg: Delta, now: float) -> None:
        now_ms = int(now * 1000)
        for obj in msg.entries:
            parsed, _ = parse_entry(obj)
            if parsed is not None:
                held = self.store.get(parsed.key)
                if held is not None and held.digest() == parsed.digest():
                    self.received["already_held"] += 1
                    continue  # the very entry we hold: validated when we merged it; skip the signature check
            entry = self.validator.check(parsed if parsed is not None else obj, sender, now_ms)
            if entry is not None:
                self.store.merge_entry(entry)

    def _deltas(self, entries: list[Entry]) -> list[bytes]:
        """Encoded Delta messages holding `entries`, each within max_message_bytes."""
        out: list[bytes] = []
        batch: list[dict] = []
        size = 64  # envelope overhead
        for entry in entries:
            wire = entry.to_wire()
            n = len(canonical(wire))
            if batch and (size + n > self.config.max_message_bytes or len(batch) >= MAX_DELTA_ENTRIES):
                out.append(self._encode(Delta(self.store.scope, tuple(batch))))
                batch, size = [], 64
            batch.append(wire)
            size += n
        if batch:
            out.append(self._encode(Delta(self.store.scope, tuple(batch))))
        return out

    def _encode(self, msg: Message) -> bytes:
        self.sent[type(msg).__name__] += 1
        return encode_message(msg)
