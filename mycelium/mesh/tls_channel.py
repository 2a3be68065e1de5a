"""One open data channel over k + k TLS connections (implements `mycelium.mesh.channel.DataChannel`).

Threads and tasks: each connection we write has a long-lived writer thread that takes chunks from
one shared FIFO (`queue.SimpleQueue`) and writes them with blocking `ssl` calls; each connection
we read has a long-lived reader thread that reads chunks into its own bounded hand-off deque. One
trio task moves chunks from the hand-offs through the `Reassembler` into a bounded queue of whole
messages that `receive` drains. Threads never wait for trio: they wake it with `run_sync_soon`, so
a loaded machine's slow thread/trio hand-overs do not stall the TCP pipeline. Each connection is
used by exactly one thread after its handshake, so no OpenSSL object is shared between threads.

In a --pq network the channel has a `channel_pq.Sealing`: writer threads seal each chunk (header
and ChaCha20-Poly1305 body) just before writing it, reader threads open each one as it arrives, so
the AEAD work runs beside the TLS work in the same threads and never on trio's thread. A chunk that
fails the inner tag ends the channel like any broken path. A classic channel has no Sealing and
the same bytes on the wire as before.

Bounds: `send` waits while `queue_chunks` chunks are queued and unwritten; a reader thread waits
while its hand-off holds `HANDOFF_BYTES`; the reassembler holds at most `window_chunks`; the message
queue holds `message_queue` whole messages. Any error on any connection ends the whole channel.
"""

from __future__ import annotations

import queue
import socket
import ssl
import threading
from collections import deque
from typing import Any

import trio

from mycelium.mesh.channel import MAX_MESSAGE_BYTES, ChannelClosed, ChannelError
from mycelium.mesh.channel_pq import ChunkSealer, Sealing
from mycelium.mesh.channel_tls import FrameReader, send_parts
from mycelium.mesh.channel_wire import (
    CHUNK_BYTES,
    CLOSE,
    CLOSED,
    STRIPE_END,
    TAG_BYTES,
    Reassembler,
    WireError,
    encode_header,
    split_message,
)

BATCH_BYTES = 4 * CHUNK_BYTES  # a writer thread writes up to this much per round
SMALL_PART = 64 * 1024  # payloads up to this are copied into one buffer with their neighbours
HANDOFF_BYTES = 4 * CHUNK_BYTES  # a reader thread reads ahead at most this much
_STOP = "stop"  # writer sentinel: send STRIPE_END, then stop
_ABORT = "abort"  # writer sentinel: stop at once (the channel ended)
_END = "end"  # hand-off marker: the connection ended cleanly (STRIPE_END)


