from __future__ import annotations

import pytest

from mycelium.identity import NodeKey
from mycelium.storage import chunks
from mycelium.storage.catalog import CatalogError, VolumeIndex, VolumeRoot, check_path
from mycelium.storage.erasure import Scheme
from mycelium.storage.sealing import VolumeKey

WRITER = NodeKey.from_seed(b"w" * 32)
NET = "test-network"
KEY = VolumeKey.derive(b"s" * 32, "net", "vol")


def _refs(data: bytes):
    return tuple(chunks.prepare(KEY, piece, Scheme(1, 2))[0] for piece in chunks.split(data, 10))


def test_index_round_trip_and_signature():
    idx = VolumeIndex("vol", 0, "").with_file("a/b.txt", 25, _refs(b"x" * 25), 1).signed_by(WRITER, NET)
    back = VolumeIndex.decode(idx.encode(), network_id=NET, expect_volume="vol", expect_writer=WRITER.node_id, expect_seq=1)
    assert back.files == idx.files and back.seq == 1
    assert len(back.files["a/b.txt"].chunks) == 3
    other = NodeKey.from_seed(b"o" * 32)
    with pytest.raises(CatalogError, match="root names"):
        VolumeIndex.decode(idx.encode(), network_id=NET, expect_volume="vol", expect_writer=other.node_id, expect_seq=1)
    forged = VolumeIndex(idx.volume, idx.seq, WRITER.node_id, {}, idx.signature)  # files dropped
    with pytest.raises(CatalogError, match="bad signature"):
        VolumeIndex.decode(forged.encode(), network_id=NET, expect_volume="vol", expect_writer=WRITER.node_id, expect_seq=1)


def test_versions_tombstones_and_the_file_bound():
    idx = VolumeIndex("vol", 0, "")
    idx = idx.with_file("f", 3, _refs(b"abc"), 1).with_file("f", 4, _refs(b"abcd"), 2)
    assert idx.files["f"].version == 2 and idx.seq == 2
    idx = idx.without_file("f", 3)
    assert idx.live() == {} and idx.files["f"].deleted and idx.files["f"].version == 3
    with pytest.raises(CatalogError, match="no file"):
        idx.without_file("f", 4)
    small = VolumeIndex("vol", 0, "").with_file("a", 0, _refs(b""), 1, max_files=2).with_file("b", 0, _refs(b""), 1, max_files=2)
    with pytest.raises(CatalogError, match="its limit"):
        small.with_file("c", 0, _refs(b""), 1, max_files=2)
    small.with_file("a", 1, _refs(b"z"), 2, max_files=2)  # rewriting an existing path is fine at the bound


@pytest.mark.parametrize("bad", ["", "/", "a//b", "../x", "a/./b", "a\0b"])
def test_bad_paths_are_refused(bad):
    with pytest.raises(CatalogError):
        check_path(bad)


def test_root_round_trip():
    root = VolumeRoot("vol", 4, WRITER.node_id, _refs(b"index bytes"))
    assert VolumeRoot.from_wire(root.to_wire()) == root
    with pytest.raises(CatalogError):
        VolumeRoot.from_wire({"volume": "v"})
