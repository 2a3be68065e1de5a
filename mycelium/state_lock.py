"""Who holds a state dir's daemon lock, read without importing the daemon.

The CLI asks this before `up --detach` spawns the daemon and while `down` waits; importing
`mycelium.daemon` for it cost the CLI ~0.7 s (trio, the ledger, the API server, …) before the daemon
process even started. The daemon takes the lock with `mycelium.daemon.acquire_state_lock`.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


def read_lock_pid(path: Path) -> int | None:
    """The pid of the daemon holding the lock at `path`, or None when nobody holds it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            try:
                return int(os.pread(fd, 32, 0).decode().strip() or 0) or None
            except ValueError:
                return None
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
