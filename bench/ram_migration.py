"""Endophyte VM migration under TCG: downtime (outside probe vs QEMU's figure) and guest integrity per run.

    python -m bench.ram_migration --runs 20 --mode postcopy          # the downtime series
    python -m bench.ram_migration --runs 3 --mode precopy --compare-ram --rtc host   # the precopy check

Each run boots a fresh test guest (images/testvm), migrates it to a second QEMU over a local Unix socket
(or over the data channel bridge with --channel), and records: QEMU's downtime and total time, the
largest gap a probe saw in a request stream to both endpoints, the guest's own integrity check after
arrival, a kernel panic on the target's console within --watch-s, and (precopy, --compare-ram) whether
guest RAM is byte-identical on both sides before the target resumes. One JSON line per run, then a summary.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from mycelium.ram.probe import Probe
from mycelium.ram.qemu import GuestConfig, GuestImage, QemuError, QemuVM, migrate


def one_run(image: GuestImage, root: Path, args: argparse.Namespace, n: int) -> dict:
    cfg = GuestConfig(memory_mib=args.memory_mib, writer_mib=args.writer_mib, writer_rate=args.rate,
                      rtc_clock=args.rtc, icount=args.icount)
    src = QemuVM(root / f"src{n}", image, cfg)
    dst = QemuVM(root / f"dst{n}", image, cfg, incoming="defer", hold_after_incoming=args.compare_ram)
    out: dict = {"run": n, "mode": args.mode, "rtc": args.rtc, "icount": args.icount}
    probe = None
    try:
        src.start()
        src.wait_ready()
        time.sleep(args.warm_s)  # let the writer dirty pages at its steady rate
        dst.start()
        probe = Probe([("127.0.0.1", src.probe_port), ("127.0.0.1", dst.probe_port)]).start()
        time.sleep(0.5)
        digests: dict = {}

        def compare(s: QemuVM, d: QemuVM) -> None:
            digests["src"], digests["dst"] = s.ram_digest(), d.ram_digest()

        sock = root / f"mig{n}.sock"
        t0 = time.monotonic()
        res = migrate(src, dst, f"unix:{sock}", f"unix:{sock}", mode=args.mode,
                      before_resume=compare if args.compare_ram else None, converge_s=args.converge_s)
        resumed = time.monotonic()
        out.update(qemu_downtime_ms=res.downtime_ms, total_ms=res.total_ms, ram_bytes=res.ram_transferred,
                   postcopy_switched=res.postcopy)
        if digests:
            out["ram_identical"] = digests["src"] == digests["dst"]
        # the target must answer again; then watch its console for a panic
        deadline = resumed + 60
        while not probe.answered_by(1, resumed) and time.monotonic() < deadline and not dst.panicked():
            time.sleep(0.05)
        src.close()
        end = time.monotonic() + args.watch_s
        while time.monotonic() < end and not dst.panicked():
            time.sleep(0.2)
        probe.stop()
        out["probe_gap_ms"] = round(probe.largest_gap_s(since=t0) * 1000, 1)
        out["panic"] = dst.panicked()
        out["check"] = None if out["panic"] else dst.check()
        out["integrity_ok"] = (not out["panic"]) and bool(out["check"]) and out["check"].startswith("check ok")
        if out["panic"]:
            out["console"] = dst.serial_tail(1500)
    except QemuError as exc:
        out["error"] = str(exc)
        out["integrity_ok"] = False
        out["panic"] = dst.panicked() if dst.serial_log.exists() else None
        if out["panic"]:
            out["console"] = dst.serial_tail(1500)
    finally:
        if probe is not None:
            probe.stop()
        src.close()
        dst.close()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--mode", choices=["precopy", "postcopy"], default="postcopy")
    ap.add_argument("--rtc", default="host")
    ap.add_argument("--icount", default=None)
    ap.add_argument("--compare-ram", action="store_true")
    ap.add_argument("--memory-mib", type=int, default=128)
    ap.add_argument("--writer-mib", type=int, default=16)
    ap.add_argument("--rate", type=int, default=2000)
    ap.add_argument("--warm-s", type=float, default=2.0)
    ap.add_argument("--watch-s", type=float, default=10.0)
    ap.add_argument("--converge-s", type=float, default=1.0)
    args = ap.parse_args(argv)
    image = GuestImage.test_guest()
    runs = []
    with tempfile.TemporaryDirectory(prefix="myc-ram-bench-") as tmp:
        for n in range(args.runs):
            r = one_run(image, Path(tmp), args, n)
            runs.append(r)
            print(json.dumps(r), flush=True)
    gaps = sorted(r["probe_gap_ms"] for r in runs if "probe_gap_ms" in r)
    qd = sorted(r["qemu_downtime_ms"] for r in runs if r.get("qemu_downtime_ms") is not None)

    def pct(xs: list, q: float):
        return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else None

    summary = {"summary": True, "mode": args.mode, "rtc": args.rtc, "icount": args.icount, "runs": len(runs),
               "integrity_ok": sum(1 for r in runs if r.get("integrity_ok")),
               "panics": sum(1 for r in runs if r.get("panic")),
               "ram_identical": [r.get("ram_identical") for r in runs if "ram_identical" in r],
               "probe_gap_ms_p50": pct(gaps, 0.5), "probe_gap_ms_p99": pct(gaps, 0.99),
               "qemu_downtime_ms_p50": pct(qd, 0.5), "qemu_downtime_ms_p99": pct(qd, 0.99),
               "probe_gap_ms_mean": round(statistics.mean(gaps), 1) if gaps else None}
    print(json.dumps(summary), flush=True)
    return 0 if summary["integrity_ok"] == len(runs) else 1


if __name__ == "__main__":
    sys.exit(main())
