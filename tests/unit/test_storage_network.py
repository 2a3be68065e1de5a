"""The distributed store over the in-memory data channel: puts, reads, losses, repair, scrub."""

from __future__ import annotations

import os

import pytest
import trio

from mycelium.storage.node import MissingRanges, NoSuchFile, PutFailed, StorageConfig
from mycelium.storage.shares import ShareStore, StoreFull
from mycelium.storage.erasure import share_id
from mycelium.testing.storage import storage_cluster

MiB = 1 << 20
# request_timeout_s is a hang detector: a killed holder fails at once in this cluster, so only a slow
# live one waits on it (2 s named a readable chunk "missing" in a CI run on a busy box)
CFG = StorageConfig(request_timeout_s=30.0, chunk_bytes=256 * 1024)


def _data(n: int) -> bytes:
    return os.urandom(n)


async def test_replicated_volume_survives_two_lost_holders_and_repairs(tmp_path):
    data = _data(3 * MiB + 123)
    async with storage_cluster(tmp_path, 5, cfg=CFG) as c:
        entry = await c.nodes[0].put_file("vol", "big.bin", data)
        assert entry.chunks[0].k == 1 and entry.chunks[0].n == 3  # replication on 5 devices
        # every chunk acknowledged on >= k+1 = 2 devices, in practice all 3
        for ref in entry.chunks:
            assert all(len(c.holders(s)) == 1 for s in ref.shares)
        victims = c.holders(entry.chunks[0].shares[0]) + c.holders(entry.chunks[0].shares[1])
        for v in victims:
            c.kill(v)
        reader = c.alive()[0]
        assert await reader.get_file("vol", "big.bin") == data
        await c.wait_repaired("vol")
        status = c.any_repairer().volume_status("vol")
        assert status["shares_missing"] == 0 and status["repairs_done"] >= 1
        assert await c.alive()[-1].get_file("vol", "big.bin") == data


async def test_erasure_coded_volume_survives_n_minus_k_losses_and_repairs(tmp_path):
    data = _data(2 * MiB)
    async with storage_cluster(tmp_path, 8, cfg=CFG) as c:
        entry = await c.nodes[3].put_file("vol", "f", data)
        assert (entry.chunks[0].k, entry.chunks[0].n) == (3, 5)
        ref = entry.chunks[0]
        for v in c.holders(ref.shares[0]) + c.holders(ref.shares[4]):
            c.kill(v)
        assert await c.alive()[0].get_file("vol", "f") == data
        await c.wait_repaired("vol")
        for r in entry.chunks:
            holders = [h for s in r.shares for h in c.holders(s)]
            assert len(holders) == len(set(holders)) == 5  # at most one share per device


async def test_scrub_finds_a_flipped_bit_and_repair_replaces_the_share(tmp_path):
    data = _data(600_000)
    async with storage_cluster(tmp_path, 5, cfg=CFG) as c:
        entry = await c.nodes[0].put_file("vol", "f", data)
        sid = entry.chunks[1].shares[0]
        (holder,) = c.holders(sid)
        path = c.node(holder).store.path(sid)
        raw = bytearray(path.read_bytes())
        raw[len(raw) // 2] ^= 0x10
        path.write_bytes(bytes(raw))
        assert await c.repairer(holder).scrub_pass() == 1  # dropped (repair may already be rebuilding it)
        assert c.node(holder).store.corrupt_found == 1
        await c.wait_repaired("vol")
        assert len(c.holders(sid)) == 1
        assert c.node(c.holders(sid)[0]).store.get(sid) is not None


async def test_missing_ranges_name_exactly_the_lost_chunk(tmp_path):
    data = _data(1 * MiB)
    async with storage_cluster(tmp_path, 5, cfg=CFG, run_repair=False) as c:
        writer = c.nodes[0]
        await writer.put_file("vol", "f", data)
        refs = (await writer.entry("vol", "f")).chunks
        lost = refs[1]
        killed = {h for s in lost.shares for h in c.holders(s)}
        # chunks all of whose holders die with chunk 1's (same 3 of 5 devices) are lost too
        expected = [
            (i * 256 * 1024, r.size) for i, r in enumerate(refs) if {h for s in r.shares for h in c.holders(s)} <= killed
        ]
        for h in killed:
            c.kill(h)
        reader = c.alive()[0]
        with trio.fail_after(20):
            got, missing = await reader.read_bytes("vol", refs)
        assert (256 * 1024, 256 * 1024) in missing and missing == expected
        for i in range(len(refs)):
            if (i * 256 * 1024, refs[i].size) not in missing:
                assert got[i * 256 * 1024 : (i + 1) * 256 * 1024] == data[i * 256 * 1024 : (i + 1) * 256 * 1024]
        with trio.fail_after(20), pytest.raises(MissingRanges, match="unreadable"):
            await reader.get_file("vol", "f")  # names the chunk's range (or the index's, if it was there too)


async def test_a_put_without_enough_devices_fails_and_is_not_visible(tmp_path):
    async with storage_cluster(tmp_path, 5, cfg=CFG, run_repair=False) as c:
        await c.nodes[0].put_file("vol", "kept", b"kept")
        for v in c.ids[1:]:
            c.kill(v)  # the Primary still lists them: the put must not pretend
        with pytest.raises(PutFailed, match="acknowledged"):
            await c.nodes[0].put_file("vol", "new", _data(300_000))
        assert [e.path for e in await c.nodes[0].list_files("vol")] == ["kept"]


async def test_a_lying_holder_is_skipped(tmp_path):
    data = _data(200_000)
    async with storage_cluster(tmp_path, 5, cfg=CFG, run_repair=False) as c:
        entry = await c.nodes[0].put_file("vol", "f", data)
        ref = entry.chunks[0]
        (liar,) = c.holders(ref.shares[0])
        store = c.node(liar).store
        real_get = store.get

        def lie(sid):
            got = real_get(sid)
            if got is not None:
                got.data = b"\xff" * len(got.data)  # valid framing, wrong bytes
            return got

        store.get = lie
        reader = next(n for n in c.alive() if n.node_id != liar)
        assert await reader.get_file("vol", "f") == data


async def test_remove_and_versions(tmp_path):
    async with storage_cluster(tmp_path, 3, cfg=CFG, run_repair=False) as c:
        n = c.nodes[1]
        await n.put_file("v", "a", b"one")
        e = await n.put_file("v", "a", b"two!")
        assert e.version == 2 and await c.nodes[2].get_file("v", "a") == b"two!"
        await n.remove_file("v", "a")
        with pytest.raises(NoSuchFile, match="storage ls"):
            await c.nodes[0].get_file("v", "a")


def test_share_store_survives_restart_and_refuses_beyond_quota(tmp_path):
    chunk = b"c" * 32
    store = ShareStore(tmp_path, quota_bytes=200)
    data = b"d" * 100
    sid = share_id(chunk, 0, data)
    store.put(sid, chunk, 0, data)
    (store.path(sid).parent / "junk.tmp").write_bytes(b"half")
    again = ShareStore(tmp_path, quota_bytes=200)
    assert again.ids() == {sid} and again.get(sid).data == data
    assert not (store.path(sid).parent / "junk.tmp").exists()
    other = b"e" * 100
    with pytest.raises(StoreFull):
        again.put(share_id(chunk, 1, other), chunk, 1, other)
