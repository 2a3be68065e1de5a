"""Process Endophytes: dirty-page scan cost per GiB, epoch freeze time, planned-migration downtime
(20 runs, integrity checked each time) and failover time (kill -9 to the resumed program's start).

    python -m bench.ram_process [--runs 20] [--scan-mib 256]

One JSON line per figure. The migration and failover ride the in-memory data channel (the floor of
the channel: no network), so they measure our side: freeze, final epoch, program restart.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import mmap
import os
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path

import trio

from mycelium.ram.migration import migrate_process
from mycelium.ram.pagetrack import PAGE_SIZE, protect_region, scan_written
from mycelium.ram.process import ArenaProcess
from mycelium.ram.replicate import BackupStore, PrimaryReplicator
from mycelium.testing.channels import MemoryChannelNetwork

REPO = Path(__file__).resolve().parents[1]
WRITER = [sys.executable, str(REPO / "examples" / "endophyte_counter.py")]
ENV = {"PYTHONPATH": str(REPO)}


def emit(**kw) -> None:
    print(json.dumps(kw), flush=True)


def scan_cost(mib: int) -> None:
    n = mib << 20
    fd = os.memfd_create("bench-arena")
    os.ftruncate(fd, n)
    m = mmap.mmap(fd, n, mmap.MAP_SHARED)
    addr = ctypes.addressof(ctypes.c_char.from_buffer(m))
    uffd = protect_region(addr, n)
    for i in range(0, n, PAGE_SIZE):  # populate every page once
        m[i] = 1
    scan_written(os.getpid(), addr, n)
    for dirty_pct in (0, 1, 10):
        step = max(1, 100 // dirty_pct) if dirty_pct else 0
        times = []
        for _ in range(5):
            if step:
                for i in range(0, n // PAGE_SIZE, step):
                    m[i * PAGE_SIZE] = 2
            t = time.perf_counter()
            pages = scan_written(os.getpid(), addr, n)
            times.append(time.perf_counter() - t)
        ms = statistics.median(times) * 1e3
        emit(figure="scan_ms_per_gib", dirty_pct=dirty_pct, dirty_pages=len(pages), arena_mib=mib,
             value=round(ms * 1024 / mib, 2), unit="ms/GiB")
    os.close(uffd)
    del m
    os.close(fd)


async def one_migration(tmp: Path, n: int) -> dict:
    async with trio.open_nursery() as nursery:
        net = MemoryChannelNetwork(nursery)
        store = BackupStore()
        store.serve(net.provider("t"))
        src = ArenaProcess("c", WRITER, 256 * 1024, tmp / f"s{n}", env=ENV)
        dst = ArenaProcess("c", WRITER, 256 * 1024, tmp / f"t{n}", env=ENV)
        await trio.to_thread.run_sync(src.start)
        try:
            rep = PrimaryReplicator("c", 1, net.provider("s"), ["t"], src.cut, interval_s=0.05)
            async with trio.open_nursery() as src_node:
                src_node.start_soon(rep.run)
                with trio.fail_after(60):
                    while "c" not in store.images or store.images["c"].committed_epoch < 3:
                        await trio.sleep(0.02)
                final: list[int] = []

                async def start_target(generation: int) -> None:
                    image = dict(store.images["c"].image)
                    final.append(struct.unpack_from("<Q", image[0], 8)[0])
                    await trio.to_thread.run_sync(lambda: dst.start(image=image))

                report = await migrate_process(rep, src, "t", start_target)
                src_node.cancel_scope.cancel()
            with trio.fail_after(30):
                while "start " not in (dst.workdir / "stdout.log").read_text():
                    await trio.sleep(0.01)
            line = (dst.workdir / "stdout.log").read_text().strip().splitlines()[-1]
            ok = line == f"start counter={final[0]} resumed integrity=ok"
            return {"downtime_ms": round(report.downtime_s * 1e3, 1), "integrity_ok": ok,
                    "max_freeze_ms": round(rep.figures.max_freeze_s * 1e3, 2)}
        finally:
            src.kill()
            dst.kill()
            nursery.cancel_scope.cancel()


async def one_failover(tmp: Path, n: int) -> dict:
    async with trio.open_nursery() as nursery:
        net = MemoryChannelNetwork(nursery)
        store = BackupStore()
        store.serve(net.provider("b"))
        src = ArenaProcess("c", WRITER, 256 * 1024, tmp / f"fs{n}", env=ENV)
        dst = ArenaProcess("c", WRITER, 256 * 1024, tmp / f"fb{n}", env=ENV)
        await trio.to_thread.run_sync(src.start)
        try:
            rep = PrimaryReplicator("c", 1, net.provider("a"), ["b"], src.cut, interval_s=0.05)
            async with trio.open_nursery() as a:
                a.start_soon(rep.run)
                with trio.fail_after(60):
                    while "c" not in store.images or store.images["c"].committed_epoch < 3:
                        await trio.sleep(0.02)
                a.cancel_scope.cancel()
            t0 = time.monotonic()
            src.kill()
            image = dict(store.images["c"].image)
            expected = struct.unpack_from("<Q", image[0], 8)[0]
            await trio.to_thread.run_sync(lambda: dst.start(image=image))
            with trio.fail_after(30):
                while "start " not in (dst.workdir / "stdout.log").read_text():
                    await trio.sleep(0.005)
            took = time.monotonic() - t0
            line = (dst.workdir / "stdout.log").read_text().strip().splitlines()[-1]
            return {"failover_ms": round(took * 1e3, 1),
                    "integrity_ok": line == f"start counter={expected} resumed integrity=ok"}
        finally:
            src.kill()
            dst.kill()
            nursery.cancel_scope.cancel()


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


async def series(runs: int) -> None:
    with tempfile.TemporaryDirectory(prefix="myc-ram-pbench-") as tmp:
        mig = [await one_migration(Path(tmp), n) for n in range(runs)]
        fo = [await one_failover(Path(tmp), n) for n in range(max(1, runs // 4))]
    d = [m["downtime_ms"] for m in mig]
    emit(figure="process_migration_downtime_ms", runs=runs, p50=pct(d, 0.5), p99=pct(d, 0.99),
         integrity_ok=sum(m["integrity_ok"] for m in mig), max_freeze_ms=max(m["max_freeze_ms"] for m in mig))
    f = [x["failover_ms"] for x in fo]
    emit(figure="process_failover_restart_ms", runs=len(fo), p50=pct(f, 0.5), p99=pct(f, 0.99),
         integrity_ok=sum(x["integrity_ok"] for x in fo),
         note="kill -9 to the resumed program's start line; excludes the ledger's dead_after_s detection")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--scan-mib", type=int, default=256)
    args = ap.parse_args(argv)
    scan_cost(args.scan_mib)
    trio.run(series, args.runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
