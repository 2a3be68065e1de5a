"""One device's part in the distributed store (trio shell): serves its shares, puts and gets files.

    node = StorageNode(key, provider, ShareStore(dir), roots, devices=lambda: [...], volume_key=..., network_id=...)
    nursery.start_soon(node.run)               # serves "storage" channels, scrubs, repairs
    entry = await node.put_file("vol", "a.db", data)     # returns after ack_shares fsyncs per chunk
    data = await node.get_file("vol", "a.db")            # MissingRanges if a chunk is unreadable

A put is visible only once the root commit succeeds; until then nothing names its chunks, so a put
that fails halfway leaves unreferenced shares (collected later), never a half-visible file.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from pathlib import Path
from dataclasses import dataclass

import trio

from mycelium.identity import NodeKey
from mycelium.mesh.channel import ChannelError, ChannelProvider, DataChannel
from mycelium.storage import chunks, placement, wire
from mycelium.storage.catalog import CatalogError, FileEntry, VolumeIndex, VolumeRoot
from mycelium.storage.chunks import ChunkRef, ShareMismatch
from mycelium.storage.keyring import KeyringError
from mycelium.storage.links import PeerUnavailable, StorageLinks
from mycelium.storage.placement import SchemeConfig
from mycelium.storage.roots import RootStore
from mycelium.storage.sealing import VolumeKey
from mycelium.storage.shares import ShareRefused, ShareStore, StoreFull


@dataclass(frozen=True, slots=True)
class StorageConfig:
    scheme: SchemeConfig = SchemeConfig()
    ack_extra: int = 1  # a put waits for k + ack_extra fsynced shares per chunk (capped at n)
    chunk_bytes: int = chunks.CHUNK_BYTES
    request_timeout_s: float = 10.0  # one share request; a read names a chunk missing after its holders time out
    chunks_in_flight: int = 4  # chunks a put or get moves at once (memory ≈ this × n shares)


class PutFailed(Exception):
    """Too few devices acknowledged a chunk: the put did not happen (nothing became visible)."""


class MissingRanges(Exception):
    """A read found chunks no holder could give back; names the byte ranges instead of guessing."""

    def __init__(self, volume: str, path: str, ranges: list[tuple[int, int]]) -> None:
        self.volume, self.path, self.ranges = volume, path, ranges
        spans = ", ".join(f"{a}..{a + n}" for a, n in ranges[:8])
        super().__init__(f"{volume}:{path}: bytes {spans} are unreadable now ({len(ranges)} chunk(s) lack k shares)")


class KeyUnavailable(MissingRanges):
    """Chunks sealed under a network secret generation this node cannot recover (storage.keyring)."""

    def __init__(self, volume: str, path: str, ranges: list[tuple[int, int]], reason: str) -> None:
        super().__init__(volume, path, ranges)
        self.args = (f"{self.args[0]}: {reason}",)


class NoSuchFile(Exception):
    pass


class StorageNode:
    def __init__(
        self,
        key: NodeKey,
        provider: ChannelProvider,
        store: ShareStore,
        roots: RootStore,
        *,
        devices: Callable[[], list[str]],
        volume_key: Callable[[str], VolumeKey],
        network_id: str,
        read_key: Callable[[str, int], VolumeKey] | None = None,
        cfg: StorageConfig = StorageConfig(),
    ) -> None:
        self.key = key
        self.network_id = network_id  # volume indexes are signed under this network's scheme
        self.node_id = key.node_id
        self.provider = provider
        self.store = store
        self.roots = roots
        self.devices = devices  # storage devices of the Primary (this node included if it stores)
        self.volume_key = volume_key  # the key new chunks are sealed under (the current secret generation)
        self.read_key = read_key or self._only_write_key  # (volume, generation) → key; KeyringError if not held
        self.cfg = cfg
        self.links = StorageLinks(provider, timeout_s=cfg.request_timeout_s)
        self.stopped = False
        self.malformed = 0  # requests dropped for breaking the protocol
        self._indexes: dict[str, VolumeIndex] = {}
        self.recent_errors: deque[str] = deque(maxlen=32)  # last share-transfer failures, for status/debugging
        self.last_commit_s = 0.0  # how long the last root commit took (index put + Primary decision)
        self.peak_pieces_held = 0  # most plaintext chunks one put held in memory at once (status)

    def _only_write_key(self, volume: str, generation: int) -> VolumeKey:
        key = self.volume_key(volume)
        if key.generation != generation:
            raise KeyringError(f"this node holds only the volume key of secret generation {key.generation}")
        return key

    # -- serving ----------------------------------------------------------------------------------

    def serve(self) -> None:
        self.provider.serve_channels(wire.PURPOSE, self._handle)

    async def _handle(self, peer: str, channel: DataChannel) -> None:
        try:
            while not self.stopped:
                raw = await channel.receive()
                if self.stopped:
                    break
                await channel.send(await self._answer(raw))
        except ChannelError:
            pass  # the peer went away: its next request opens a new channel
        finally:
            with trio.CancelScope(shield=True):
                try:
                    await channel.aclose()
                except ChannelError:
                    pass  # closing a broken channel

    async def _answer(self, raw: bytes) -> bytes:
        try:
            req = wire.unpack_request(raw)
        except wire.WireError as exc:
            self.malformed += 1
            return wire.failure("malformed", str(exc))
        op = req["op"]
        if op == "put":
            try:
                await trio.to_thread.run_sync(self.store.put, req["sid"], req["chunk"], req["index"], req["data"])
            except ShareRefused as exc:
                return wire.failure("refused", str(exc))
            except StoreFull as exc:
                return wire.failure("full", str(exc))
            return wire.pack({"ok": True})
        if op == "get":
            for sid in req["sids"]:
                share = await trio.to_thread.run_sync(self.store.get, sid)
                if share is not None:
                    return wire.pack({"ok": True, "sid": sid, "chunk": share.chunk, "index": share.index, "data": share.data})
            return wire.failure("absent", "none of these shares is here")
        return wire.pack({"ok": True, "ids": sorted(self.store.ids()), "corrupt": self.store.corrupt_found, "used": self.store.used_bytes})

    # -- share transfer ---------------------------------------------------------------------------

    async def send_share(self, device: str, ref: ChunkRef, index: int, data: bytes) -> None:
        req = {"op": "put", "sid": ref.shares[index], "chunk": ref.id, "index": index, "data": data}
        if device == self.node_id:
            await trio.to_thread.run_sync(self.store.put, req["sid"], ref.id, index, data)
            return
        ans = await self.links.ask(device, req)
        if not ans["ok"]:
            raise PeerUnavailable(f"{device} refused share {index}: {ans.get('error')}")

    async def fetch_share(self, device: str, ref: ChunkRef) -> tuple[int, bytes]:
        """One verified share of `ref` from `device` (which holds at most one)."""
        if device == self.node_id:
            for sid in ref.shares:
                got = await trio.to_thread.run_sync(self.store.get, sid)
                if got is not None:
                    return got.index, got.data
            raise PeerUnavailable("no share of this chunk here")
        ans = await self.links.ask(device, {"op": "get", "sids": list(ref.shares)})
        if not ans["ok"]:
            raise PeerUnavailable(f"{device}: {ans.get('error')}")
        index, data = ans.get("index"), ans.get("data")
        if not isinstance(index, int) or not isinstance(data, bytes):
            raise PeerUnavailable(f"{device}: malformed get answer")
        chunks.verify_share(ref, index, data)
        return index, data

    async def write_chunk(self, ref: ChunkRef, shares: dict[int, bytes], devices: list[str]) -> int:
        """Send all shares, one per device, falling back to lower-ranked devices; fsynced acks."""
        want = min(ref.k + self.cfg.ack_extra, ref.n)
        ranked = placement.ranked(ref.id, devices)
        queue = list(ranked)
        acked: list[int] = []
        errors: list[str] = []

        async def place(index: int) -> None:
            while queue:
                device = queue.pop(0)
                try:
                    await self.send_share(device, ref, index, shares[index])
                    acked.append(index)
                    return
                except (PeerUnavailable, OSError, ShareRefused) as exc:
                    errors.append(str(exc))
                    self.recent_errors.append(f"put {ref.id.hex()[:12]} to {device[-8:]}: {exc}")

        async with trio.open_nursery() as nursery:
            for index in range(ref.n):
                nursery.start_soon(place, index)
        if len(acked) < want:
            raise PutFailed(
                f"chunk {ref.id.hex()[:12]}: {len(acked)} of {want} shares acknowledged"
                f" ({'; '.join(errors[:3]) or 'too few devices'}); check `mycelium storage status`"
            )
        return len(acked)

    async def read_chunk(self, ref: ChunkRef, devices: list[str]) -> bytes | None:
        """The sealed chunk from k verified shares, asking devices in rank order; None if unreadable."""
        got: dict[int, bytes] = {}
        pending = placement.ranked(ref.id, devices)

        async def one(device: str) -> None:
            try:
                index, data = await self.fetch_share(device, ref)
            except (PeerUnavailable, ShareMismatch, OSError) as exc:
                self.recent_errors.append(f"get {ref.id.hex()[:12]} from {device[-8:]}: {exc}")
                return  # that holder is down or lied: the next wave asks another
            got.setdefault(index, data)

        while len(got) < ref.k and pending:
            wave, pending = pending[: ref.k - len(got)], pending[ref.k - len(got) :]
            async with trio.open_nursery() as nursery:
                for device in wave:
                    nursery.start_soon(one, device)
        if len(got) < ref.k:
            return None
        return chunks.reconstruct_sealed(ref, got)

    # -- files ------------------------------------------------------------------------------------

    async def put_bytes(self, volume: str, data: bytes) -> tuple[ChunkRef, ...]:
        async def pieces() -> AsyncGenerator[bytes, None]:
            for piece in chunks.split(data, self.cfg.chunk_bytes):
                yield piece
        return await self.put_stream(volume, pieces())

    async def put_stream(self, volume: str, pieces: AsyncGenerator[bytes, None]) -> tuple[ChunkRef, ...]:
        """Seal, code and place pieces as they come: at most chunks_in_flight are written at once and
        one more is read ahead, so a put holds ~(chunks_in_flight + 1) chunks in memory, not the file."""
        devices = self.devices()
        scheme = placement.choose_scheme(len(devices), self.cfg.scheme)
        key = self.volume_key(volume)
        refs: dict[int, ChunkRef] = {}
        limit = trio.Semaphore(self.cfg.chunks_in_flight)
        failure: list[PutFailed] = []
        held = 0

        async def one(i: int, piece: bytes) -> None:
            nonlocal held
            try:
                if failure:
                    return
                ref, shares = await trio.to_thread.run_sync(chunks.prepare, key, piece, scheme)
                try:
                    await self.write_chunk(ref, shares, devices)
                except PutFailed as exc:
                    failure.append(exc)
                    return
                refs[i] = ref
            finally:
                held -= 1
                limit.release()

        async with trio.open_nursery() as nursery, aclosing(pieces) as stream:
            i = 0
            async for piece in stream:
                held += 1
                self.peak_pieces_held = max(self.peak_pieces_held, held)
                await limit.acquire()
                if failure:
                    limit.release()
                    break
                nursery.start_soon(one, i, piece)
                i += 1
        if failure:
            raise failure[0]
        return tuple(refs[j] for j in range(len(refs)))

    async def read_bytes(self, volume: str, refs: tuple[ChunkRef, ...]) -> tuple[bytes, list[tuple[int, int]]]:
        """(data, missing ranges); missing ranges read as zeros in `data` and are always named."""
        devices = self.devices()
        offsets = [sum(r.size for r in refs[:i]) for i in range(len(refs))]
        keys: dict[int, VolumeKey] = {}
        for ref in refs:
            if ref.gen not in keys:
                try:
                    keys[ref.gen] = self.read_key(volume, ref.gen)
                except KeyringError as exc:
                    lacking = [(o, r.size) for r, o in zip(refs, offsets) if r.gen == ref.gen]
                    raise KeyUnavailable(volume, "(chunks)", lacking, str(exc)) from None
        out: list[bytes] = [b""] * len(refs)
        missing: list[tuple[int, int]] = []
        limit = trio.Semaphore(self.cfg.chunks_in_flight)

        async def one(i: int) -> None:
            async with limit:
                sealed = await self.read_chunk(refs[i], devices)
                if sealed is None:
                    missing.append((offsets[i], refs[i].size))
                    out[i] = b"\0" * refs[i].size
                else:
                    out[i] = await trio.to_thread.run_sync(keys[refs[i].gen].open, sealed)

        async with trio.open_nursery() as nursery:
            for i in range(len(refs)):
                nursery.start_soon(one, i)
        return b"".join(out), sorted(missing)

    async def index(self, volume: str) -> VolumeIndex:
        """The volume's current index (cached per sequence), verified against the root's writer."""
        root = await self.roots.root(volume)
        if root is None:
            return VolumeIndex(volume, 0, "")
        cached = self._indexes.get(volume)
        if cached is not None and cached.seq == root.seq:
            return cached
        raw, missing = await self.read_bytes(volume, root.index)
        if missing:
            raise MissingRanges(volume, "(index)", missing)
        idx = VolumeIndex.decode(raw, network_id=self.network_id, expect_volume=volume, expect_writer=root.writer, expect_seq=root.seq)
        self._indexes[volume] = idx
        return idx

    async def _commit(self, volume: str, before: VolumeIndex, after: VolumeIndex) -> VolumeIndex:
        t0 = trio.current_time()
        signed = after.signed_by(self.key, self.network_id)
        index_refs = await self.put_bytes(volume, signed.encode())
        await self.roots.commit(VolumeRoot(volume, signed.seq, self.node_id, index_refs), expect_seq=before.seq)
        self._indexes[volume] = signed
        self.last_commit_s = trio.current_time() - t0
        return signed

    async def put_file(self, volume: str, path: str, data: bytes) -> FileEntry:
        return await self._commit_file(volume, path, await self.put_bytes(volume, data))

    async def put_path(self, volume: str, path: str, source: Path) -> FileEntry:
        """Like put_file, reading `source` chunk by chunk (the file is never held whole)."""
        return await self._commit_file(volume, path, await self.put_stream(volume, read_pieces(source, self.cfg.chunk_bytes)))

    async def _commit_file(self, volume: str, path: str, refs: tuple[ChunkRef, ...]) -> FileEntry:
        before = await self.index(volume)
        after = before.with_file(path, sum(r.size for r in refs), refs, int(time.time() * 1000))
        committed = await self._commit(volume, before, after)
        return committed.files[after.files[path].path]

    async def get_file(self, volume: str, path: str) -> bytes:
        entry = await self.entry(volume, path)
        data, missing = await self.read_bytes(volume, entry.chunks)
        if missing:
            raise MissingRanges(volume, entry.path, missing)
        return data

    async def entry(self, volume: str, path: str) -> FileEntry:
        idx = await self.index(volume)
        try:
            entry = idx.live().get(path.strip("/"))
        except CatalogError:
            entry = None
        if entry is None:
            raise NoSuchFile(f"no file {path!r} in volume {volume!r}; list them with `mycelium storage ls --volume {volume}`")
        return entry

    async def remove_file(self, volume: str, path: str) -> None:
        before = await self.index(volume)
        await self._commit(volume, before, before.without_file(path, int(time.time() * 1000)))

    async def list_files(self, volume: str) -> list[FileEntry]:
        return sorted((await self.index(volume)).live().values(), key=lambda e: e.path)


async def read_pieces(source: Path, chunk_bytes: int) -> AsyncGenerator[bytes, None]:
    """`source` in chunk_bytes pieces, read in a worker thread; an empty file is one empty piece."""
    f = await trio.to_thread.run_sync(open, source, "rb")
    try:
        first = True
        while True:
            piece = await trio.to_thread.run_sync(f.read, chunk_bytes)
            if piece or first:
                yield piece
            first = False
            if len(piece) < chunk_bytes:
                return
    finally:
        f.close()
