"""From bytes to verified shares and back: chunking, sealing, coding (pure).

    refs, shares = [], []
    for piece in split(data):                      # ~1 MiB pieces
        ref, by_index = prepare(key, piece, scheme) # sealed, coded, every share addressed
    ...
    piece = recover(key, ref, {index: share_bytes}) # verifies every share, decodes, opens

A `ChunkRef` is what the volume index records per chunk: enough to find, verify and decode it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from mycelium.storage import erasure
from mycelium.storage.erasure import ErasureError, Scheme, share_id
from mycelium.storage.sealing import VolumeKey, chunk_id

CHUNK_BYTES = 1 << 20  # 1 MiB of plaintext per chunk: big enough to amortise a round trip, small to repair


class ShareMismatch(ValueError):
    """A share's bytes do not hash to the id the chunk reference names (bit rot or a lying holder)."""


@dataclass(frozen=True, slots=True)
class ChunkRef:
    id: bytes  # hash of the sealed chunk
    size: int  # plaintext bytes
    sealed: int  # sealed bytes (decode needs it to strip padding)
    k: int
    n: int
    shares: tuple[bytes, ...]  # share id per index, len n
    gen: int = 0  # network secret generation whose volume key sealed it (storage.keyring)

    @property
    def scheme(self) -> Scheme:
        return Scheme(self.k, self.n)

    @property
    def share_bytes(self) -> int:
        return erasure.block_size(self.sealed, self.k)

    def to_wire(self) -> list:
        out = [self.id, self.size, self.sealed, self.k, self.n, list(self.shares)]
        return [*out, self.gen] if self.gen else out  # refs written before rotations existed have 6 items

    @classmethod
    def from_wire(cls, obj: object) -> ChunkRef:
        if not (isinstance(obj, list) and len(obj) in (6, 7)):
            raise ValueError("chunk reference must be a 6- or 7-item list")
        cid, size, sealed, k, n, shares = obj[:6]
        gen = obj[6] if len(obj) == 7 else 0
        if not (isinstance(gen, int) and not isinstance(gen, bool) and gen > 0 or len(obj) == 6):
            raise ValueError("chunk secret generation must be a positive integer")
        if not (isinstance(cid, bytes) and len(cid) == 32):
            raise ValueError("chunk id must be 32 bytes")
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (size, sealed, k, n)):
            raise ValueError("chunk sizes and k/n must be non-negative integers")
        Scheme(k, n)
        if not (isinstance(shares, list) and len(shares) == n and all(isinstance(s, bytes) and len(s) == 32 for s in shares)):
            raise ValueError("chunk reference must name n 32-byte share ids")
        return cls(cid, size, sealed, k, n, tuple(shares), gen)


def split(data: bytes, chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
    """Fixed-size pieces; an empty input is one empty chunk so every file has at least one."""
    if not data:
        yield b""
        return
    view = memoryview(data)
    for off in range(0, len(data), chunk_bytes):
        yield bytes(view[off : off + chunk_bytes])


def prepare(key: VolumeKey, plaintext: bytes, scheme: Scheme) -> tuple[ChunkRef, dict[int, bytes]]:
    """Seal and code one chunk: its reference and its n shares by index."""
    sealed = key.seal(plaintext)
    cid = chunk_id(sealed)
    shares = erasure.encode(sealed, scheme)
    ids = tuple(share_id(cid, i, shares[i]) for i in range(scheme.n))
    return ChunkRef(cid, len(plaintext), len(sealed), scheme.k, scheme.n, ids, key.generation), shares


def verify_share(ref: ChunkRef, index: int, data: bytes) -> None:
    if not 0 <= index < ref.n or share_id(ref.id, index, data) != ref.shares[index]:
        raise ShareMismatch(f"share {index} of chunk {ref.id.hex()[:12]} does not match its id")


def reconstruct_sealed(ref: ChunkRef, shares: dict[int, bytes]) -> bytes:
    """The sealed chunk from any k shares; each is verified first, a mismatch raises ShareMismatch."""
    for index, data in shares.items():
        verify_share(ref, index, data)
    sealed = erasure.decode(shares, ref.scheme, ref.sealed)
    if chunk_id(sealed) != ref.id:
        raise ErasureError(f"chunk {ref.id.hex()[:12]} decoded to bytes of another hash")
    return sealed


def recover(key: VolumeKey, ref: ChunkRef, shares: dict[int, bytes]) -> bytes:
    """The plaintext of one chunk from any k verified shares."""
    return key.open(reconstruct_sealed(ref, shares))


def rebuild(ref: ChunkRef, shares: dict[int, bytes], indices: tuple[int, ...]) -> dict[int, bytes]:
    """Missing shares by index, re-encoded from any k shares (repair never needs the volume key)."""
    sealed = reconstruct_sealed(ref, shares)
    out = erasure.encode(sealed, ref.scheme, indices)
    for i, data in out.items():
        verify_share(ref, i, data)
    return out
