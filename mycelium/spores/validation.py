"""Validate-first for spore entries: schema, bounds, signature, author's right, clock skew, members.

`validate(entry, ctx)` is a pure function returning a Verdict; `EntryValidator` wraps it for a
receiving core: it parses wire data, counts drops by reason (DropCounter) and tells trust scoring
(TrustReporter, implemented by mycelium.consensus) who sent and who authored invalid data.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from enum import Enum
from typing import Callable, Protocol

from mycelium.identity import NodeId
from mycelium.spores.entry import (
    OBSERVATION_TYPES,
    Entry,
    EntryError,
    OversizeEntry,
    UnknownEntryType,
)


class DropReason(Enum):
    """Why an entry or message was dropped. WARNING: ONLY APPEND (the values appear in metrics)."""

    MALFORMED = "malformed"  # wrong fields/types/bounds, undecodable bytes
    BAD_SIGNATURE = "bad_signature"  # tampered, forged, or signed for another network
    NOT_AUTHORISED = "not_authorised"  # author wrote about someone else or as another observer
    CLOCK_SKEW = "clock_skew"  # timestamp further in the future than the tolerance
    UNKNOWN_MEMBER = "unknown_member"  # author (or subject) is not a member of the known set
    OVERSIZE = "oversize"  # entry, body or message larger than the bounds
    UNKNOWN_TYPE = "unknown_type"  # entry or message type this build does not know
    CONTRADICTS_PRIMARY = "contradicts_primary"  # a Latent claim the Primary says otherwise about
    WRONG_SCOPE = "wrong_scope"  # an entry or message for another scope than this store's
    UNSUPPORTED_VERSION = "unsupported_version"  # a wire protocol version this build does not speak
    BAD_PRIMARY = "bad_primary"  # a Primary or Seed that breaks the chain rule or its certificate


@dataclass(frozen=True, slots=True)
class Verdict:
    reason: DropReason | None = None  # None: accepted
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.reason is None


ACCEPTED = Verdict()


# how far an author's clock may run ahead of ours; NTP-synced hosts agree within ~100 ms, Pis
# without an RTC can be worse until NTP settles: 30 s tolerates that without letting an author
# post-date entries by hours
DEFAULT_MAX_CLOCK_SKEW_MS = 30_000


@dataclass(frozen=True, slots=True)
class ValidationConfig:
    max_clock_skew_ms: int = DEFAULT_MAX_CLOCK_SKEW_MS  # see DEFAULT_MAX_CLOCK_SKEW_MS


@dataclass(frozen=True, slots=True)
class ValidationContext:
    network_id: str
    now_ms: int  # the receiver's clock
    scope: str | None = None  # when set, entries of other scopes are dropped
    members: frozenset[NodeId] | None = None  # when known, authors and subjects must be members
    max_clock_skew_ms: int = DEFAULT_MAX_CLOCK_SKEW_MS
    # when set (from the current Primary, see primary.latent_contradiction): a non-None string
    # says how the entry contradicts the Primary
    contradiction: Callable[[Entry], str | None] | None = None


def validate(entry: Entry, ctx: ValidationContext) -> Verdict:
    """Check an already-parsed entry; cheapest checks first, the signature before anything that
    trusts the entry's claims about its author."""
    problem = entry.shape_problem()
    if problem is not None:
        return Verdict(_reason_of(problem), str(problem))
    if ctx.scope is not None and entry.scope != ctx.scope:
        return Verdict(DropReason.WRONG_SCOPE, f"entry for scope {entry.scope!r}, expected {ctx.scope!r}")
    if not entry.verify_signature(ctx.network_id):
        return Verdict(DropReason.BAD_SIGNATURE, f"signature by {entry.author[:16]} does not verify for this network")
    if entry.observer != entry.author:
        return Verdict(DropReason.NOT_AUTHORISED, "a node may only write its own observations (observer must be the author)")
    if entry.type not in OBSERVATION_TYPES and entry.subject != entry.author:
        return Verdict(
            DropReason.NOT_AUTHORISED,
            f"{entry.type.name.lower()} entries may only be about their author",
        )
    ahead = entry.timestamp_ms - ctx.now_ms
    if ahead > ctx.max_clock_skew_ms:
        return Verdict(DropReason.CLOCK_SKEW, f"timestamp {ahead} ms in the future (tolerance {ctx.max_clock_skew_ms} ms)")
    if ctx.members is not None:
        for label, node in (("author", entry.author), ("subject", entry.subject)):
            if node not in ctx.members:
                return Verdict(DropReason.UNKNOWN_MEMBER, f"{label} {node[:16]} is not a member")
    if ctx.contradiction is not None:
        why = ctx.contradiction(entry)
        if why is not None:
            return Verdict(DropReason.CONTRADICTS_PRIMARY, why)
    return ACCEPTED


