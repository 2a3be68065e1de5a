"""The process Endophyte contract: the state a program wants to survive lives in its **arena**.

A process Endophyte is started with a memfd (the arena) already sized and, after a failover or a
migration, already filled with the last replicated epoch. The program maps it and keeps its state there:

    from mycelium.ram.arena import open_arena
    arena = open_arena()          # an mmap of MYCELIUM_ARENA_BYTES bytes, shared, tracked
    arena[0:8] = ...              # every byte written here reaches the backups at the next epoch

`open_arena` maps the fd named by `MYCELIUM_ARENA_FD`, registers the mapping for write tracking
(userfaultfd write-protect, async: no cost until a page is first written in an epoch, see pagetrack.py)
and tells the supervisor where it is (a line "<address> <bytes>" in the file `MYCELIUM_ARENA_INFO`).
Everything outside the arena — the heap, the stack, open sockets — is NOT replicated: on another node
the program starts again from `main()` and finds its arena as of the last epoch a backup acknowledged.
Write the arena so that any epoch boundary is a state you can start from (the supervisor freezes the
whole process for the cut, so a boundary never falls inside a single store, but it can fall between two).
"""

from __future__ import annotations

import ctypes
import mmap
import os

from mycelium.ram.pagetrack import protect_region

ENV_FD = "MYCELIUM_ARENA_FD"
ENV_BYTES = "MYCELIUM_ARENA_BYTES"
ENV_INFO = "MYCELIUM_ARENA_INFO"


class ArenaError(RuntimeError):
    """The program was not started as a process Endophyte, or tracking is unavailable."""


_keep: list = []  # the userfaultfd and mapping live as long as the process


def open_arena() -> mmap.mmap:
    try:
        fd, size, info = int(os.environ[ENV_FD]), int(os.environ[ENV_BYTES]), os.environ[ENV_INFO]
    except (KeyError, ValueError) as exc:
        raise ArenaError(f"{exc} is not set: this program expects to run as a process Endophyte "
                         "(`kind: Endophyte` with `process:`), which passes its arena") from exc
    arena = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    addr = ctypes.addressof(ctypes.c_char.from_buffer(arena))
    uffd = protect_region(addr, size)
    _keep.extend([arena, uffd])
    tmp = info + ".tmp"
    with open(tmp, "w") as f:
        f.write(f"{addr} {size}\n")
    os.rename(tmp, info)
    return arena
