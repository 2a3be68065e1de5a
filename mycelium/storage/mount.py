"""Mounting a volume as a directory (trio shell around `volume_fs.VolumeFS`), or saying why not.

    reason = fuse_unavailable()          # None when this node can mount volumes
    async with trio.open_nursery() as n:
        fs = await n.start(serve_volume, node, "vol", Path("/srv/app/data"), staging)

pyfuse3 serves one mount per process; a node that must mount several volumes runs one helper process
per mount (not done yet: a daemon mounts at most one volume, and says so).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import trio

from mycelium.storage.node import StorageNode


def fuse_unavailable() -> str | None:
    """Why FUSE volumes cannot be mounted here, or None when they can."""
    try:
        import pyfuse3  # noqa: F401  (only the import is checked here)
    except ImportError as exc:
        return f"pyfuse3 is not installed ({exc}); install with `pip install 'mycelium[fuse]'` and Debian `fuse3 libfuse3-dev`"
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse is missing (no FUSE in this kernel or container; run with --device /dev/fuse)"
    try:
        fd = os.open("/dev/fuse", os.O_RDWR)
        os.close(fd)
    except OSError as exc:
        return f"/dev/fuse cannot be opened: {exc.strerror} (needs root or membership of the fuse group)"
    if shutil.which("fusermount3") is None:
        return "fusermount3 is missing (Debian: apt-get install fuse3)"
    return None


_mounted = trio.Lock()  # pyfuse3 keeps one session per process


async def serve_volume(
    node: StorageNode,
    volume: str,
    mountpoint: Path,
    staging_dir: Path,
    *,
    writable: bool | None = None,
    task_status=trio.TASK_STATUS_IGNORED,
) -> None:
    """Mount `volume` at `mountpoint` until cancelled; writable only for the lease holder."""
    reason = fuse_unavailable()
    if reason is not None:
        raise RuntimeError(f"cannot mount volume {volume!r}: {reason}")
    import pyfuse3

    from mycelium.storage.volume_fs import VolumeFS

    if writable is None:
        writable = (await node.roots.lease_holder(volume)) == node.node_id
    if _mounted.locked():
        raise RuntimeError("this process already serves a FUSE mount (pyfuse3 allows one per process)")
    async with _mounted:
        Path(mountpoint).mkdir(parents=True, exist_ok=True)
        Path(staging_dir).mkdir(parents=True, exist_ok=True)
        fs = VolumeFS(node, volume, writable=writable, staging_dir=staging_dir)
        options = set(pyfuse3.default_options)
        options.add(f"fsname=mycelium-{volume}")
        if not writable:
            options.add("ro")
        pyfuse3.init(fs, str(mountpoint), options)
        try:
            task_status.started(fs)
            await pyfuse3.main()
        finally:
            with trio.CancelScope(shield=True):
                pyfuse3.close(unmount=True)
