"""Log rotation by size, and reading/following across rotations."""

from __future__ import annotations

import trio

from mycelium.runtime.logfiles import RotatingLog, read_lines, rotated_files


async def _read(path, keep, follow=False, finished=lambda: True):
    return [line async for line in read_lines(path, keep=keep, follow=follow, finished=finished, poll_s=0.01)]


async def test_rotation_keeps_the_newest_files(tmp_path):
    path = tmp_path / "logs" / "output.log"
    log = RotatingLog(path, max_bytes=20, keep=2)
    for i in range(10):
        log.write(f"line-{i:03d}\n".encode())  # 9 bytes: two lines per file
    log.close()
    assert [p.name for p in rotated_files(path, 2)] == ["output.log.2", "output.log.1"]
    assert not (tmp_path / "logs" / "output.log.3").exists()
    assert await _read(path, 2) == [f"line-{i:03d}".encode() for i in range(4, 10)]


async def test_follow_reads_across_a_rotation_and_stops_when_finished(tmp_path):
    path = tmp_path / "output.log"
    log = RotatingLog(path, max_bytes=12, keep=3)
    done = False
    got: list[bytes] = []

    async def follow():
        async for line in read_lines(path, keep=3, follow=True, finished=lambda: done, poll_s=0.01):
            got.append(line)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(follow)
        for i in range(6):
            log.write(f"msg-{i}\n".encode())  # 6 bytes: rotates every second write
            await trio.sleep(0.03)
        log.write(b"partial")
        done = True
    log.close()
    assert got == [b"msg-0", b"msg-1", b"msg-2", b"msg-3", b"msg-4", b"msg-5", b"partial"]


async def test_missing_log_reads_as_empty(tmp_path):
    assert await _read(tmp_path / "nothing.log", 3) == []
