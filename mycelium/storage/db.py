"""The node's local durable state: one SQLite database (WAL, synchronous=FULL) per state dir.

Schema changes are numbered migrations tracked in `PRAGMA user_version`; a database written by a
newer build is refused rather than misread. Everything here is small and synchronous: each call is a
short transaction, fsynced on commit (synchronous=FULL), so a caller may act on it once it returns.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

# Append-only: never edit a migration that has shipped; add a new one.
MIGRATIONS: tuple[str, ...] = (
    # 1: metadata, the Primary chain, invites issued by this node
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
    CREATE TABLE primaries (
        height    INTEGER PRIMARY KEY,
        hash      BLOB NOT NULL UNIQUE,
        prev_hash BLOB NOT NULL,
        body      BLOB NOT NULL,     -- canonical msgpack of the Primary spore
        cert      BLOB NOT NULL      -- canonical msgpack of its quorum certificate
    );
    CREATE TABLE invites (
        id         BLOB PRIMARY KEY,
        network_id TEXT NOT NULL,
        expires_s  INTEGER NOT NULL,
        uses       INTEGER NOT NULL,
        created_s  INTEGER NOT NULL
    );
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)


class StorageError(Exception):
    """The state database is unusable; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class StoredPrimary:
    height: int
    hash: bytes
    prev_hash: bytes
    body: bytes
    cert: bytes


class StateDB:
    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self._conn = conn
        self.path = path

    @classmethod
    def open(cls, path: Path) -> StateDB:
        try:
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA busy_timeout=5000")
            db = cls(conn, path)
            db._migrate()
        except sqlite3.DatabaseError as exc:
            raise StorageError(
                f"state database {path} is unreadable ({exc}); restore it from a backup. If this node "
                "is not a validator you may instead move it aside to start fresh (it catches up from its "
                "peers); a validator must not, since its consensus lock is inside"
            ) from exc
        return db

    def _migrate(self) -> None:
        (current,) = self._conn.execute("PRAGMA user_version").fetchone()
        if current > SCHEMA_VERSION:
            raise StorageError(
                f"state database {self.path} has schema {current}, newer than this build's "
                f"{SCHEMA_VERSION}; upgrade mycelium (./install.sh) instead of downgrading"
            )
        for number in range(current, SCHEMA_VERSION):
            with self.transaction():
                for statement in _statements(MIGRATIONS[number]):
                    self._conn.execute(statement)
                self._conn.execute(f"PRAGMA user_version = {number + 1}")

    def transaction(self) -> _Transaction:
        return _Transaction(self._conn)

    def close(self) -> None:
        self._conn.close()

    # -- meta ------------------------------------------------------------------------------------
    def get_meta(self, key: str) -> bytes | None:
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else bytes(row[0])

    def set_meta(self, key: str, value: bytes) -> None:
        with self.transaction():
            self._conn.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    # -- the Primary chain -----------------------------------------------------------------------
    def append_primary(self, p: StoredPrimary) -> None:
        """Store the next Primary; it must link to the current head (or be height 0 on an empty chain)."""
        with self.transaction():
            head = self._head_row()
            if head is None:
                if p.height != 0:
                    raise StorageError(f"chain is empty; expected height 0, got {p.height}")
            elif p.height != head[0] + 1 or p.prev_hash != bytes(head[1]):
                raise StorageError(
                    f"Primary {p.height} does not extend the stored head {head[0]} (hash link mismatch)"
                )
            self._conn.execute(
                "INSERT INTO primaries (height, hash, prev_hash, body, cert) VALUES (?, ?, ?, ?, ?)",
                (p.height, p.hash, p.prev_hash, p.body, p.cert),
            )

    def _head_row(self) -> tuple[int, bytes] | None:
        return self._conn.execute("SELECT height, hash FROM primaries ORDER BY height DESC LIMIT 1").fetchone()

    def head_primary(self) -> StoredPrimary | None:
        row = self._conn.execute(
            "SELECT height, hash, prev_hash, body, cert FROM primaries ORDER BY height DESC LIMIT 1"
        ).fetchone()
        return None if row is None else StoredPrimary(row[0], bytes(row[1]), bytes(row[2]), bytes(row[3]), bytes(row[4]))

    def primary_at(self, height: int) -> StoredPrimary | None:
        row = self._conn.execute(
            "SELECT height, hash, prev_hash, body, cert FROM primaries WHERE height = ?", (height,)
        ).fetchone()
        return None if row is None else StoredPrimary(row[0], bytes(row[1]), bytes(row[2]), bytes(row[3]), bytes(row[4]))

    def prune_primaries(self, keep: int) -> int:
        """Drop all but the newest `keep` Primaries (each carries the full state: the head is a snapshot)."""
        with self.transaction():
            head = self._head_row()
            if head is None:
                return 0
            cur = self._conn.execute("DELETE FROM primaries WHERE height <= ?", (head[0] - keep,))
            return cur.rowcount

    def truncate_primaries(self, from_height: int) -> int:
        """Drop the stored Primaries at `from_height` and above (damaged links to be re-fetched)."""
        with self.transaction():
            return self._conn.execute("DELETE FROM primaries WHERE height >= ?", (from_height,)).rowcount

    def restart_chain_at(self, p: StoredPrimary) -> None:
        """Replace the stored chain by one certified Primary at any height (after a state sync)."""
        with self.transaction():
            self._conn.execute("DELETE FROM primaries")
            self._conn.execute(
                "INSERT INTO primaries (height, hash, prev_hash, body, cert) VALUES (?, ?, ?, ?, ?)",
                (p.height, p.hash, p.prev_hash, p.body, p.cert),
            )

    def reset_chain(self) -> None:
        """Forget the chain (the node left its network)."""
        with self.transaction():
            self._conn.execute("DELETE FROM primaries")

    # -- invites ---------------------------------------------------------------------------------
    def add_invite(self, invite_id: bytes, network_id: str, expires_s: int, uses: int, created_s: int) -> None:
        with self.transaction():
            self._conn.execute(
                "INSERT INTO invites (id, network_id, expires_s, uses, created_s) VALUES (?, ?, ?, ?, ?)",
                (invite_id, network_id, expires_s, uses, created_s),
            )

    def list_invites(self, network_id: str, limit: int = 200) -> list[tuple[bytes, int, int, int]]:
        """(id, expires_s, uses, created_s) of the newest `limit` invites this node issued."""
        return self._conn.execute(
            "SELECT id, expires_s, uses, created_s FROM invites WHERE network_id = ? ORDER BY created_s DESC LIMIT ?",
            (network_id, limit)).fetchall()

    def count_invites(self, network_id: str) -> int:
        (n,) = self._conn.execute("SELECT COUNT(*) FROM invites WHERE network_id = ?", (network_id,)).fetchone()
        return n


class _Transaction:
    """`with db.transaction():` — BEGIN IMMEDIATE … COMMIT (fsynced), ROLLBACK on error. Not reentrant."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def __enter__(self) -> None:
        self._conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self._conn.execute("COMMIT")
        else:
            self._conn.execute("ROLLBACK")


def _statements(script: str) -> list[str]:
    lines = [line for line in script.splitlines() if not line.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]
