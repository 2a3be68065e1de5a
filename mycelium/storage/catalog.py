"""Volume metadata: which files a volume holds and their chunk lists, as a signed object (pure).

A `VolumeIndex` is the whole directory of one volume at one sequence number: path → `FileEntry`
(version, size, chunk references, deleted flag). The writer (the node holding the volume's lease)
signs it and stores it in the chunk store like any file; the Primary keeps only the volume's *root*:
(sequence, writer, the index's own chunk references). A reader fetches the root, the index, checks the
signature against the root's writer, then fetches file chunks — so the Primary stays small and every
byte of metadata is verified.

Bounded: at most `max_files` entries and `max_chunks` chunks per file; a deleted file keeps a
tombstone with no chunks until the next rewrite of that path.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from mycelium.encoding import EncodingError, canonical, decode
from mycelium.identity import NodeKey, verify
from mycelium.storage.chunks import ChunkRef

INDEX_VERSION = 1
MAX_FILES = 10_000  # entries per volume index; the index is rewritten on every commit
MAX_CHUNKS_PER_FILE = 1 << 16  # 64 GiB at 1 MiB chunks
MAX_PATH_BYTES = 1024
MAX_INDEX_BYTES = 64 << 20


class CatalogError(ValueError):
    """A volume index that is malformed, too large, or not signed by the expected writer."""


def check_path(path: str) -> str:
    """A volume path: relative, '/'-separated, no '.', '..' or empty parts."""
    if not isinstance(path, str) or not path or len(path.encode()) > MAX_PATH_BYTES:
        raise CatalogError(f"path must be 1..{MAX_PATH_BYTES} bytes, got {path!r}")
    parts = path.strip("/").split("/")
    if any(p in ("", ".", "..") or "\0" in p for p in parts):
        raise CatalogError(f"path {path!r} has an empty, '.', '..' or NUL component")
    return "/".join(parts)


@dataclass(frozen=True, slots=True)
class FileEntry:
    path: str
    version: int  # 1 for the first put of this path, +1 on each rewrite
    size: int
    chunks: tuple[ChunkRef, ...]
    mtime_ms: int  # writer's clock, informational only (never hashed into consensus state)
    deleted: bool = False

    def to_wire(self) -> dict:
        return {
            "path": self.path,
            "version": self.version,
            "size": self.size,
            "chunks": [c.to_wire() for c in self.chunks],
            "mtime_ms": self.mtime_ms,
            "deleted": self.deleted,
        }

    @classmethod
    def from_wire(cls, obj: object) -> FileEntry:
        if not isinstance(obj, dict):
            raise CatalogError("file entry must be a map")
        try:
            chunks = obj["chunks"]
            if not isinstance(chunks, list) or len(chunks) > MAX_CHUNKS_PER_FILE:
                raise CatalogError("file entry chunks must be a bounded list")
            entry = cls(
                path=check_path(obj["path"]),
                version=int(obj["version"]),
                size=int(obj["size"]),
                chunks=tuple(ChunkRef.from_wire(c) for c in chunks),
                mtime_ms=int(obj["mtime_ms"]),
                deleted=bool(obj["deleted"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CatalogError(f"malformed file entry: {exc}") from exc
        if entry.size != sum(c.size for c in entry.chunks):
            raise CatalogError(f"file {entry.path!r}: size does not match its chunks")
        return entry


@dataclass(frozen=True, slots=True)
class VolumeIndex:
    volume: str
    seq: int  # 0 for the empty volume; the Primary's root names the current one
    writer: str  # node id that signed it (the lease holder at the time)
    files: dict[str, FileEntry] = field(default_factory=dict)
    signature: bytes = b""

    def signed_part(self) -> dict:
        return {
            "v": INDEX_VERSION,
            "volume": self.volume,
            "seq": self.seq,
            "writer": self.writer,
            "files": {p: e.to_wire() for p, e in self.files.items()},
        }

    def signed_by(self, key: NodeKey, network_id: str) -> VolumeIndex:
        """Signed under the network's scheme (hybrid Ed25519 + ML-DSA-65 in a --pq network)."""
        unsigned = replace(self, writer=key.node_id, signature=b"")
        return replace(unsigned, signature=key.sign_for(network_id, canonical(unsigned.signed_part())))

    def encode(self) -> bytes:
        return canonical({"index": self.signed_part(), "sig": self.signature})

    @classmethod
    def decode(cls, data: bytes, *, network_id: str, expect_volume: str, expect_writer: str,
               expect_seq: int) -> VolumeIndex:
        try:
            obj = decode(data, max_size=MAX_INDEX_BYTES)
            body, sig = obj["index"], obj["sig"]
            if body["v"] != INDEX_VERSION:
                raise CatalogError(f"index version {body['v']} (this node reads {INDEX_VERSION})")
            files_wire = body["files"]
            if not isinstance(files_wire, dict) or len(files_wire) > MAX_FILES:
                raise CatalogError(f"index must hold at most {MAX_FILES} files")
            files = {}
            for path, e in files_wire.items():
                entry = FileEntry.from_wire(e)
                if entry.path != path:
                    raise CatalogError(f"entry {path!r} names another path")
                files[path] = entry
            index = cls(str(body["volume"]), int(body["seq"]), str(body["writer"]), files, bytes(sig))
        except (EncodingError, KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, CatalogError):
                raise
            raise CatalogError(f"malformed volume index: {exc}") from exc
        if (index.volume, index.writer, index.seq) != (expect_volume, expect_writer, expect_seq):
            raise CatalogError(
                f"index is {index.volume!r} seq {index.seq} by {index.writer}; the root names"
                f" {expect_volume!r} seq {expect_seq} by {expect_writer}"
            )
        if not verify(index.writer, canonical(index.signed_part()), index.signature, network_id):
            raise CatalogError(f"index of volume {index.volume!r} seq {index.seq}: bad signature")
        return index

    # -- edits (each returns the next unsigned index) --------------------------------------------

    def live(self) -> dict[str, FileEntry]:
        return {p: e for p, e in self.files.items() if not e.deleted}

    def with_file(self, path: str, size: int, chunks: tuple[ChunkRef, ...], mtime_ms: int, max_files: int = MAX_FILES) -> VolumeIndex:
        path = check_path(path)
        if len(chunks) > MAX_CHUNKS_PER_FILE:
            raise CatalogError(f"{path!r}: {len(chunks)} chunks exceed {MAX_CHUNKS_PER_FILE}")
        if path not in self.files and len(self.files) >= max_files:
            raise CatalogError(f"volume {self.volume!r} holds {max_files} files, its limit; remove some first")
        old = self.files.get(path)
        entry = FileEntry(path, (old.version + 1) if old else 1, size, chunks, mtime_ms)
        return replace(self, seq=self.seq + 1, files={**self.files, path: entry}, signature=b"")

    def without_file(self, path: str, mtime_ms: int) -> VolumeIndex:
        path = check_path(path)
        old = self.files.get(path)
        if old is None or old.deleted:
            raise CatalogError(f"no file {path!r} in volume {self.volume!r}")
        tomb = FileEntry(path, old.version + 1, 0, (), mtime_ms, deleted=True)
        return replace(self, seq=self.seq + 1, files={**self.files, path: tomb}, signature=b"")

    def chunk_refs(self) -> dict[bytes, ChunkRef]:
        """Every chunk the live files reference, by id (what repair keeps redundant)."""
        return {c.id: c for e in self.files.values() for c in e.chunks}


@dataclass(frozen=True, slots=True)
class VolumeRoot:
    """What the Primary holds per volume: the current index's sequence, writer and chunk references."""

    volume: str
    seq: int
    writer: str
    index: tuple[ChunkRef, ...]  # the encoded VolumeIndex, stored as chunks like a file

    def to_wire(self) -> dict:
        return {"volume": self.volume, "seq": self.seq, "writer": self.writer, "index": [c.to_wire() for c in self.index]}

    @classmethod
    def from_wire(cls, obj: object) -> VolumeRoot:
        try:
            return cls(str(obj["volume"]), int(obj["seq"]), str(obj["writer"]), tuple(ChunkRef.from_wire(c) for c in obj["index"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise CatalogError(f"malformed volume root: {exc}") from exc
