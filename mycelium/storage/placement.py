"""Where a chunk's shares live: rendezvous hashing over the storage devices, one share per device.

Every node computes the same answer from the same device list (the Primary's rhizomorphs and
sclerotia), with no table to keep. For a chunk, each device gets the score BLAKE2b(chunk id ‖ device
id); the n highest scores form the chunk's *holder set*. Removing a device changes the set only of the
chunks it was in (the next-ranked device steps in); adding one changes a set only where the newcomer
outranks the lowest member. Share indices are not pinned to devices: the initial put gives share i to
the i-th ranked device, and repair puts a missing index on a set member that holds none, so a change
of membership moves exactly the shares of the departed device.

`choose_scheme` picks the code for a network size: replication below `erasure_min_devices` (a small
network cannot spread k-of-n and still keep n distinct devices after losses), k-of-n above.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from mycelium.encoding import digest
from mycelium.storage.erasure import Scheme

_PERSON = b"myc-place-v1"


@dataclass(frozen=True, slots=True)
class SchemeConfig:
    k: int = 3  # shares needed to read a chunk when erasure-coded (Tahoe's default is 3)
    n: int = 5  # shares written when erasure-coded: survives n − k = 2 lost holders at 5/3 overhead
    # Erasure coding needs n devices plus spares so that repair after losses still finds n distinct
    # devices; below this many devices chunks are replicated instead.
    erasure_min_devices: int = 7
    copies: int = 3  # replicas per chunk on small networks: survives copies − 1 lost holders

    def __post_init__(self) -> None:
        Scheme(self.k, self.n)  # validates
        if self.copies < 1:
            raise ValueError("copies must be >= 1")


def choose_scheme(devices: int, cfg: SchemeConfig = SchemeConfig()) -> Scheme:
    """The code for a network of `devices` storage devices (deterministic: part of the put's record)."""
    if devices < 1:
        raise ValueError("no storage device: a put needs at least one")
    if devices >= cfg.erasure_min_devices:
        return Scheme(cfg.k, cfg.n)
    return Scheme(1, min(cfg.copies, devices))


def score(chunk: bytes, device: str) -> bytes:
    return digest(chunk + b"|" + device.encode(), person=_PERSON)


def ranked(chunk: bytes, devices: Iterable[str]) -> list[str]:
    """All devices, best first, for this chunk (ties impossible: distinct ids give distinct hashes)."""
    return sorted(set(devices), key=lambda d: score(chunk, d), reverse=True)


def holder_set(chunk: bytes, devices: Iterable[str], n: int) -> list[str]:
    """The n best-ranked devices for this chunk (fewer if fewer devices exist)."""
    return ranked(chunk, devices)[:n]


def initial_placement(chunk: bytes, devices: Iterable[str], n: int) -> dict[int, str]:
    """Share index → device for a fresh put: share i on the i-th ranked device."""
    return dict(enumerate(holder_set(chunk, devices, n)))


def repair_targets(chunk: bytes, devices: Iterable[str], n: int, occupied: Iterable[str], count: int) -> list[str]:
    """Up to `count` devices for rebuilt shares: holder-set members first, never one that holds a share."""
    busy = set(occupied)
    order = ranked(chunk, devices)
    preferred = [d for d in order[:n] if d not in busy]
    spill = [d for d in order[n:] if d not in busy]
    return (preferred + spill)[:count]
