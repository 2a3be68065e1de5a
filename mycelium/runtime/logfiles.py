"""Instance output on disk: one log file per instance with size-based rotation, and a line reader
that can follow it across rotations (`tail -F`).

    output.log      newest
    output.log.1    the previous file … output.log.<keep> the oldest kept
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import trio


class RotatingLog:
    """Append-only byte log that rotates once it would exceed `max_bytes`."""

    def __init__(self, path: Path, *, max_bytes: int, keep: int):
        self.path = path
        self.max_bytes = max_bytes  # rotate before a write would pass this size
        self.keep = keep  # rotated files kept besides the current one
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(path, "ab")  # noqa: SIM115 - closed in close()

    def write(self, data: bytes) -> None:
        if self._file.tell() > 0 and self._file.tell() + len(data) > self.max_bytes:
            self.rotate()
        self._file.write(data)
        self._file.flush()

    def rotate(self) -> None:
        self._file.close()
        for n in range(self.keep, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{n}")
            newer = self.path.with_name(f"{self.path.name}.{n - 1}") if n > 1 else self.path
            if newer.exists():
                if n == self.keep and older.exists():
                    older.unlink()
                newer.replace(older)
        if self.keep == 0:
            self.path.unlink(missing_ok=True)
        self._file = open(self.path, "ab")  # noqa: SIM115

    def close(self) -> None:
        self._file.close()


def rotated_files(path: Path, keep: int) -> list[Path]:
    """The rotated files that exist, oldest first (not including `path` itself)."""
    names = [path.with_name(f"{path.name}.{n}") for n in range(keep, 0, -1)]
    return [p for p in names if p.exists()]


async def read_lines(path: Path, *, keep: int, follow: bool, finished: Callable[[], bool],
                     poll_s: float) -> AsyncIterator[bytes]:
    """Yield lines (without the newline) of the rotated files then the current one; with `follow`,
    keep polling every `poll_s` until `finished()` is true and everything written has been read."""
    for old in rotated_files(path, keep):
        for line in old.read_bytes().splitlines():
            yield line
    buffer = b""
    handle = None
    try:
        while True:
            done = finished() or not follow
            if handle is None and path.exists():
                handle = open(path, "rb")  # noqa: SIM115 - closed in finally
            if handle is not None:
                buffer += handle.read()
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    yield line
                if follow and _rotated_away(handle, path):
                    handle.close()  # everything it held was just read; the new file starts empty
                    handle = None
                    continue
            if done:
                break
            await trio.sleep(poll_s)
        if buffer:
            yield buffer
    finally:
        if handle is not None:
            handle.close()


def _rotated_away(handle, path: Path) -> bool:
    try:
        return os.stat(path).st_ino != os.fstat(handle.fileno()).st_ino
    except FileNotFoundError:
        return False
