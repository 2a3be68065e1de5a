"""The share store on one device: one file per share, fsynced before a put is acknowledged.

Layout: `<root>/<first two hex digits>/<share id hex>`; a file is `MAGIC ‖ chunk id ‖ index ‖ data`, so
the store verifies every share against its own name (`share_id(chunk, index, data)`) on every read
and in the scrub, with no metadata. A share that fails is removed (and counted): the repair loop sees
it missing from this device's inventory and rebuilds it.

Writes go to a temporary file, are fsynced, renamed into place, and the directory is fsynced — after
`put` returns, a power cut does not lose the share. Blocking calls: the trio shell runs them in a
worker thread.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from mycelium.durable import fsync_dir
from mycelium.storage.erasure import share_id

MAGIC = b"MYS1"
_HEADER = len(MAGIC) + 32 + 1


class StoreFull(OSError):
    """The device's storage quota is used up."""


class ShareRefused(ValueError):
    """A share whose bytes do not match the id it was sent under."""


@dataclass(slots=True)
class StoredShare:
    chunk: bytes
    index: int
    data: bytes


class ShareStore:
    def __init__(self, root: Path, *, quota_bytes: int = 1 << 40) -> None:
        self.root = Path(root)
        self.quota_bytes = quota_bytes  # refuse puts beyond this many bytes of shares
        self.root.mkdir(parents=True, exist_ok=True)
        self._sizes: dict[bytes, int] = {}
        self.used_bytes = 0
        self.corrupt_found = 0  # shares removed because they no longer matched their id
        for sub in self.root.iterdir():
            if not sub.is_dir() or len(sub.name) != 2:
                continue
            for f in sub.iterdir():
                if f.name.endswith(".tmp"):
                    f.unlink(missing_ok=True)  # an interrupted write: never acknowledged
                    continue
                try:
                    sid = bytes.fromhex(f.name)
                except ValueError:
                    continue
                size = f.stat().st_size
                self._sizes[sid] = size
                self.used_bytes += size

    def ids(self) -> set[bytes]:
        return set(self._sizes)

    def __contains__(self, sid: bytes) -> bool:
        return sid in self._sizes

    def path(self, sid: bytes) -> Path:
        h = sid.hex()
        return self.root / h[:2] / h

    def put(self, sid: bytes, chunk: bytes, index: int, data: bytes) -> None:
        """Store and fsync one share (idempotent). Raises ShareRefused or StoreFull."""
        if len(chunk) != 32 or not 0 <= index < 256 or share_id(chunk, index, data) != sid:
            raise ShareRefused(f"share {sid.hex()[:12]} does not match its chunk, index and bytes")
        if sid in self._sizes:
            return
        size = _HEADER + len(data)
        if self.used_bytes + size > self.quota_bytes:
            raise StoreFull(f"share store {self.root} is at its quota of {self.quota_bytes} bytes")
        final = self.path(sid)
        final.parent.mkdir(exist_ok=True)
        tmp = final.with_name(final.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            view = memoryview(MAGIC + chunk + bytes([index]) + data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, final)
        fsync_dir(final.parent)
        self._sizes[sid] = size
        self.used_bytes += size

    def get(self, sid: bytes) -> StoredShare | None:
        """The share if present and intact; a corrupt one is removed and None returned."""
        if sid not in self._sizes:
            return None
        try:
            raw = self.path(sid).read_bytes()
        except FileNotFoundError:
            self._forget(sid)
            return None
        if len(raw) < _HEADER or raw[:4] != MAGIC:
            self._drop_corrupt(sid)
            return None
        chunk, index, data = raw[4:36], raw[36], raw[_HEADER:]
        if share_id(chunk, index, data) != sid:
            self._drop_corrupt(sid)
            return None
        return StoredShare(chunk, index, data)

    def scrub(self, sid: bytes) -> bool:
        """Re-read and hash one share; False (and removed) if it rotted."""
        return self.get(sid) is not None

    def delete(self, sid: bytes) -> None:
        self.path(sid).unlink(missing_ok=True)
        self._forget(sid)

    def _drop_corrupt(self, sid: bytes) -> None:
        self.corrupt_found += 1
        self.delete(sid)

    def _forget(self, sid: bytes) -> None:
        size = self._sizes.pop(sid, 0)
        self.used_bytes -= size
