"""A real VM Endophyte: the test guest migrated by QEMU postcopy, its stream carried over a data channel,
the downtime seen by an outside probe next to QEMU's figure, and the guest's own integrity check after."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
import trio

from mycelium.ram.bridge import BridgeIn, bridge_out
from mycelium.ram.probe import Probe
from mycelium.ram.qemu import GuestImage, QemuVM, migrate
from mycelium.testing.channels import MemoryChannelNetwork
from mycelium.testing.deadlines import hang_after

pytestmark = [
    pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None,
                       reason="qemu-system-x86_64 not installed (scripts/apt.d/ram.txt)"),
    # Not a default test until the failure is explained: on 2026-12-01, on a quiet box, the migrated
    # guest panicked on arrival (a page fault, CR2 ffff8d6ac49f6bc8) in the full-suite run, after 7 of 7
    # intact postcopy runs earlier that day. Postcopy is therefore not shown sound either; run with
    # --slow to reproduce. (Deployed VM Endophytes do not use this path: test_ram_vm_daemons.py.)
    pytest.mark.slow,
]


async def test_vm_postcopy_migration_over_a_data_channel_keeps_the_guest_intact(tmp_path: Path) -> None:
    image = await trio.to_thread.run_sync(GuestImage.test_guest)
    src = QemuVM(tmp_path / "src", image)
    dst = QemuVM(tmp_path / "dst", image, incoming="defer")
    probe = None
    try:
        await trio.to_thread.run_sync(src.start)
        await trio.to_thread.run_sync(src.wait_ready)
        await trio.to_thread.run_sync(dst.start)
        async with trio.open_nursery() as nursery:
            net = MemoryChannelNetwork(nursery, buffer=64)
            incoming = BridgeIn(net.provider("target"))
            out_path, in_path = str(tmp_path / "out.sock"), str(tmp_path / "in.sock")
            incoming.expect("vm1", in_path)
            await nursery.start(bridge_out, net.provider("source"), "target", out_path, "vm1")
            probe = Probe([("127.0.0.1", src.probe_port), ("127.0.0.1", dst.probe_port)]).start()
            await trio.sleep(0.5)
            t0 = time.monotonic()
            result = await trio.to_thread.run_sync(
                lambda: migrate(src, dst, f"unix:{out_path}", f"unix:{in_path}", mode="postcopy", converge_s=1.0))
            with hang_after(60):
                while not probe.answered_by(1, t0):
                    assert not dst.panicked(), dst.serial_tail()
                    await trio.sleep(0.05)
            await trio.to_thread.run_sync(src.close)
            await trio.sleep(2)  # the guest runs on for a while on the target before we check it
            probe.stop()
            assert not dst.panicked(), dst.serial_tail()
            check = await trio.to_thread.run_sync(dst.check)
            assert check.startswith("check ok"), check
            assert result.status == "completed" and result.postcopy and incoming.carried["vm1"] > 0
            gap = probe.largest_gap_s(since=t0)
            assert gap < 30, f"largest gap in answers {gap:.3f} s"
            print(f"postcopy: QEMU downtime {result.downtime_ms} ms, probe gap {gap * 1000:.0f} ms, {check}")
            nursery.cancel_scope.cancel()
    finally:
        if probe is not None:
            probe.stop()
        src.close()
        dst.close()
