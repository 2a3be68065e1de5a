"""Dirty-page tracking for a process region: userfaultfd write-protect (async) + PAGEMAP_SCAN (shell).

How it works (Linux >= 6.7; soft-dirty is off on our kernels, so this is the only exact way):

1. In the tracked process, `protect_region(addr, length)` creates a userfaultfd with
   `UFFD_FEATURE_WP_ASYNC | WP_UNPOPULATED | WP_HUGETLBFS_SHMEM`, registers the region in write-protect
   mode and write-protects it. In async mode a write to a protected page does not stop the writer:
   the kernel lifts the protection and the page counts as *written*. (A userfaultfd belongs to the mm
   that created it, so this step runs inside the process: `mycelium.ram.arena` does it.)
2. From outside, `scan_written(pid, addr, length)` issues `PAGEMAP_SCAN` on `/proc/PID/pagemap` with
   `PM_SCAN_WP_MATCHING`: it returns the written pages and write-protects them again, atomically, so
   the next scan sees exactly the pages written in between.
3. `read_pages(pid, addr, pages)` copies them with `process_vm_readv` (batched, 1024 iovecs per call).

Run 2 and 3 while the process is frozen (cgroup v2 `cgroup.freeze`, see `freeze.py`) and the epoch is
consistent. All constants are x86_64/arm64 values from <linux/userfaultfd.h> and <linux/fs.h>.
"""

from __future__ import annotations

import ctypes
import os
import platform

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.ioctl.restype = ctypes.c_int
_libc.ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p]
_libc.process_vm_readv.restype = ctypes.c_ssize_t

_NR_USERFAULTFD = {"x86_64": 323, "aarch64": 282}.get(platform.machine())
UFFD_API = 0xAA
UFFD_FEATURE_WP_HUGETLBFS_SHMEM = 1 << 12
UFFD_FEATURE_WP_UNPOPULATED = 1 << 13
UFFD_FEATURE_WP_ASYNC = 1 << 15
UFFDIO_REGISTER_MODE_WP = 1 << 1
UFFDIO_WRITEPROTECT_MODE_WP = 1 << 0
PM_SCAN_WP_MATCHING = 1 << 0
PM_SCAN_CHECK_WPASYNC = 1 << 1
PAGE_IS_WRITTEN = 1 << 1


def _iowr(kind: int, nr: int, size: int) -> int:
    return (3 << 30) | (size << 16) | (kind << 8) | nr


class _UffdioApi(ctypes.Structure):
    _fields_ = [("api", ctypes.c_uint64), ("features", ctypes.c_uint64), ("ioctls", ctypes.c_uint64)]


class _UffdioRange(ctypes.Structure):
    _fields_ = [("start", ctypes.c_uint64), ("len", ctypes.c_uint64)]


class _UffdioRegister(ctypes.Structure):
    _fields_ = [("range", _UffdioRange), ("mode", ctypes.c_uint64), ("ioctls", ctypes.c_uint64)]


class _UffdioWriteprotect(ctypes.Structure):
    _fields_ = [("range", _UffdioRange), ("mode", ctypes.c_uint64)]


class _PageRegion(ctypes.Structure):
    _fields_ = [("start", ctypes.c_uint64), ("end", ctypes.c_uint64), ("categories", ctypes.c_uint64)]


class _PmScanArg(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint64) for name in (
        "size", "flags", "start", "end", "walk_end", "vec", "vec_len", "max_pages",
        "category_inverted", "category_mask", "category_anyof_mask", "return_mask")]


class _Iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


UFFDIO_API = _iowr(0xAA, 0x3F, ctypes.sizeof(_UffdioApi))
UFFDIO_REGISTER = _iowr(0xAA, 0x00, ctypes.sizeof(_UffdioRegister))
UFFDIO_WRITEPROTECT = _iowr(0xAA, 0x06, ctypes.sizeof(_UffdioWriteprotect))
PAGEMAP_SCAN = _iowr(ord("f"), 16, ctypes.sizeof(_PmScanArg))
IOV_MAX = 1024
SCAN_VEC = 4096  # regions per PAGEMAP_SCAN call (the walk resumes at walk_end)


class TrackingUnavailable(OSError):
    """The kernel lacks what tracking needs (userfaultfd WP async, PAGEMAP_SCAN); says which."""


