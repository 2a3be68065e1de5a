"""The epoch protocol between a primary and its backups (pure: no trio, no OS, `now` passed in).

The primary's shell, at each epoch boundary, freezes the workload briefly, reads the pages dirtied
since the previous cut and hands them to `ReplicationPrimary.cut`. An epoch is the set of pages that
turns the state at the previous epoch (`base`) into the state at this one; epoch 0, and any epoch a new
or lost backup needs, is **full** (`base == FULL`: every page, applies on anything).

Each epoch travels as `EpochPart` messages; a backup stages the parts and commits the epoch only when
all parts are there and the digest matches — so a backup's `image` is always exactly the primary's
memory at some cut (never a torn epoch) and `committed_epoch` names which. It then acknowledges with
`EpochAck`. The primary keeps every epoch until all backups acknowledged it; the bytes it holds are the
**backlog**, bounded by the emergency mode: `pause` stops the workload until acks free room (no epoch
is ever lost), `drop-oldest` merges the oldest not-yet-sent epoch into its successor (the workload runs
on; backups lose that recovery point, and the merged epoch is bounded by the workload's memory).

Every message carries the **generation** of the primary's lease (raised by each failover and planned
migration, decided through consensus): a backup drops messages of an older generation, and a primary
that sees a newer one is fenced and must stop — so two primaries never feed the same backups.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

FULL = -1  # the `base` of a full epoch
EMERGENCY_MODES = ("pause", "drop-oldest")

Pages = dict[int, bytes]


@dataclass(frozen=True, slots=True)
class EpochPart:
    generation: int
    epoch: int
    base: int                                   # epoch this applies on top of, or FULL
    part: int
    parts: int
    digest: bytes                               # of the whole epoch (all parts), see `epoch_digest`
    pages: tuple[tuple[int, bytes], ...]

    @property
    def nbytes(self) -> int:
        return sum(len(d) for _, d in self.pages)


@dataclass(frozen=True, slots=True)
class EpochAck:
    generation: int
    epoch: int                                  # the backup's committed epoch after this message


@dataclass(frozen=True, slots=True)
class Send:
    backup: str
    part: EpochPart


@dataclass(frozen=True, slots=True)
class Pause:
    reason: str


@dataclass(frozen=True, slots=True)
class Resume:
    pass


@dataclass(frozen=True, slots=True)
class Fenced:
    generation: int                             # the newer generation seen: stop being primary


Effect = Send | Pause | Resume | Fenced


def epoch_digest(epoch: int, base: int, pages: Pages) -> bytes:
    h = hashlib.blake2b(digest_size=16, person=b"myc-ram-epoch")
    h.update(epoch.to_bytes(8, "big", signed=True) + base.to_bytes(8, "big", signed=True))
    for index in sorted(pages):
        data = pages[index]
        h.update(index.to_bytes(8, "big") + len(data).to_bytes(4, "big"))
        h.update(data)
    return h.digest()


@dataclass(frozen=True, slots=True)
class PrimaryConfig:
    window_bytes: int = 4 << 20          # per backup, sent but unacknowledged (buffers.py: 2 x BDP)
    backlog_limit_bytes: int = 64 << 20  # pending bytes before the emergency mode acts
    max_pending_epochs: int = 64         # pending epochs before the emergency mode acts (bounds the list)
    window_epochs: int = 8               # per backup, epochs sent but unacknowledged (bounds empty epochs too)
    part_bytes: int = 1 << 20            # payload per message (the channel's limit is 64 MiB)
    emergency: str = "pause"             # pause (consistency) | drop-oldest (availability)
    resume_below_pct: int = 50           # a paused primary resumes when the backlog falls under this %

    def __post_init__(self) -> None:
        if self.emergency not in EMERGENCY_MODES:
            raise ValueError(f"emergency mode {self.emergency!r} is not one of {', '.join(EMERGENCY_MODES)}")


@dataclass(slots=True)
class _Epoch:
    epoch: int
    base: int
    pages: Pages
    parts: tuple[EpochPart, ...]
    nbytes: int
    cut_at: float


@dataclass(slots=True)
class _Cursor:
    acked: int = FULL                    # last epoch the backup acknowledged (FULL: none yet)
    start: int | None = None             # the full epoch it started from (None: waits for one)
    epoch: int | None = None             # next epoch to send (None: everything cut was sent)
    part: int = 0                        # next part of it to send
    sent: dict[int, int] = field(default_factory=dict)  # epoch -> bytes sent, unacknowledged
    acked_at: float = 0.0

    @property
    def in_flight(self) -> int:
        return sum(self.sent.values())


@dataclass(frozen=True, slots=True)
class Lag:
    epochs: int                          # epochs cut that the backup has not acknowledged
    bytes: int                           # their size
    seconds: float                       # age of the oldest of them (0 when in sync)


@dataclass(slots=True)
class ReplicationPrimary:
    generation: int
    config: PrimaryConfig = field(default_factory=PrimaryConfig)
    pending: list[_Epoch] = field(default_factory=list)
    cursors: dict[str, _Cursor] = field(default_factory=dict)
    first_epoch: int = 0                 # after a failover: the resumed epoch + 1 (numbers never go back)
    next_epoch: int = 0
    paused: bool = False
    fenced: bool = False
    counters: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.next_epoch = max(self.next_epoch, self.first_epoch)

    # ------------------------------------------------------------------ backups
    def add_backup(self, backup: str) -> None:
        """A backup with nothing: it starts at a full epoch (`wants_full` is true until one is cut)."""
        c = self.cursors[backup] = _Cursor()
        self._restart(c)

    def remove_backup(self, backup: str) -> list[Effect]:
        self.cursors.pop(backup, None)
        self._retire()
        return self._check_room()

    def reconnected(self, backup: str, committed: int) -> None:
        """The channel to `backup` broke and is back; the backup's handshake told its committed epoch
        (acks may have been lost on the way). Resend from the first epoch after it, or a full one."""
        c = self.cursors[backup]
        c.sent.clear()
        c.part = 0
        if committed == FULL or c.start is None or committed < max(c.acked, c.start) or committed >= self.next_epoch:
            c.acked = FULL  # it has nothing we can build on: a full epoch again
            self._restart(c)
        else:
            c.acked = committed
            c.epoch = self._first_after(committed)
        self._retire()

    @property
    def wants_full(self) -> bool:
        """Some backup waits for a full epoch: the shell's next cut should pass every page."""
        return any(c.start is None for c in self.cursors.values())

    # ------------------------------------------------------------------ inputs
    def cut(self, pages: Pages, now: float, *, full: bool = False) -> list[Effect]:
        """Record one epoch: `pages` dirtied since the previous cut (every page when `full`)."""
        if self.fenced:
            raise RuntimeError("a fenced primary must not cut epochs")
        epoch = self.next_epoch
        self.next_epoch += 1
        base = FULL if (full or epoch == self.first_epoch) else epoch - 1
        self.pending.append(self._make(epoch, base, dict(pages), now))
        for c in self.cursors.values():
            if c.start is None and base == FULL:
                c.start, c.epoch, c.part = epoch, epoch, 0
            elif c.start is not None and c.epoch is None:
                c.epoch, c.part = epoch, 0
        self._retire()
        return self._check_room()

    def on_ack(self, backup: str, ack: EpochAck, now: float) -> list[Effect]:
        if ack.generation > self.generation:
            self.fenced = True
            return [Fenced(ack.generation)]
        c = self.cursors.get(backup)
        if c is None or ack.generation < self.generation or ack.epoch >= self.next_epoch:
            self._count("ack_ignored")
            return []
        if ack.epoch < c.acked:  # the backup lost its state (restarted empty): a full epoch again
            c.acked = FULL
            c.sent.clear()
            self._restart(c)
            self._count("backup_reset")
        elif ack.epoch > c.acked:
            c.acked, c.acked_at = ack.epoch, now
            for number in [n for n in c.sent if n <= ack.epoch]:
                del c.sent[number]
        self._retire()
        return self._check_room()

    def pump(self, backup: str | None = None) -> list[Send]:
        """The messages the windows allow now (to every backup, or to `backup`), in order per backup."""
        out: list[Send] = []
        for name, c in sorted(self.cursors.items()):
            if backup is not None and name != backup:
                continue
            # an epoch bigger than the window is still sent whole once it is the only one in flight:
            # the backup acknowledges only whole epochs, so stopping inside one would never be undone
            while (c.epoch is not None and len(c.sent) < self.config.window_epochs
                   and (c.in_flight < self.config.window_bytes or set(c.sent) <= {c.epoch})):
                e = self._epoch(c.epoch)
                if e is None:  # merged away by drop-oldest: go on with its successor
                    c.epoch, c.part = self._first_after(c.epoch), 0
                    continue
                part = e.parts[c.part]
                out.append(Send(name, part))
                c.sent[e.epoch] = c.sent.get(e.epoch, 0) + part.nbytes
                c.part += 1
                if c.part == len(e.parts):
                    c.epoch, c.part = self._first_after(e.epoch), 0
        return out

    # ------------------------------------------------------------------ figures
    def backlog_bytes(self) -> int:
        return sum(e.nbytes for e in self.pending)

    def backlog_pct(self) -> int:
        by_bytes = self.backlog_bytes() * 100 // max(1, self.config.backlog_limit_bytes)
        by_count = len(self.pending) * 100 // max(1, self.config.max_pending_epochs)
        return min(100, max(by_bytes, by_count))

    def last_acknowledged(self) -> int:
        """The newest epoch some backup committed and acknowledged (FULL if none)."""
        return max((c.acked for c in self.cursors.values()), default=FULL)

    def lag(self, backup: str, now: float) -> Lag:
        c = self.cursors[backup]
        behind = [e for e in self.pending if e.epoch > c.acked]
        return Lag(len(behind), sum(e.nbytes for e in behind),
                   max(0.0, now - behind[0].cut_at) if behind else 0.0)

    # ------------------------------------------------------------------ internals
    def _count(self, key: str) -> None:
        self.counters[key] = self.counters.get(key, 0) + 1

    def _make(self, epoch: int, base: int, pages: Pages, now: float) -> _Epoch:
        digest = epoch_digest(epoch, base, pages)
        chunks: list[list[tuple[int, bytes]]] = [[]]
        size = 0
        for index in sorted(pages):
            data = pages[index]
            if chunks[-1] and size + len(data) > self.config.part_bytes:
                chunks.append([])
                size = 0
            chunks[-1].append((index, data))
            size += len(data)
        parts = tuple(EpochPart(self.generation, epoch, base, i, len(chunks), digest, tuple(ch))
                      for i, ch in enumerate(chunks))
        return _Epoch(epoch, base, pages, parts, sum(len(d) for d in pages.values()), now)

    def _epoch(self, number: int) -> _Epoch | None:
        for e in self.pending:
            if e.epoch == number:
                return e
        return None

    def _first_after(self, number: int) -> int | None:
        for e in self.pending:
            if e.epoch > number:
                return e.epoch
        return None

    def _restart(self, c: _Cursor) -> None:
        """Point a backup that has nothing at the newest pending full epoch, or make it wait for one."""
        fulls = [e.epoch for e in self.pending if e.base == FULL]
        c.start = c.epoch = fulls[-1] if fulls else None
        c.part = 0

    def _first_full(self) -> int | None:
        for e in self.pending:
            if e.base == FULL:
                return e.epoch
        return None

    def _floor(self, c: _Cursor) -> int:
        """Epochs up to this one the backup no longer needs."""
        if c.acked != FULL:
            return c.acked
        return c.start - 1 if c.start is not None else self.next_epoch - 1

    def _retire(self) -> None:
        floor = min((self._floor(c) for c in self.cursors.values()), default=self.next_epoch - 1)
        self.pending = [e for e in self.pending if e.epoch > floor]

    def _untouched(self, e: _Epoch) -> bool:
        return all((c.epoch is not None and (c.epoch < e.epoch or (c.epoch == e.epoch and c.part == 0)))
                   or (c.start is None) for c in self.cursors.values())

    def _over(self) -> bool:
        return (self.backlog_bytes() >= self.config.backlog_limit_bytes
                or len(self.pending) >= self.config.max_pending_epochs)

    def _check_room(self) -> list[Effect]:
        if self.config.emergency == "pause":
            if not self.paused and self._over():
                self.paused = True
                self._count("paused")
                return [Pause(f"backlog {self.backlog_bytes()} bytes in {len(self.pending)} epochs is at the limit")]
            under = (self.backlog_bytes() * 100 < self.config.backlog_limit_bytes * self.config.resume_below_pct
                     and len(self.pending) * 100 < self.config.max_pending_epochs * self.config.resume_below_pct)
            if self.paused and under:
                self.paused = False
                return [Resume()]
            return []
        while self._over() and self._merge_oldest():
            self._count("dropped_epochs")
        return []

    def _merge_oldest(self) -> bool:
        """drop-oldest: fold the oldest untouched epoch into its successor (which must be untouched too)."""
        for i in range(len(self.pending) - 1):
            a, b = self.pending[i], self.pending[i + 1]
            if self._untouched(a) and self._untouched(b):
                pages = dict(a.pages)
                pages.update(b.pages)
                base = FULL if (a.base == FULL or b.base == FULL) else a.base
                self.pending[i: i + 2] = [self._make(b.epoch, base, pages, a.cut_at)]
                for c in self.cursors.values():
                    if c.epoch == a.epoch:
                        c.epoch = b.epoch
                    if c.start == a.epoch:
                        c.start = b.epoch
                return True
        return False


