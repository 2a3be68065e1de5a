"""The history checker: records every node's decided Primaries over a run and fails on any fork.

Two sources, both read-only:
- `poll()` asks each live daemon for its head (height, hash) over the control socket (the same data as
  `mycelium spores primary --json` / `status --json`); a background thread does it every interval.
- `record_chains()` reads every (height, hash) each node stored in its state.db, so heights decided
  while we were not looking are compared too.

A fork is two different hashes at one height, on one node over time or across nodes. A committed
height that a node later no longer holds (its head went backwards) is a lost commit.
"""

from __future__ import annotations

import sqlite3
import threading
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from mycelium.api import protocol
from mycelium.api.client import ClientError, ControlClient


@dataclass
class History:
    # height -> hash -> the nodes (labels) that held it
    seen: dict[int, dict[str, set[str]]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(set)))
    heads: dict[str, int] = field(default_factory=dict)  # label -> highest height seen
    regressions: list[str] = field(default_factory=list)
    samples: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, label: str, height: int, hash_hex: str, *, from_head: bool = True) -> None:
        with self._lock:
            self.samples += 1
            self.seen[height][hash_hex].add(label)
            if from_head:
                top = self.heads.get(label, -1)
                if height < top:
                    self.regressions.append(f"{label}: head went back from height {top} to {height}")
                self.heads[label] = max(top, height)

    def forks(self) -> list[str]:
        with self._lock:
            return [f"height {h}: " + "; ".join(f"{hx[:12]} held by {sorted(nodes)}" for hx, nodes in by_hash.items())
                    for h, by_hash in sorted(self.seen.items()) if len(by_hash) > 1]

    def assert_no_fork(self) -> None:
        forks = self.forks()
        assert not forks, "FORK: different Primaries certified at one height:\n" + "\n".join(forks)

    def assert_nothing_lost(self) -> None:
        assert not self.regressions, "committed Primaries lost:\n" + "\n".join(self.regressions)

    def max_height(self) -> int:
        with self._lock:
            return max(self.seen, default=-1)


def read_chain(db_path: Path) -> list[tuple[int, str]]:
    """Every (height, hash) a node stored, oldest first; [] if it has no database yet."""
    if not db_path.exists():
        return []
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=5)
    try:
        return [(h, bytes(x).hex()) for h, x in conn.execute("SELECT height, hash FROM primaries ORDER BY height")]
    except sqlite3.OperationalError:
        return []  # no schema yet (the daemon has not finished its first start)
    finally:
        conn.close()


class HistoryChecker:
    """Polls a set of nodes (label -> state dir) in a background thread; use as a context manager."""

    def __init__(self, nodes: dict[str, Path], network_id: str, interval_s: float = 0.5) -> None:
        self.nodes = dict(nodes)
        self.network_id = network_id  # heads of any other network (a joiner's personal one) are ignored
        self.interval_s = interval_s
        self.history = History()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def poll(self) -> None:
        for label, state_dir in list(self.nodes.items()):
            try:
                st = ControlClient(state_dir / "control.sock", timeout_s=2).get(protocol.STATUS)
            except ClientError:
                continue  # down, stopped or paused on purpose: nothing to record
            if st.get("primary_hash") and st.get("network_id") == self.network_id:
                self.history.record(label, st["epoch"], st["primary_hash"])

    def record_chains(self) -> None:
        """Only for nodes of our network (a node that left or never joined keeps another chain)."""
        for label, state_dir in self.nodes.items():
            try:
                st = ControlClient(state_dir / "control.sock", timeout_s=2).get(protocol.STATUS)
                if st.get("network_id") != self.network_id:
                    continue
            except ClientError:
                pass  # down: its database is still the chain it decided
            for height, hash_hex in read_chain(state_dir / "state.db"):
                self.history.record(label, height, hash_hex, from_head=False)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.poll()

    def __enter__(self) -> HistoryChecker:
        self._thread = threading.Thread(target=self._loop, name="history-checker", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def check(self) -> None:
        """Read every node's stored chain too, then fail on any fork or lost commit."""
        self.poll()
        self.record_chains()
        self.history.assert_no_fork()
        self.history.assert_nothing_lost()


def wait_for(predicate, *, timeout: float, interval: float = 0.25, what: str):  # type: ignore[no-untyped-def]
    """tests.integration.daemons.wait_until with the testnet's coarser default polling interval."""
    from tests.integration.daemons import wait_until

    return wait_until(predicate, timeout=timeout, interval=interval, what=what)
