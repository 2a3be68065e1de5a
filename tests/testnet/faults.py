"""Host-level faults for real daemons: clock skew and a full disk.

Clock skew: libfaketime is not installed here (and installing it would add a system dependency to
./scripts/test), so a daemon's wall clock is skewed from inside Python instead: `clock_skew_env(s)`
returns env that puts a `sitecustomize` on PYTHONPATH which shifts time.time()/time.time_ns() by `s`
seconds at interpreter start, before mycelium is imported. That is every wall-clock read the daemon
makes (Latent timestamps and validation, operation timestamps, invites); trio's monotonic clock,
which drives timeouts, is untouched, as it would be on a real machine with a skewed RTC.

Disk full: `small_tmpfs(path, size_kib)` mounts a tmpfs of that size (root only), and
`fill_disk(path)` fills what is left with one file, returned so the test can delete it.
"""

from __future__ import annotations

import os
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

SKEW_VAR = "MYCELIUM_TEST_CLOCK_SKEW_S"
_SITECUSTOMIZE = '''\
"""Test-only clock skew for a daemon under test (tests/testnet/faults.py)."""
import os as _os
import time as _time

_skew = float(_os.environ.get("{var}", "0") or 0)
if _skew:
    _wall, _wall_ns = _time.time, _time.time_ns
    _time.time = lambda: _wall() + _skew
    _time.time_ns = lambda: _wall_ns() + int(_skew * 1e9)
'''


def clock_skew_env(skew_s: float, workdir: Path) -> dict[str, str]:
    """Env for a daemon whose wall clock runs `skew_s` seconds ahead (negative: behind)."""
    site = workdir / "skew-site"
    site.mkdir(parents=True, exist_ok=True)
    (site / "sitecustomize.py").write_text(_SITECUSTOMIZE.format(var=SKEW_VAR))
    path = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)
    return {SKEW_VAR: str(skew_s), "PYTHONPATH": path}


def tmpfs_unavailable_reason() -> str | None:
    if os.geteuid() != 0:
        return "mounting a small tmpfs (disk-full test) needs root"
    return None


@contextmanager
def small_tmpfs(path: Path, size_kib: int) -> Iterator[Path]:
    """A tmpfs of `size_kib` KiB mounted at `path` for the block; always unmounted after."""
    path.mkdir(parents=True, exist_ok=True)
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kib}k,mode=0700", "tmpfs", str(path)],
                         capture_output=True, text=True, timeout=20)
    if res.returncode != 0:
        raise RuntimeError(f"cannot mount a tmpfs at {path}: {res.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=20)


def fill_disk(directory: Path, leave_bytes: int = 0) -> Path:
    """Fill the filesystem holding `directory` until at most `leave_bytes` are free; the filler file."""
    filler = directory / "filler"
    chunk = b"\0" * 65536
    with open(filler, "wb") as f:
        try:
            while True:
                free = os.statvfs(directory).f_bavail * os.statvfs(directory).f_frsize
                if free <= leave_bytes:
                    break
                f.write(chunk[: max(1, min(len(chunk), free - leave_bytes))])
                f.flush()
        except OSError:
            pass  # ENOSPC: full, which is the point
    return filler
