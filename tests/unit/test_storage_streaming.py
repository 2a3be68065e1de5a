"""Streamed puts: a file is read, sealed and placed chunk by chunk — a put holds at most
chunks_in_flight + 1 chunks in memory — and reads back byte-identical (also empty files and files of
an exact number of chunks); a put that fails stops reading and commits nothing."""

from __future__ import annotations

import os

import pytest

from mycelium.storage.node import PutFailed, StorageConfig, read_pieces
from mycelium.testing.storage import storage_cluster

CHUNK = 64 << 10


@pytest.mark.parametrize("size", [0, 1, CHUNK, 3 * CHUNK, 20 * CHUNK + 17])
async def test_read_pieces_cuts_a_file_like_split(tmp_path, size):
    src = tmp_path / "f"
    data = os.urandom(size)
    src.write_bytes(data)
    pieces = [p async for p in read_pieces(src, CHUNK)]
    assert b"".join(pieces) == data and len(pieces) == max(1, -(-size // CHUNK))
    assert all(len(p) == CHUNK for p in pieces[:-1])


async def test_a_streamed_put_holds_a_bounded_number_of_chunks_and_reads_back(tmp_path):
    cfg = StorageConfig(request_timeout_s=30.0, chunk_bytes=CHUNK, chunks_in_flight=2)  # a hang detector
    async with storage_cluster(tmp_path, 3, cfg=cfg, run_repair=False) as c:
        writer = c.nodes[0]
        c.roots.leases["vol"] = writer.node_id
        src = tmp_path / "big.bin"
        data = os.urandom(40 * CHUNK + 5)
        src.write_bytes(data)
        entry = await writer.put_path("vol", "big.bin", src)
        assert entry.size == len(data) and len(entry.chunks) == 41
        assert writer.peak_pieces_held == cfg.chunks_in_flight + 1  # the bound, reached with 41 chunks
        assert await c.nodes[2].get_file("vol", "big.bin") == data
        empty = tmp_path / "empty"
        empty.write_bytes(b"")
        assert (await writer.put_path("vol", "empty", empty)).size == 0
        assert await c.nodes[1].get_file("vol", "empty") == b""


async def test_a_failed_streamed_put_commits_nothing(tmp_path):
    cfg = StorageConfig(request_timeout_s=1.0, chunk_bytes=CHUNK, chunks_in_flight=2)
    async with storage_cluster(tmp_path, 3, cfg=cfg, run_repair=False) as c:
        writer = c.nodes[0]
        c.roots.leases["vol"] = writer.node_id
        for other in c.ids[1:]:
            c.kill(other)  # 1 of the 2 acknowledgements a chunk needs
        src = tmp_path / "f"
        src.write_bytes(os.urandom(10 * CHUNK))
        with pytest.raises(PutFailed):
            await writer.put_path("vol", "f", src)
        assert "vol" not in c.roots.roots
