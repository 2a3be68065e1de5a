"""VM Endophytes on the node's own path: planned migration and failover series, probe-observed.

What the node does (mycelium/ram/vm.py, vm_runner.py), without the daemons and the ledger around it
(those add a consensus round to `migrate` and `dead_after_s` to a failover; the real-daemon test
measures them): a GuestVM (the images/testvm guest, QEMU under TCG, RAM in a shared memfd) replicated
in epochs by PrimaryReplicator to a BackupStore over an in-memory channel, then

- migration: `migrate_process` (converge, stop, final epoch acknowledged, target started from the
  backup's image, source killed) — the same function `mycelium migrate` runs;
- failover: the primary's QEMU is killed -9 and a new QEMU resumes the backup's last whole epoch.

Downtime is what an outside probe saw: the largest gap in answers of a request stream to the
guest's TCP responder on both the source's and the target's forwarded port (mycelium.ram.probe), next
to the stop-and-copy window migrate_process reports. After every move the guest's own integrity check
(a full pass over its memory writer's pages) must say `check ok`; a run that fails it is counted.

    python -m bench.ram_vm --runs 20 [--failovers 5] [--memory-mib 128]     # one JSON line per figure
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import trio

from bench.ram_process import emit, pct
from mycelium.ram.migration import migrate_process
from mycelium.ram.probe import Probe
from mycelium.ram.qemu import GuestImage, request
from mycelium.ram.replicate import BackupStore, PrimaryReplicator
from mycelium.ram.vm import GuestVM
from mycelium.testing.channels import MemoryChannelNetwork


def note(msg: str) -> None:
    print(f"[ram_vm {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


async def _wait_answer(vm: GuestVM, timeout_s: float = 300) -> None:
    with trio.fail_after(timeout_s):
        while not await trio.to_thread.run_sync(lambda: request("127.0.0.1", vm.probe_port, b"ping", 1.0)):
            await trio.sleep(0.2)


async def _replicated(store: BackupStore, epochs: int) -> None:
    with trio.fail_after(600):
        while "v" not in store.images or store.images["v"].committed_epoch < epochs:
            await trio.sleep(0.05)


async def one(tmp: Path, n: int, guest: GuestImage, memory_mib: int, *, failover: bool) -> dict:
    src = GuestVM("v", guest, tmp / f"s{n}", memory_mib=memory_mib)
    dst = GuestVM("v", guest, tmp / f"t{n}", memory_mib=memory_mib)
    probe: Probe | None = None
    try:
        async with trio.open_nursery() as nursery:
            net = MemoryChannelNetwork(nursery)
            store = BackupStore()
            store.serve(net.provider("t"))
            await trio.to_thread.run_sync(src.start)
            await _wait_answer(src)
            rep = PrimaryReplicator("v", 1, net.provider("s"), ["t"], src.cut, interval_s=1.0)
            async with trio.open_nursery() as src_node:
                src_node.start_soon(rep.run)
                await _replicated(store, 3)
                started: list[float] = []

                async def start_target(generation: int) -> None:
                    image = dict(store.images["v"].image)
                    await trio.to_thread.run_sync(lambda: dst.start(image=image))
                    started.append(time.monotonic())

                if failover:
                    src_node.cancel_scope.cancel()
                else:
                    # the probe asks both endpoints; the target's port is known once it is started
                    probe = Probe([("127.0.0.1", src.probe_port)], interval_s=0.01).start()
                    await trio.sleep(0.5)  # answers before the move: the gap is measured from the last one
                    t0 = time.monotonic()
                    report = await migrate_process(rep, src, "t", start_target)
                    src_node.cancel_scope.cancel()
            if failover:
                probe = Probe([("127.0.0.1", src.probe_port)], interval_s=0.01).start()
                await trio.sleep(0.5)
                t0 = time.monotonic()
                await trio.to_thread.run_sync(src.kill)
                await start_target(2)
            target_probe = Probe([("127.0.0.1", dst.probe_port)], interval_s=0.01).start()
            await _wait_answer(dst, 120)
            await trio.sleep(0.3)
            target_probe.stop()
            assert probe is not None
            probe.stop()
            answers = sorted([t for t, _ in probe.answers] + [t for t, _ in target_probe.answers])
            # the largest gap in answers from the last one before the move on (the source answers on
            # while the move converges; the target's first answers close it)
            before = [t for t in answers if t < t0]
            window = [t for t in answers if before and t >= before[-1]]
            gap = max((b - a for a, b in zip(window, window[1:])), default=float("inf"))
            if not any(t for t, _ in target_probe.answers):
                gap = float("inf")  # the target never answered: no move to measure
            check = await trio.to_thread.run_sync(lambda: request("127.0.0.1", dst.probe_port, b"check", 60.0)) or ""
            nursery.cancel_scope.cancel()
        out = {"probe_gap_ms": round(gap * 1e3, 1), "integrity_ok": check.startswith("check ok"),
               "check": check.strip()[:80], "panicked": dst.vm.panicked() if dst.vm else None}
        if not failover:
            out.update(stop_copy_ms=round(report.downtime_s * 1e3, 1), converge_s=round(report.converge_s, 2),
                       max_epoch_stop_ms=round(src.counters.get("max_freeze_s", 0.0) * 1e3, 1))
        return out
    finally:
        if probe is not None:
            probe.stop()
        src.kill()
        dst.kill()


async def series(runs: int, failovers: int, memory_mib: int) -> None:
    guest = await trio.to_thread.run_sync(GuestImage.test_guest)
    with tempfile.TemporaryDirectory(prefix="myc-ram-vmbench-") as tmp:
        migrations, fails = [], []
        for n in range(runs):
            r = await one(Path(tmp), n, guest, memory_mib, failover=False)
            note(f"migration {n + 1}/{runs}: {r}")
            emit(figure="vm_migration_run", run=n, **r)
            migrations.append(r)
        for n in range(failovers):
            r = await one(Path(tmp), 1000 + n, guest, memory_mib, failover=True)
            note(f"failover {n + 1}/{failovers}: {r}")
            emit(figure="vm_failover_run", run=n, **r)
            fails.append(r)
    for name, rows, extra in (("vm_migration", migrations, "stop_copy_ms"), ("vm_failover", fails, None)):
        if not rows:
            continue
        gaps = [r["probe_gap_ms"] for r in rows]
        fig = {"figure": f"{name}_probe_gap_ms", "runs": len(rows), "p50": pct(gaps, 0.5), "p99": pct(gaps, 0.99),
               "integrity_ok": sum(r["integrity_ok"] for r in rows), "memory_mib": memory_mib}
        if extra:
            own = [r[extra] for r in rows]
            fig.update(stop_copy_p50=pct(own, 0.5), stop_copy_p99=pct(own, 0.99))
        emit(**fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--failovers", type=int, default=5)
    ap.add_argument("--memory-mib", type=int, default=128)
    args = ap.parse_args(argv)
    trio.run(series, args.runs, args.failovers, args.memory_mib)
    return 0


if __name__ == "__main__":
    sys.exit(main())
