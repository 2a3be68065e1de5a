"""The trio shells of replication: a primary streaming epochs to its backups, and the backups' store.

Both sit on a `ChannelProvider` (mesh/channel.py: the mesh's data channel, or the in-memory one in
tests) under the purpose "ram". The protocol logic is in epochs.py; here are only channels, the clock,
the worker thread that cuts epochs, and reconnects.

A primary channel opens with `Hello(name, generation)`; the backup answers with an ack of the epoch it
holds (that is the reconnect handshake `ReplicationPrimary.reconnected` needs), then parts flow one way
and acks the other. Between cuts the throttle slows the workload by duty cycle (freeze for `level %`
of each slice — what QEMU's cpu-throttle does to vCPUs), since cgroup cpu.max is not always delegated.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import trio

from mycelium.mesh.channel import ChannelClosed, ChannelError, ChannelProvider, DataChannel
from mycelium.ram.epochs import (FULL, EpochAck, Fenced, Pause, PrimaryConfig, ReplicationBackup,
                                 ReplicationPrimary, Resume)
from mycelium.ram.throttle import Throttle
from mycelium.ram.wire import Bye, Hello, WireError, decode, encode

PURPOSE = "ram"
MAX_BACKUP_IMAGES = 64   # Endophytes one node keeps backups of (bounded table)


@dataclass(slots=True)
class BackupStore:
    """This node's backup copies, one per Endophyte name; `serve(provider)` accepts primaries."""

    images: dict[str, ReplicationBackup] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)
    on_commit: Callable[[str, int], None] | None = None   # (name, epoch): for reporting to the ledger

    def serve(self, provider: ChannelProvider) -> None:
        provider.serve_channels(PURPOSE, self.handle)

    def _count(self, key: str) -> None:
        self.counters[key] = self.counters.get(key, 0) + 1

    async def handle(self, peer: str, channel: DataChannel) -> None:
        try:
            first = decode(await channel.receive())
            if not isinstance(first, Hello):
                self._count("no_hello")
                return
            backup = self.images.get(first.name)
            if backup is None:
                if len(self.images) >= MAX_BACKUP_IMAGES:
                    self._count("table_full")
                    return
                backup = self.images[first.name] = ReplicationBackup(generation=first.generation)
            if first.generation < backup.generation:
                self._count("stale_primary")
                await channel.send(encode(EpochAck(backup.generation, backup.committed_epoch)))
                return
            backup.fence(first.generation)
            await channel.send(encode(EpochAck(backup.generation, backup.committed_epoch)))
            while True:
                try:
                    msg = decode(await channel.receive())
                except WireError:
                    self._count("malformed")
                    continue
                if isinstance(msg, Bye):
                    return
                if not hasattr(msg, "digest"):
                    self._count("unexpected")
                    continue
                for ack in backup.on_part(msg):
                    if self.on_commit is not None:
                        self.on_commit(first.name, ack.epoch)
                    await channel.send(encode(ack))
        except (ChannelClosed, WireError):
            return  # the primary went away or spoke garbage: it reconnects with a hello
        finally:
            await channel.aclose()


@dataclass(slots=True)
class Figures:
    carried_bytes: int = 0
    dirty_bytes: int = 0
    epochs_cut: int = 0
    max_freeze_s: float = 0.0
    throughput_Bps: float = 0.0


