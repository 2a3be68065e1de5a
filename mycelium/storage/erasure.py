"""Erasure coding of sealed chunks: k-of-n with zfec, plain replication (k = 1) on small networks.

zfec (Reed-Solomon over GF(2^8), the coder Tahoe-LAFS uses) was chosen over pyeclib because it is one
self-contained C extension with wheels on PyPI: pyeclib needs liberasurecode (and ISA-L for its speed)
as system libraries, which a Raspberry Pi install or a fresh CI machine would have to build or find.

A chunk's sealed bytes are padded to a multiple of k and split into k primary blocks; zfec adds n − k
check blocks. Any k distinct shares give the chunk back. Each share is addressed by
`share_id(chunk, index, data)`, so a reader holding the chunk's reference verifies every share it
fetches before it decodes, and a holder can scrub its own shares without any metadata.
"""

from __future__ import annotations

from dataclasses import dataclass

import zfec

from mycelium.encoding import digest

MAX_SHARES = 32  # n is small in practice (Tahoe: 10); bounds every per-chunk table
_SHARE_PERSON = b"myc-share-v1"


class ErasureError(ValueError):
    """Too few valid shares to decode, or parameters that make no code."""


@dataclass(frozen=True, slots=True)
class Scheme:
    k: int  # shares needed to read
    n: int  # shares written, one per device

    def __post_init__(self) -> None:
        if not 1 <= self.k <= self.n <= MAX_SHARES:
            raise ErasureError(f"need 1 <= k <= n <= {MAX_SHARES}, got k={self.k} n={self.n}")

    @property
    def replicated(self) -> bool:
        return self.k == 1


def share_id(chunk: bytes, index: int, data: bytes) -> bytes:
    """The address of one share: BLAKE2b-256 over chunk id, share index and the share's bytes."""
    return digest(chunk + index.to_bytes(1, "big") + data, person=_SHARE_PERSON)


def block_size(sealed_len: int, k: int) -> int:
    return max(1, -(-sealed_len // k))


def encode(sealed: bytes, scheme: Scheme, indices: tuple[int, ...] | None = None) -> dict[int, bytes]:
    """The shares of `sealed` by index (all n, or only `indices`)."""
    k, n = scheme.k, scheme.n
    size = block_size(len(sealed), k)
    padded = bytes(sealed) + b"\0" * (size * k - len(sealed))
    blocks = tuple(padded[i * size : (i + 1) * size] for i in range(k))
    wanted = tuple(range(n)) if indices is None else tuple(indices)
    if any(not 0 <= i < n for i in wanted):
        raise ErasureError(f"share index out of range 0..{n - 1}: {wanted}")
    if k == 1:  # replication: every share is the whole sealed chunk
        return {i: blocks[0] for i in wanted}
    out = zfec.Encoder(k, n).encode(blocks, wanted)
    return {i: bytes(b) for i, b in zip(wanted, out)}


def decode(shares: dict[int, bytes], scheme: Scheme, sealed_len: int) -> bytes:
    """The sealed chunk from any k shares (by index). Shares must already be verified."""
    k, n = scheme.k, scheme.n
    if len(shares) < k:
        raise ErasureError(f"{len(shares)} shares given, {k} needed")
    size = block_size(sealed_len, k)
    picked = sorted(shares)[:k]
    if any(not 0 <= i < n for i in picked) or any(len(shares[i]) != size for i in picked):
        raise ErasureError("share index out of range or share of the wrong size")
    if k == 1:
        return bytes(shares[picked[0]][:sealed_len])
    blocks = zfec.Decoder(k, n).decode(tuple(shares[i] for i in picked), tuple(picked))
    return b"".join(bytes(b) for b in blocks)[:sealed_len]
