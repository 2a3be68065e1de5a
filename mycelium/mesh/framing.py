"""Length-prefixed frames on a libp2p stream: 4-byte big-endian length, then the bytes.

Each request/response uses its own stream and writes sequentially, so frames of several MB are safe
(py-libp2p 0.8.1 corrupts a yamux stream only when writes > ~64 KiB on the *same* stream overlap).
"""

from __future__ import annotations

import mycelium.mesh.libp2p_setup  # noqa: F401,I001 - before libp2p: fixes its logging

from typing import Protocol

from libp2p.exceptions import BaseLibp2pError

HEADER_SIZE = 4
WRITE_CHUNK = 64 * 1024  # bytes per stream.write


class Stream(Protocol):
    async def read(self, n: int | None = None) -> bytes: ...

    async def write(self, data: bytes) -> None: ...


class FrameError(Exception):
    """The stream ended, broke, or carried a frame we refuse. `kind` says which:
    "closed" (clean end before a frame), "truncated", "too_large", "broken" (reset/transport error)."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind

    @property
    def is_peer_fault(self) -> bool:
        return self.kind in ("truncated", "too_large")


async def write_frame(stream: Stream, data: bytes, *, max_size: int) -> None:
    if len(data) > max_size:
        raise ValueError(f"frame of {len(data)} bytes exceeds our own limit of {max_size}")
    try:
        await stream.write(len(data).to_bytes(HEADER_SIZE, "big"))
        view = memoryview(data)
        for start in range(0, len(data), WRITE_CHUNK):
            await stream.write(bytes(view[start : start + WRITE_CHUNK]))
    except BaseLibp2pError as exc:
        raise FrameError("broken", f"write failed: {type(exc).__name__}: {exc}") from exc


async def read_frame(stream: Stream, *, max_size: int) -> bytes:
    header = await _read_exactly(stream, HEADER_SIZE, at_start=True)
    size = int.from_bytes(header, "big")
    if size > max_size:
        raise FrameError("too_large", f"peer announced a {size}-byte frame; the limit is {max_size}")
    return await _read_exactly(stream, size, at_start=False)


async def _read_exactly(stream: Stream, n: int, *, at_start: bool) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        try:
            chunk = await stream.read(min(n - len(buf), WRITE_CHUNK))
        except EOFError as exc:  # StreamEOF / MuxedStreamEOF are EOFErrors
            if at_start and not buf:
                raise FrameError("closed", "stream ended before a frame") from exc
            raise FrameError("truncated", f"stream ended after {len(buf)} of {n} bytes") from exc
        except BaseLibp2pError as exc:
            raise FrameError("broken", f"read failed: {type(exc).__name__}: {exc}") from exc
        if not chunk:
            if at_start and not buf:
                raise FrameError("closed", "stream ended before a frame")
            raise FrameError("truncated", f"stream ended after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)