def _reason_of(error: EntryError) -> DropReason:
    if isinstance(error, UnknownEntryType):
        return DropReason.UNKNOWN_TYPE
    if isinstance(error, OversizeEntry):
        return DropReason.OVERSIZE
    return DropReason.MALFORMED


def parse_entry(obj: object) -> tuple[Entry | None, Verdict]:
    """Parse a wire entry (decoded map or bytes) into (entry, ACCEPTED) or (None, drop verdict)."""
    try:
        if isinstance(obj, (bytes, bytearray)):
            return Entry.from_bytes(bytes(obj)), ACCEPTED
        return Entry.from_wire(obj), ACCEPTED
    except EntryError as exc:
        return None, Verdict(_reason_of(exc), str(exc))


class DropCounter:
    """Counts dropped entries and messages by reason (exported as metrics, shown by `mycelium spores`)."""

    def __init__(self) -> None:
        self.counts: Counter[DropReason] = Counter()

    def count(self, reason: DropReason, n: int = 1) -> None:
        self.counts[reason] += n

    def __getitem__(self, reason: DropReason) -> int:
        return self.counts[reason]

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def as_dict(self) -> dict[str, int]:
        return {r.value: self.counts[r] for r in DropReason if self.counts[r]}


class TrustReporter(Protocol):
    """Implemented by trust scoring (mycelium.consensus). `sender` relayed the data to us;
    `author` is the claimed author when the data parsed far enough to name one."""

    def report_invalid(self, sender: NodeId, author: NodeId | None, reason: DropReason) -> None: ...


class NullTrustReporter:
    def report_invalid(self, sender: NodeId, author: NodeId | None, reason: DropReason) -> None:
        pass  # deliberately ignored: used where no trust scoring runs (tests, single node)


class EntryValidator:
    """Parse + validate + count + report, for a receiving core. The owner keeps `members` and
    `contradiction` current as Primaries arrive."""

    def __init__(
        self,
        network_id: str,
        *,
        scope: str | None = None,
        config: ValidationConfig | None = None,
        members: frozenset[NodeId] | None = None,
        contradiction: Callable[[Entry], str | None] | None = None,
        reporter: TrustReporter | None = None,
        counter: DropCounter | None = None,
    ) -> None:
        self.network_id = network_id
        self.scope = scope
        self.config = config or ValidationConfig()
        self.members = members
        self.contradiction = contradiction
        self.reporter: TrustReporter = reporter or NullTrustReporter()
        self.drops = counter or DropCounter()

    def context(self, now_ms: int) -> ValidationContext:
        return ValidationContext(
            network_id=self.network_id,
            now_ms=now_ms,
            scope=self.scope,
            members=self.members,
            max_clock_skew_ms=self.config.max_clock_skew_ms,
            contradiction=self.contradiction,
        )

    def check(self, obj: object, sender: NodeId, now_ms: int) -> Entry | None:
        """The entry if `obj` (wire map, bytes or Entry) is valid; otherwise None, counted and reported."""
        if isinstance(obj, Entry):
            entry, verdict = obj, ACCEPTED
        else:
            entry, verdict = parse_entry(obj)
        if entry is not None:
            verdict = validate(entry, self.context(now_ms))
        if verdict.ok:
            return entry
        self.drops.count(verdict.reason)  # type: ignore[arg-type]
        author = entry.author if entry is not None and isinstance(entry.author, str) else None
        self.reporter.report_invalid(sender, author, verdict.reason)  # type: ignore[arg-type]
        return None


__all__ = [
    "ACCEPTED",
    "DropCounter",
    "DropReason",
    "EntryValidator",
    "NullTrustReporter",
    "TrustReporter",
    "ValidationConfig",
    "ValidationContext",
    "Verdict",
    "parse_entry",
    "validate",
]