class TlsChannel:
    def __init__(self, peer: str, outgoing: list[ssl.SSLSocket], incoming: list[ssl.SSLSocket],
                 limiter: trio.CapacityLimiter, *, queue_chunks: int, window_chunks: int,
                 message_queue: int, close_timeout_s: float, sealing: Sealing | None = None) -> None:
        self.peer = peer
        self.sealing = sealing  # the PQ inner layer (None: classic, TLS alone)
        self._outgoing = outgoing
        self._incoming = incoming
        self._limiter = limiter
        self._close_timeout_s = close_timeout_s
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._capacity = queue_chunks
        self._unwritten = 0  # chunks queued and not yet written
        self._space = trio.Event()
        self._msg_send, self._msg_recv = trio.open_memory_channel[bytes](message_queue)
        self._reassembler = Reassembler(window=window_chunks, max_message=MAX_MESSAGE_BYTES)
        self._lanes: list[deque[Any]] = [deque() for _ in incoming]
        self._lane_bytes = [0] * len(incoming)
        self._lanes_cv = threading.Condition()
        self._kicked = trio.Event()
        self._send_lock = trio.Lock()
        self._seq = 0
        self._writers = len(outgoing)
        self._writers_done = trio.Event()
        self._ended: str | None = None
        self._scope = trio.CancelScope()
        self._torn_down = trio.Event()
        self._token: trio.lowlevel.TrioToken | None = None

    # -- the DataChannel interface -------------------------------------------------------------

    async def send(self, message: bytes) -> None:
        if len(message) > MAX_MESSAGE_BYTES:
            raise ChannelError(f"message of {len(message)} bytes exceeds {MAX_MESSAGE_BYTES}")
        if self._ended is not None:
            raise ChannelClosed(self._ended)
        if not isinstance(message, bytes):
            message = bytes(message)  # the chunks refer to it until written: it must not change
        async with self._send_lock:
            queued = 0
            try:
                for seq, flags, view in split_message(message, self._seq):
                    await self._enqueue((seq, flags, view))
                    self._seq, queued = seq + 1, queued + 1
            except BaseException:
                if queued:  # half a message went out: the stream cannot go on
                    self._end(f"a send to {self.peer} was interrupted mid-message")
                raise

    async def receive(self) -> bytes:
        try:
            return await self._msg_recv.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise ChannelClosed(self._ended or f"channel from {self.peer} closed") from None

    async def aclose(self) -> None:
        if self._ended is None:
            with trio.move_on_after(self._close_timeout_s):
                try:
                    async with self._send_lock:
                        await self._enqueue((self._seq, CLOSE, b""))
                        self._seq += 1
                        for _ in self._outgoing:
                            await self._enqueue(_STOP)
                except ChannelClosed:
                    pass  # it ended meanwhile (the peer closed, or the path broke): nothing to flush
                await self._writers_done.wait()
            self._end("the channel was closed here")
        await self._torn_down.wait()

    async def _enqueue(self, item: Any) -> None:
        while self._unwritten >= self._capacity and self._ended is None:
            await self._space.wait()
        if self._ended is not None:
            raise ChannelClosed(self._ended)
        self._unwritten += 1
        self._queue.put(item)

    # -- running --------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Threads and the reassembly task; returns (sockets closed) once the channel ended."""
        self._token = trio.lowlevel.current_trio_token()
        try:
            with self._scope:
                async with trio.open_nursery() as nursery:
                    for sock in self._outgoing:
                        nursery.start_soon(self._writer, sock)
                    for lane, sock in enumerate(self._incoming):
                        nursery.start_soon(self._reader, lane, sock)
                    nursery.start_soon(self._reassemble)
                    task_status.started()
        finally:
            self._end(f"the channel to {self.peer} was shut down")
            for sock in self._outgoing + self._incoming:
                close_now(sock)
            self._torn_down.set()

    def _end(self, reason: str) -> None:
        """Stop everything: buffered whole messages stay readable, then ChannelClosed(reason)."""
        if self._ended is not None:
            return
        self._ended = reason
        self._msg_send.close()
        self._space.set()
        for _ in self._outgoing:
            self._queue.put(_ABORT)
        with self._lanes_cv:
            self._lanes_cv.notify_all()
        self._scope.cancel()

    # writers ------------------------------------------------------------------------------------

    async def _writer(self, sock: ssl.SSLSocket) -> None:
        try:
            await trio.to_thread.run_sync(self._write_loop, sock, abandon_on_cancel=True, limiter=self._limiter)
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            self._end(f"the path to {self.peer} broke while sending: {exc}")
        finally:
            self._writers -= 1
            if self._writers <= 0:
                self._writers_done.set()

    def _write_loop(self, sock: ssl.SSLSocket) -> None:
        """(thread) Write chunks from the shared FIFO until STOP or ABORT."""
        assert self._token is not None
        sealer = self.sealing.sealer() if self.sealing is not None else None
        while True:
            batch = [self._queue.get()]
            size = 0 if isinstance(batch[0], str) else len(batch[0][2])
            while not isinstance(batch[-1], str) and size < BATCH_BYTES:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
                if not isinstance(batch[-1], str):
                    size += len(batch[-1][2])
            if batch[-1] == _ABORT:
                return
            send_parts(sock, _coalesce(batch, sealer))
            self._token.run_sync_soon(self._written, len(batch))
            if batch[-1] == _STOP:
                return

    def _written(self, count: int) -> None:
        self._unwritten -= count
        space, self._space = self._space, trio.Event()
        space.set()

    # readers ------------------------------------------------------------------------------------

    async def _reader(self, lane: int, sock: ssl.SSLSocket) -> None:
        try:
            await trio.to_thread.run_sync(self._read_loop, lane, sock, abandon_on_cancel=True, limiter=self._limiter)
        except (EOFError, OSError, ValueError, WireError) as exc:
            self._end(f"the path from {self.peer} broke: {type(exc).__name__}: {exc}")

    def _read_loop(self, lane: int, sock: ssl.SSLSocket) -> None:
        """(thread) Read chunks into this lane's hand-off until STRIPE_END; errors end the channel."""
        assert self._token is not None
        opener = self.sealing.opener() if self.sealing is not None else None
        frames_of = FrameReader(sock, tag=TAG_BYTES if opener is not None else 0)
        while True:
            frames = frames_of.read_frames()
            if opener is not None:
                frames = [f if f[1] & STRIPE_END else (f[0], f[1], opener.open(*f)) for f in frames]
            size = sum(len(p) for _, _, p in frames)
            with self._lanes_cv:
                while self._lane_bytes[lane] >= HANDOFF_BYTES and self._ended is None:
                    self._lanes_cv.wait()
                if self._ended is not None:
                    return
                for frame in frames:
                    self._lanes[lane].append(_END if frame[1] & STRIPE_END else frame)
                self._lane_bytes[lane] += size
            self._token.run_sync_soon(self._kick)
            if any(flags & STRIPE_END for _, flags, _ in frames):
                return

    def _kick(self) -> None:
        self._kicked.set()

    async def _reassemble(self) -> None:
        """Move admissible chunks from the lanes into whole messages, in order."""
        try:
            while True:
                progressed = False
                for lane, chunks in enumerate(self._lanes):
                    while chunks and chunks[0] is not _END and self._reassembler.admits(chunks[0][0]):
                        seq, flags, payload = chunks.popleft()
                        with self._lanes_cv:
                            self._lane_bytes[lane] -= len(payload)
                            self._lanes_cv.notify_all()
                        progressed = True
                        for message in self._reassembler.push(seq, flags, payload):
                            if message is CLOSED:
                                self._end(f"{self.peer} closed the channel")
                                return
                            await self._msg_send.send(message)  # type: ignore[arg-type]
                if not progressed:
                    await self._kicked.wait()
                    self._kicked = trio.Event()
        except trio.ClosedResourceError:
            return  # the channel ended while a message was being handed over
        except WireError as exc:
            self._end(f"{self.peer} broke the data channel protocol: {exc}")


def _coalesce(batch: list[Any], sealer: ChunkSealer | None = None) -> list[bytes | memoryview]:
    """Headers and small payloads joined into few buffers; large payloads passed as they are.
    With a sealer (PQ), each chunk is sealed here, in the writer's thread."""
    parts: list[bytes | memoryview] = []
    small: list[bytes | memoryview] = []
    for item in batch:
        if item == _STOP:
            small.append(encode_header(0, STRIPE_END, 0))
            continue
        seq, flags, payload = item
        if sealer is None:
            header = encode_header(seq, flags, len(payload))
        else:
            header, payload = sealer.seal(seq, flags, payload)
        small.append(header)
        if len(payload) <= SMALL_PART:
            small.append(payload)
        else:
            parts.append(b"".join(small))
            small = []
            parts.append(payload)
    if small:
        parts.append(b"".join(small))
    return parts


def close_now(sock: socket.socket) -> None:
    """Wake any thread blocked on the socket (shutdown), then close it; never raises."""
    try:
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass
