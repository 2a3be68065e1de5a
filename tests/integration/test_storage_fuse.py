"""FUSE volumes: unmodified programs (sqlite3, a shell pipeline) through a mounted volume, the
close-to-open model, the read-only mount of a node without the lease, and a remount elsewhere."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
import trio

from mycelium.storage.mount import fuse_unavailable, serve_volume
from mycelium.testing.storage import storage_cluster
from mycelium.testing.deadlines import hang_after

REASON = fuse_unavailable()
pytestmark = pytest.mark.skipif(REASON is not None, reason=f"FUSE unavailable: {REASON}")


@pytest.fixture
def mnt(tmp_path):
    path = tmp_path / "mnt"
    path.mkdir()
    yield path
    # a crashed test must not leave a mount behind
    subprocess.run(["fusermount3", "-u", "-z", str(path)], capture_output=True)


async def _sh(script: str, *, check: bool = True) -> subprocess.CompletedProcess:
    return await trio.run_process(["sh", "-c", script], capture_stdout=True, capture_stderr=True, check=check)


@pytest.mark.skipif(shutil.which("sqlite3") is None, reason="sqlite3 CLI missing (Debian: sqlite3)")
async def test_sqlite_and_a_pipeline_through_a_mounted_volume_and_a_remount_elsewhere(tmp_path, mnt):
    async with storage_cluster(tmp_path, 3, run_repair=False) as c:
        writer, other = c.nodes[0], c.nodes[2]
        c.roots.leases["app"] = writer.node_id
        async with trio.open_nursery() as n:
            fs = await n.start(serve_volume, writer, "app", mnt, tmp_path / "staging0")
            assert fs.writable
            with hang_after(60):
                await _sh(f"cd {mnt} && sqlite3 app.db 'create table t(x integer, y text);'"
                          f" && sqlite3 app.db \"insert into t select value, 'row' || value from generate_series(1, 2000);\"")
                out = await _sh(f"sqlite3 {mnt}/app.db 'select count(*), sum(x) from t;'")
                assert out.stdout.decode().strip() == "2000|2001000"
                await _sh(f"cd {mnt} && mkdir -p logs && seq 1 20000 | sort -rn > logs/sorted.txt && wc -l < logs/sorted.txt > logs/count")
                out = await _sh(f"head -1 {mnt}/logs/sorted.txt; cat {mnt}/logs/count; ls {mnt} {mnt}/logs")
                assert out.stdout.decode().split() == ["20000", "20000", f"{mnt}:", "app.db", "logs", f"{mnt}/logs:", "count", "sorted.txt"]
                assert fs.uploads >= 3 and fs.upload_errors == 0  # each close committed a new root
            n.cancel_scope.cancel()
        # every byte is in the distributed store, readable by another node without the mount
        assert (await other.get_file("app", "logs/sorted.txt")).split(b"\n")[:2] == [b"20000", b"19999"]
        # the service re-placed on another node mounts the same volume (read-only: no lease there)
        async with trio.open_nursery() as n:
            ro = await n.start(serve_volume, other, "app", mnt, tmp_path / "staging2")
            assert not ro.writable  # the lease names the first node
            with hang_after(60):
                out = await _sh(f"sqlite3 -readonly {mnt}/app.db 'select max(x), count(*) from t;'")
                assert out.stdout.decode().strip() == "2000|2000"
                refused = await _sh(f"echo more >> {mnt}/logs/count", check=False)
                assert refused.returncode != 0 and b"Read-only" in refused.stderr
            n.cancel_scope.cancel()


_SLOW_WRITER = """
import sys
f = open(sys.argv[1], "w")
f.write("version 2")
f.flush()                   # bytes reach the mount's staging copy, not the volume
print("written", flush=True)
sys.stdin.readline()        # hold the file open until told
f.close()                   # close-to-open: returns after the commit
print("closed", flush=True)
"""


async def test_close_to_open_a_change_is_visible_exactly_after_close(tmp_path, mnt):
    async with storage_cluster(tmp_path, 3, run_repair=False) as c:
        writer, reader = c.nodes[0], c.nodes[1]
        await writer.put_file("vol", "state.txt", b"version 1")
        async with trio.open_nursery() as n:
            await n.start(lambda task_status: serve_volume(writer, "vol", mnt, tmp_path / "st", writable=True, task_status=task_status))
            proc = await trio.lowlevel.open_process(
                [sys.executable, "-c", _SLOW_WRITER, str(mnt / "state.txt")],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            )
            with hang_after(60):
                line = await _readline(proc.stdout)
                assert line == b"written\n"
                assert await reader.get_file("vol", "state.txt") == b"version 1"  # open, not closed: old version
                await proc.stdin.send_all(b"go\n")
                assert await _readline(proc.stdout) == b"closed\n"
                assert await reader.get_file("vol", "state.txt") == b"version 2"  # closed: the new version
                assert await proc.wait() == 0
            n.cancel_scope.cancel()


async def _readline(stream) -> bytes:
    buf = b""
    while not buf.endswith(b"\n"):
        chunk = await stream.receive_some(1)
        if not chunk:
            break
        buf += chunk
    return buf