@dataclass(slots=True)
class ReplicationBackup:
    """A backup's copy: only whole, digest-checked epochs ever reach `image`."""

    generation: int
    image: Pages = field(default_factory=dict)
    committed_epoch: int = FULL
    committed_generation: int = 0        # generation of the primary that sent the committed epoch
    counters: dict[str, int] = field(default_factory=dict)
    _staging: dict[int, EpochPart] = field(default_factory=dict)

    def fence(self, generation: int) -> None:
        """The ledger names a newer lease: drop what an older primary was sending."""
        if generation > self.generation:
            self.generation = generation
            self._staging.clear()

    def on_part(self, part: EpochPart) -> list[EpochAck]:
        if part.generation < self.generation:
            self._count("stale_generation")  # tell the deposed primary which generation rules (it fences itself)
            return [EpochAck(self.generation, self.committed_epoch)] if part.part == 0 else []
        if part.generation > self.generation:
            self.fence(part.generation)
        if part.generation == self.generation and self.committed_epoch != FULL and part.epoch <= self.committed_epoch:
            self._count("old_epoch")  # a resend after a reconnect: we hold it already
            return [EpochAck(self.generation, self.committed_epoch)] if part.part == 0 else []
        if part.base != FULL and part.base != self.committed_epoch:
            self._count("wrong_base")
            return [EpochAck(self.generation, self.committed_epoch)] if part.part == 0 else []
        if not (0 <= part.part < part.parts):
            self._count("malformed")
            return []
        first = next(iter(self._staging.values()), None)
        if first is not None and (first.epoch, first.base, first.digest, first.parts) != (
                part.epoch, part.base, part.digest, part.parts):
            self._count("torn_discarded")
            self._staging.clear()
        self._staging[part.part] = part
        if len(self._staging) < part.parts:
            return []
        pages: Pages = {}
        for i in range(part.parts):
            pages.update(self._staging[i].pages)
        self._staging.clear()
        if epoch_digest(part.epoch, part.base, pages) != part.digest:
            self._count("digest_mismatch")
            return []
        if part.base == FULL:
            self.image = pages
        else:
            self.image.update(pages)
        self.committed_epoch = part.epoch
        self.committed_generation = part.generation
        return [EpochAck(self.generation, part.epoch)]

    def _count(self, key: str) -> None:
        self.counters[key] = self.counters.get(key, 0) + 1
