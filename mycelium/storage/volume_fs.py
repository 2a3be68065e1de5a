"""A volume as a directory: a FUSE file system (pyfuse3, trio-native) over a `StorageNode`.

Consistency model — close-to-open per file, one writer node per volume:
- `open()` fetches the file's committed version whole into a private staging file; reads and writes
  go to that copy only.
- `close()` (FUSE flush) and `fsync()` of a modified file upload it whole and commit a new volume
  root; they return only after the commit, so the next `open()` sees the new bytes (on another node,
  once its Primary has the deciding height). A failed
  upload makes `close()`/`fsync()` fail with EIO and nothing changes in the volume.
- Only the node that holds the volume's writer lease in the Primary mounts it writable; every other
  mount is read-only (EROFS on any change). Two writers can therefore never interleave.
- Directories exist while a file lives under them (mkdir of an empty directory lasts for this mount).
- Not POSIX: no hard links, no permissions beyond the mount's owner, no byte-range locks across nodes,
  and a program reading a file another node is writing sees the old version until it reopens.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pyfuse3
import trio

from mycelium.storage.catalog import CatalogError
from mycelium.storage.node import MissingRanges, NoSuchFile, PutFailed, StorageNode
from mycelium.storage.roots import RootConflict

ENTRY_TIMEOUT_S = 1.0  # kernel caches names/attributes this long; lower = fresher views, more calls


@dataclass
class Handle:
    path: str
    staging: Path
    dirty: bool = False


class VolumeFS(pyfuse3.Operations):
    supports_dot_lookup = False
    enable_writeback_cache = False

    def __init__(self, node: StorageNode, volume: str, *, writable: bool, staging_dir: Path) -> None:
        super().__init__()
        self.node = node
        self.volume = volume
        self.writable = writable
        self.staging_dir = Path(staging_dir)
        self._inodes: dict[str, int] = {"": pyfuse3.ROOT_INODE}
        self._paths: dict[int, str] = {pyfuse3.ROOT_INODE: ""}
        self._handles: dict[int, Handle] = {}
        self._next_fh = 1
        self._mkdirs: set[str] = set()
        self.uploads = 0
        self.upload_errors = 0

    # -- names ------------------------------------------------------------------------------------

    def _inode(self, path: str) -> int:
        ino = self._inodes.get(path)
        if ino is None:
            ino = len(self._paths) + pyfuse3.ROOT_INODE
            self._inodes[path], self._paths[ino] = ino, path
        return ino

    def _path(self, inode: int) -> str:
        try:
            return self._paths[inode]
        except KeyError:
            raise pyfuse3.FUSEError(errno.ENOENT) from None

    @staticmethod
    def _join(parent: str, name: bytes) -> str:
        n = os.fsdecode(name)
        return f"{parent}/{n}" if parent else n

    async def _files(self) -> dict:
        try:
            return {e.path: e for e in await self.node.list_files(self.volume)}
        except MissingRanges as exc:
            raise pyfuse3.FUSEError(errno.EIO) from exc

    def _dirs(self, files) -> set[str]:
        dirs = {""} | set(self._mkdirs)
        for p in files:
            parts = p.split("/")
            dirs.update("/".join(parts[:i]) for i in range(1, len(parts)))
        return dirs

    def _staged_size(self, path: str) -> int | None:
        for h in self._handles.values():
            if h.path == path:
                return h.staging.stat().st_size
        return None

    async def _attr(self, path: str) -> pyfuse3.EntryAttributes:
        files = await self._files()
        a = pyfuse3.EntryAttributes()
        a.st_ino = self._inode(path)
        a.entry_timeout = a.attr_timeout = ENTRY_TIMEOUT_S
        a.st_uid, a.st_gid = os.getuid(), os.getgid()
        a.st_blksize = 1 << 17
        staged = self._staged_size(path)
        if path in files or staged is not None:
            entry = files.get(path)
            a.st_mode = stat.S_IFREG | (0o644 if self.writable else 0o444)
            a.st_nlink = 1
            a.st_size = staged if staged is not None else entry.size
            mtime = (entry.mtime_ms * 1_000_000) if entry else time.time_ns()
        elif path in self._dirs(files):
            a.st_mode = stat.S_IFDIR | (0o755 if self.writable else 0o555)
            a.st_nlink = 2
            a.st_size = 0
            mtime = time.time_ns()
        else:
            raise pyfuse3.FUSEError(errno.ENOENT)
        a.st_blocks = -(-a.st_size // 512)
        a.st_atime_ns = a.st_mtime_ns = a.st_ctime_ns = mtime
        return a

    def _need_write(self) -> None:
        if not self.writable:
            raise pyfuse3.FUSEError(errno.EROFS)

    # -- lookups ----------------------------------------------------------------------------------

    async def lookup(self, parent_inode, name, ctx=None):
        return await self._attr(self._join(self._path(parent_inode), name))

    async def getattr(self, inode, ctx=None):
        return await self._attr(self._path(inode))

    async def setattr(self, inode, attr, fields, fh, ctx):
        path = self._path(inode)
        if fields.update_size:
            self._need_write()
            handle = self._handles.get(fh) if fh is not None else None
            if handle is None:  # truncate(2) by path: open, cut, commit
                fh_new = await self._open_path(path, truncate=False)
                handle = self._handles[fh_new]
                await trio.to_thread.run_sync(os.truncate, handle.staging, attr.st_size)
                handle.dirty = True
                await self._upload(handle)
                await self._drop(fh_new)
            else:
                await trio.to_thread.run_sync(os.truncate, handle.staging, attr.st_size)
                handle.dirty = True
        return await self._attr(path)

    async def opendir(self, inode, ctx):
        self._path(inode)
        return inode

    async def readdir(self, fh, start_id, token):
        base = self._path(fh)
        files = await self._files()
        names: dict[str, str] = {}
        prefix = f"{base}/" if base else ""
        for p in [*files, *self._dirs(files)]:
            if p and p.startswith(prefix):
                rest = p[len(prefix) :]
                if rest and "/" not in rest:
                    names[rest] = p
        for i, name in enumerate(sorted(names)):
            if i < start_id:
                continue
            if not pyfuse3.readdir_reply(token, os.fsencode(name), await self._attr(names[name]), i + 1):
                return

    async def mkdir(self, parent_inode, name, mode, ctx):
        self._need_write()
        path = self._join(self._path(parent_inode), name)
        self._mkdirs.add(path)
        return await self._attr(path)

    async def rmdir(self, parent_inode, name, ctx):
        self._need_write()
        path = self._join(self._path(parent_inode), name)
        if any(p.startswith(path + "/") for p in await self._files()):
            raise pyfuse3.FUSEError(errno.ENOTEMPTY)
        self._mkdirs.discard(path)

    async def statfs(self, ctx):
        s = pyfuse3.StatvfsData()
        s.f_bsize = s.f_frsize = 1 << 17
        s.f_blocks = s.f_bfree = s.f_bavail = 1 << 24
        s.f_files = s.f_ffree = s.f_favail = 1 << 16
        s.f_namemax = 255
        return s

    # -- files ------------------------------------------------------------------------------------

    async def _open_path(self, path: str, *, truncate: bool) -> int:
        fd, name = tempfile.mkstemp(dir=self.staging_dir, prefix="open-")
        os.close(fd)
        staging = Path(name)
        if not truncate:
            try:
                data = await self.node.get_file(self.volume, path)
            except NoSuchFile:
                data = b""
            except MissingRanges as exc:
                staging.unlink()
                raise pyfuse3.FUSEError(errno.EIO) from exc
            await trio.to_thread.run_sync(staging.write_bytes, data)
        fh = self._next_fh
        self._next_fh += 1
        self._handles[fh] = Handle(path, staging, dirty=truncate)
        return fh

    async def open(self, inode, flags, ctx):
        path = self._path(inode)
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND):
            self._need_write()
        fh = await self._open_path(path, truncate=bool(flags & os.O_TRUNC))
        return pyfuse3.FileInfo(fh=fh)

    async def create(self, parent_inode, name, mode, flags, ctx):
        self._need_write()
        path = self._join(self._path(parent_inode), name)
        try:
            fh = await self._open_path(path, truncate=True)
        except OSError as exc:
            raise pyfuse3.FUSEError(errno.EIO) from exc
        return pyfuse3.FileInfo(fh=fh), await self._attr(path)

    async def read(self, fh, off, size):
        h = self._handles[fh]
        return await trio.to_thread.run_sync(_pread, h.staging, off, size)

    async def write(self, fh, off, buf):
        self._need_write()
        h = self._handles[fh]
        await trio.to_thread.run_sync(_pwrite, h.staging, off, bytes(buf))
        h.dirty = True
        return len(buf)

    async def _upload(self, h: Handle) -> None:
        if not h.dirty:
            return
        try:
            await self.node.put_path(self.volume, h.path, h.staging)  # streamed from the staging copy
        except (PutFailed, RootConflict, CatalogError, MissingRanges) as exc:
            self.upload_errors += 1
            raise pyfuse3.FUSEError(errno.EIO) from exc
        self.uploads += 1
        h.dirty = False

    async def flush(self, fh):
        await self._upload(self._handles[fh])

    async def fsync(self, fh, datasync):
        await self._upload(self._handles[fh])

    async def fsyncdir(self, fh, datasync):
        return  # directory entries change only with a committed root: nothing to flush

    async def release(self, fh):
        h = self._handles.get(fh)
        if h is None:
            return
        try:
            await self._upload(h)
        finally:
            await self._drop(fh)

    async def releasedir(self, fh):
        return

    async def _drop(self, fh: int) -> None:
        h = self._handles.pop(fh, None)
        if h is not None:
            h.staging.unlink(missing_ok=True)

    async def unlink(self, parent_inode, name, ctx):
        self._need_write()
        path = self._join(self._path(parent_inode), name)
        try:
            await self.node.remove_file(self.volume, path)
        except CatalogError:
            if self._staged_size(path) is None:
                raise pyfuse3.FUSEError(errno.ENOENT) from None
        except (PutFailed, RootConflict, MissingRanges) as exc:
            raise pyfuse3.FUSEError(errno.EIO) from exc
        for h in self._handles.values():
            if h.path == path:
                h.dirty = False  # an unlinked open file is not written back

    async def rename(self, parent_inode_old, name_old, parent_inode_new, name_new, flags, ctx):
        self._need_write()
        old = self._join(self._path(parent_inode_old), name_old)
        new = self._join(self._path(parent_inode_new), name_new)
        if flags:
            raise pyfuse3.FUSEError(errno.EINVAL)
        try:
            data = await self.node.get_file(self.volume, old)
            await self.node.put_file(self.volume, new, data)
            await self.node.remove_file(self.volume, old)
        except NoSuchFile:
            raise pyfuse3.FUSEError(errno.ENOENT) from None
        except (PutFailed, RootConflict, CatalogError, MissingRanges) as exc:
            raise pyfuse3.FUSEError(errno.EIO) from exc


def _pread(path: Path, off: int, size: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(off)
        return f.read(size)


def _pwrite(path: Path, off: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(off)
        f.write(data)
