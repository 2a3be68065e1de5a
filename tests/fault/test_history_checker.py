"""The history checker itself must catch what it is there to catch: a fork, and a lost commit."""

from __future__ import annotations

import sqlite3

import pytest

from tests.testnet.history import History, read_chain


def test_one_chain_seen_by_many_nodes_is_no_fork():
    h = History()
    for node in ("a", "b", "c"):
        for height in range(5):
            h.record(node, height, f"hash{height}")
    h.assert_no_fork()
    h.assert_nothing_lost()
    assert h.max_height() == 4


def test_two_hashes_at_one_height_is_a_fork_naming_the_nodes():
    h = History()
    h.record("a", 7, "aaaa")
    h.record("b", 7, "bbbb")
    with pytest.raises(AssertionError, match=r"(?s)FORK.*height 7.*\['a'\].*\['b'\]"):
        h.assert_no_fork()


def test_a_head_that_goes_back_is_a_lost_commit_but_stored_rows_are_not_heads():
    h = History()
    h.record("a", 9, "x9")
    h.record("a", 3, "x3", from_head=False)  # reading its stored chain: fine
    h.assert_nothing_lost()
    h.record("a", 8, "x8")
    with pytest.raises(AssertionError, match="from height 9 to 8"):
        h.assert_nothing_lost()


def test_read_chain_reads_heights_and_hashes_in_order(tmp_path):
    db = tmp_path / "state.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE primaries (height INTEGER PRIMARY KEY, hash BLOB NOT NULL UNIQUE, "
                 "prev_hash BLOB NOT NULL, body BLOB NOT NULL, cert BLOB NOT NULL)")
    conn.executemany("INSERT INTO primaries VALUES (?, ?, x'', x'', x'')", [(2, b"\x02"), (1, b"\x01")])
    conn.commit()
    conn.close()
    assert read_chain(db) == [(1, "01"), (2, "02")]
    assert read_chain(tmp_path / "missing.db") == []
