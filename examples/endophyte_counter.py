"""A process Endophyte: a counter whose state lives in its arena and checks itself on every start.

Arena layout (little-endian): [magic u64][counter u64] then RECORDS slots of 32 bytes
[counter u64][blake2b-16(slot, counter)][pad 8]. Each step increments the counter, writes slot
counter % RECORDS, then the header. A start that finds the magic verifies the arena (see `verify`: a
torn epoch, pages from two instants, fails it) and continues from the header's counter.
Prints "start counter=N fresh|resumed integrity=ok|BAD" once, then runs until killed.
"""

from __future__ import annotations

import hashlib
import os
import struct
import sys
import time

from mycelium.ram.arena import open_arena

MAGIC = 0x6D7963656C69756D
RECORDS = 4096  # 128 KiB of slots: 32 pages, so epochs carry several pages
SLOT = 32


def digest(slot: int, counter: int) -> bytes:
    return hashlib.blake2b(struct.pack("<QQ", slot, counter), digest_size=16).digest()


def verify(arena, counter: int) -> bool:
    """Every slot matches its checksum; the header's slot holds the header's counter; no slot is more
    than the one step a cut may land inside ahead of the header. Pages from two instants fail this."""
    for slot in range(RECORDS):
        off = 16 + slot * SLOT
        c = struct.unpack_from("<Q", arena, off)[0]
        if c == 0:
            continue
        if c > counter + 1 or c % RECORDS != slot or arena[off + 8: off + 24] != digest(slot, c):
            return False
    head = struct.unpack_from("<Q", arena, 16 + (counter % RECORDS) * SLOT)[0]
    return counter == 0 or head == counter


def main() -> int:
    arena = open_arena()
    rate = float(os.environ.get("COUNTER_RATE", "2000"))  # increments per second
    magic, counter = struct.unpack_from("<QQ", arena, 0)
    if magic == MAGIC:
        ok = verify(arena, counter)
        print(f"start counter={counter} resumed integrity={'ok' if ok else 'BAD'}", flush=True)
        if not ok:
            return 3
    else:
        counter = 0
        struct.pack_into("<QQ", arena, 0, MAGIC, 0)
        print("start counter=0 fresh integrity=ok", flush=True)
    period, due = 1.0 / rate, time.monotonic()
    while True:
        counter += 1
        slot = counter % RECORDS
        off = 16 + slot * SLOT
        struct.pack_into("<Q", arena, off, counter)
        arena[off + 8: off + 24] = digest(slot, counter)
        struct.pack_into("<Q", arena, 8, counter)
        due += period
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)


if __name__ == "__main__":
    sys.exit(main())
