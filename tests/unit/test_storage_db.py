import sqlite3

import pytest

from mycelium.storage.db import SCHEMA_VERSION, StateDB, StorageError, StoredPrimary


def _p(h, prev=b"\0" * 32):
    return StoredPrimary(h, bytes([h]) * 32, prev, b"body%d" % h, b"cert")


def test_chain_appends_only_linked_primaries(tmp_path):
    db = StateDB.open(tmp_path / "s.db")
    with pytest.raises(StorageError, match="expected height 0"):
        db.append_primary(_p(1))
    db.append_primary(_p(0))
    db.append_primary(_p(1, prev=bytes([0]) * 32))
    with pytest.raises(StorageError, match="does not extend"):
        db.append_primary(_p(2, prev=b"x" * 32))
    assert db.head_primary().height == 1
    db.close()
    reopened = StateDB.open(tmp_path / "s.db")
    assert reopened.head_primary() == _p(1, prev=bytes([0]) * 32)
    assert reopened.primary_at(0) == _p(0)


def test_prune_keeps_the_newest(tmp_path):
    db = StateDB.open(tmp_path / "s.db")
    prev = b"\0" * 32
    for h in range(10):
        p = _p(h, prev)
        db.append_primary(p)
        prev = p.hash
    assert db.prune_primaries(keep=3) == 7
    assert db.primary_at(6) is None and db.primary_at(7) is not None


def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "s.db"
    StateDB.open(path).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StorageError, match="newer than this build"):
        StateDB.open(path)


def test_garbage_file_is_refused_with_advice(tmp_path):
    path = tmp_path / "s.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StorageError, match="move it aside"):
        StateDB.open(path)


def test_failed_transaction_rolls_back(tmp_path):
    db = StateDB.open(tmp_path / "s.db")
    db.set_meta("a", b"1")
    with pytest.raises(RuntimeError):
        with db.transaction():
            db._conn.execute("UPDATE meta SET value = ? WHERE key = ?", (b"2", "a"))
            raise RuntimeError("boom")
    assert db.get_meta("a") == b"1"