def _ioctl(fd: int, request: int, arg: ctypes.Structure, what: str) -> int:
    rc = _libc.ioctl(fd, request, ctypes.byref(arg))
    if rc < 0:
        err = ctypes.get_errno()
        raise TrackingUnavailable(err, f"{what}: {os.strerror(err)}")
    return rc


def protect_region(addr: int, length: int) -> int:
    """Inside the tracked process: register [addr, addr+length) for async write-protect tracking and
    protect it. Returns the userfaultfd (keep it open: closing it ends tracking)."""
    if _NR_USERFAULTFD is None:
        raise TrackingUnavailable(0, f"userfaultfd syscall number unknown on {platform.machine()}")
    fd = _libc.syscall(_NR_USERFAULTFD, os.O_CLOEXEC | os.O_NONBLOCK)
    if fd < 0:
        err = ctypes.get_errno()
        raise TrackingUnavailable(err, f"userfaultfd(): {os.strerror(err)} (vm.unprivileged_userfaultfd=0 "
                                       "needs CAP_SYS_PTRACE, or pass UFFD_USER_MODE_ONLY)")
    try:
        arm(fd, addr, length)
    except OSError:
        os.close(fd)
        raise
    return fd


def arm(fd: int, addr: int, length: int) -> None:
    """Enable async write-protect on a fresh userfaultfd and protect [addr, addr+length) of *its* mm.
    The ioctls act on the mm the fd was created in, whoever calls them: the VM path creates the fd
    inside QEMU (vm_track.py) and arms it from the node."""
    api = _UffdioApi(UFFD_API, UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED
                     | UFFD_FEATURE_WP_HUGETLBFS_SHMEM, 0)
    _ioctl(fd, UFFDIO_API, api, "UFFDIO_API with WP_ASYNC (needs Linux >= 6.7)")
    _ioctl(fd, UFFDIO_REGISTER, _UffdioRegister(_UffdioRange(addr, length), UFFDIO_REGISTER_MODE_WP, 0),
           "UFFDIO_REGISTER (write-protect mode)")
    _ioctl(fd, UFFDIO_WRITEPROTECT, _UffdioWriteprotect(_UffdioRange(addr, length), UFFDIO_WRITEPROTECT_MODE_WP),
           "UFFDIO_WRITEPROTECT")


def scan_written(pid: int | str, addr: int, length: int) -> list[int]:
    """Page indexes (relative to addr) written since the previous scan; re-protects them atomically."""
    vec = (_PageRegion * SCAN_VEC)()
    pages: list[int] = []
    fd = os.open(f"/proc/{pid}/pagemap", os.O_RDONLY)
    try:
        start, end = addr, addr + length
        while start < end:
            arg = _PmScanArg(size=ctypes.sizeof(_PmScanArg), flags=PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC,
                             start=start, end=end, vec=ctypes.addressof(vec), vec_len=SCAN_VEC,
                             category_mask=PAGE_IS_WRITTEN, return_mask=PAGE_IS_WRITTEN)
            n = _ioctl(fd, PAGEMAP_SCAN, arg, "PAGEMAP_SCAN (needs Linux >= 6.7)")
            for r in vec[:n]:
                pages.extend(range((r.start - addr) // PAGE_SIZE, (r.end - addr) // PAGE_SIZE))
            if arg.walk_end <= start:
                break
            start = arg.walk_end
    finally:
        os.close(fd)
    return pages


def read_pages(pid: int, addr: int, pages: list[int]) -> dict[int, bytes]:
    """Copy the given pages out of the process with process_vm_readv."""
    out: dict[int, bytes] = {}
    for i in range(0, len(pages), IOV_MAX):
        batch = pages[i: i + IOV_MAX]
        buf = ctypes.create_string_buffer(len(batch) * PAGE_SIZE)
        local = (_Iovec * len(batch))(*[_Iovec(ctypes.addressof(buf) + k * PAGE_SIZE, PAGE_SIZE)
                                        for k in range(len(batch))])
        remote = (_Iovec * len(batch))(*[_Iovec(addr + p * PAGE_SIZE, PAGE_SIZE) for p in batch])
        n = _libc.process_vm_readv(pid, local, len(batch), remote, len(batch), 0)
        if n != len(batch) * PAGE_SIZE:
            err = ctypes.get_errno()
            raise OSError(err, f"process_vm_readv of {len(batch)} pages from pid {pid}: {os.strerror(err)}")
        raw = buf.raw
        for k, p in enumerate(batch):
            out[p] = raw[k * PAGE_SIZE: (k + 1) * PAGE_SIZE]
    return out