class PrimaryReplicator:
    """Cuts an epoch every `interval_s` (a blocking `cut(full) -> (pages, freeze_s)` run in a thread),
    streams it to every backup, applies the throttle and the emergency mode through `pause`/`resume`."""

    def __init__(self, name: str, generation: int, provider: ChannelProvider, backups: list[str],
                 cut: Callable[[bool], tuple[dict[int, bytes], float]], *, config: PrimaryConfig | None = None,
                 throttle: Throttle | None = None, interval_s: float = 0.1,
                 pause: Callable[[], None] | None = None, resume: Callable[[], None] | None = None,
                 first_epoch: int = 0) -> None:
        self.name, self.provider = name, provider
        self.core = ReplicationPrimary(generation, config or PrimaryConfig(), first_epoch=first_epoch)
        self.throttle = throttle or Throttle()
        self.interval_s = interval_s
        self._cut, self._pause, self._resume = cut, pause, resume
        self.figures = Figures()
        self._wake = {b: trio.Event() for b in backups}
        self._connected: dict[str, DataChannel] = {}
        self.fenced = trio.Event()
        self.paused_by_emergency = False
        self.cutting = True  # False once a planned migration took the final cut
        for b in backups:
            self.core.add_backup(b)
        self.acked = trio.Event()  # set on every ack (tests and migration wait on it)

    # ------------------------------------------------------------------ status
    def status(self, now: float) -> dict:
        return {"generation": self.core.generation, "epoch": self.core.next_epoch - 1,
                "throttle_pct": self.throttle.level_pct, "throttle": self.throttle.kind,
                "paused": self.core.paused, "throughput_Bps": int(self.figures.throughput_Bps),
                "backlog_bytes": self.core.backlog_bytes(), "max_freeze_ms": round(self.figures.max_freeze_s * 1e3, 2),
                "backups": {b: {"acked_epoch": self.core.cursors[b].acked,
                                "lag_epochs": self.core.lag(b, now).epochs,
                                "lag_bytes": self.core.lag(b, now).bytes,
                                "lag_s": round(self.core.lag(b, now).seconds, 3),
                                "connected": b in self._connected} for b in self.core.cursors}}

    # ------------------------------------------------------------------ tasks
    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            for b in list(self.core.cursors):
                nursery.start_soon(self._link, b)
            task_status.started()
            nursery.start_soon(self._cutter)
            await self.fenced.wait()
            nursery.cancel_scope.cancel()

    async def cut_now(self, full: bool = False) -> int:
        """One epoch cut immediately (the planned migration's final cut). Returns its number."""
        pages, frozen = await trio.to_thread.run_sync(self._cut, full or self.core.wants_full)
        self.figures.max_freeze_s = max(self.figures.max_freeze_s, frozen)
        self.figures.dirty_bytes += sum(len(d) for d in pages.values())
        epoch = self.core.next_epoch
        self._effects(self.core.cut(pages, trio.current_time(), full=full or self.core.wants_full))
        self.figures.epochs_cut += 1
        self._kick()
        return epoch

    async def _cutter(self) -> None:
        last_carried, last_t = 0, trio.current_time()
        while True:
            if self.cutting and not self.core.paused:
                await self.cut_now()
            await self._throttled_sleep()
            now = trio.current_time()
            carried = self.figures.carried_bytes - last_carried
            dt = max(1e-6, now - last_t)
            self.figures.throughput_Bps = 0.7 * self.figures.throughput_Bps + 0.3 * carried / dt
            self.throttle.on_period(self.core.backlog_pct(), self.figures.dirty_bytes, carried,
                                    in_sync=self.core.backlog_bytes() == 0)
            self.figures.dirty_bytes, last_carried, last_t = 0, self.figures.carried_bytes, now

    async def _throttled_sleep(self) -> None:
        level = self.throttle.level_pct
        if level == 0 or self._pause is None or self.core.paused:
            await trio.sleep(self.interval_s)
            return
        slices = max(1, int(self.interval_s / 0.02))
        for _ in range(slices):
            await trio.to_thread.run_sync(self._pause)
            await trio.sleep(self.interval_s / slices * level / 100)
            await trio.to_thread.run_sync(self._resume)
            await trio.sleep(self.interval_s / slices * (100 - level) / 100)

    def _effects(self, effects: list) -> None:
        for e in effects:
            if isinstance(e, Pause) and self._pause is not None:
                self._pause()
                self.paused_by_emergency = True
            elif isinstance(e, Resume) and self._resume is not None and self.paused_by_emergency:
                self._resume()
                self.paused_by_emergency = False
            elif isinstance(e, Fenced):
                self.fenced.set()

    def _kick(self) -> None:
        for b in list(self._wake):
            self._wake[b].set()

    async def _link(self, backup: str) -> None:
        """Keep one channel to `backup`: handshake, then send what the window allows and read acks."""
        backoff = 0.05
        while True:
            try:
                channel = await self.provider.open_channel(backup, PURPOSE)
            except ChannelError:
                await trio.sleep(backoff)
                backoff = min(2.0, backoff * 2)
                continue
            backoff = 0.05
            try:
                await channel.send(encode(Hello(self.name, self.core.generation)))
                hello_ack = decode(await channel.receive())
                if not isinstance(hello_ack, EpochAck):
                    raise WireError("expected an ack as the handshake reply")
                if hello_ack.generation > self.core.generation:
                    self._effects([Fenced(hello_ack.generation)])
                    return
                self.core.reconnected(backup, hello_ack.epoch)
                self._connected[backup] = channel
                async with trio.open_nursery() as n:
                    n.start_soon(self._sender, backup, channel)
                    while True:
                        msg = decode(await channel.receive())
                        if isinstance(msg, EpochAck):
                            self._effects(self.core.on_ack(backup, msg, trio.current_time()))
                            self.acked.set()
                            self.acked = trio.Event()
                            self._kick()
            except (ChannelClosed, WireError):
                pass
            finally:
                self._connected.pop(backup, None)
                with trio.CancelScope(shield=True):
                    await channel.aclose()
            await trio.sleep(backoff)

    async def _sender(self, backup: str, channel: DataChannel) -> None:
        while True:
            self._wake[backup] = trio.Event()
            for send in self.core.pump(backup):
                await channel.send(encode(send.part))
                self.figures.carried_bytes += send.part.nbytes
            await self._wake[backup].wait()


def last_committed(store: BackupStore, name: str) -> int:
    b = store.images.get(name)
    return b.committed_epoch if b is not None else FULL

