"""Volumes for workloads: a manifest's `volumes:` mounted into each instance's working directory.

    mounts = WorkloadVolumes(session, state_dir / "volumes")   # the process driver's `volumes`
    await mounts.attach("app", workdir / "data", nursery)       # mounts once per node, links per instance
    await mounts.detach("app", workdir / "data")                # the last user unmounts

The node mounts a volume once, at `<root>/<volume>/mnt` (FUSE through storage.mount, so the
consistency model is volume_fs's: close-to-open per file, one writer node per volume), and every
instance on this node that names it gets a symlink `<workdir>/<path>` → that mount. The node takes
the volume's writer lease before mounting and renews it while mounted; when another node holds the
lease the mount is read-only. The last instance to stop unmounts. pyfuse3 serves one mount per
process, so a node mounts at most one volume at a time: a second is refused with that reason.

`deploy_refusal` is what the deploy route asks before submitting a spec with volumes.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import trio

from mycelium.observability.logs import get_logger
from mycelium.storage.mount import fuse_unavailable, serve_volume
from mycelium.storage.roots import RootConflict
from mycelium.storage.volumes import LEASE_S, VOLUMES

log = get_logger("mycelium.storage.mounts")


class VolumeMountError(RuntimeError):
    """A volume cannot be mounted for an instance here; the message says why."""


def deploy_refusal(volumes: Any, head: Any, storage: Any, unavailable: str | None = None) -> tuple[str, str] | None:
    """(what and why, the next command) when a spec naming `volumes` must not be deployed, else None."""
    if not volumes:
        return None
    names = ", ".join(repr(v.name) for v in volumes)
    if storage is None:
        return (f"the spec mounts volume {names}, but the distributed store is not running on this node"
                f" ({unavailable or 'the session is starting'})", "retry in a moment; `mycelium storage status` shows why")
    reason = fuse_unavailable()
    if reason is not None:
        return (f"the spec mounts volume {names} through FUSE, which this node cannot do: {reason}",
                "install FUSE here (Debian fuse3, `pip install 'mycelium[fuse]'`) or deploy without `volumes:`")
    declared = head.params.get(VOLUMES, {}) if head is not None else {}
    for v in volumes:
        if v.name not in declared:
            return (f"volume {v.name!r} does not exist in this network (a deploy never creates one)",
                    f"create it with `mycelium storage put FILE --volume {v.name}`, then deploy again; "
                    "`mycelium storage status` lists the volumes")
    return None


@dataclass
class _Mount:
    scope: trio.CancelScope
    fs: Any
    mountpoint: Path
    users: set[Path] = field(default_factory=set)


class WorkloadVolumes:
    def __init__(self, session: Any, root: Path) -> None:
        self.session = session
        self.root = Path(root)
        self._mounts: dict[str, _Mount] = {}
        self._lock = trio.Lock()

    def _storage(self) -> Any:
        storage = getattr(self.session, "storage", None)
        if storage is None:
            why = getattr(self.session, "storage_unavailable", None) or "the distributed store is not running yet"
            raise VolumeMountError(f"cannot mount volumes: {why}")
        return storage

    async def attach(self, volume: str, link: Path, nursery: trio.Nursery) -> None:
        async with self._lock:
            mount = self._mounts.get(volume)
            if mount is None:
                mount = await self._mount(volume, nursery)
            link = Path(link)
            link.parent.mkdir(parents=True, exist_ok=True)
            if link.is_symlink() or link.is_file():
                link.unlink()  # a link left by an earlier run of this instance
            elif link.is_dir():
                if any(link.iterdir()):
                    raise VolumeMountError(f"{link} already holds files; the volume would hide them")
                link.rmdir()
            link.symlink_to(mount.mountpoint, target_is_directory=True)
            mount.users.add(link)

    async def detach(self, volume: str, link: Path) -> None:
        async with self._lock:
            mount = self._mounts.get(volume)
            link = Path(link)
            if link.is_symlink():
                link.unlink()
            if mount is None:
                return
            mount.users.discard(link)
            if not mount.users:
                del self._mounts[volume]
                mount.scope.cancel()  # serve_volume unmounts on its way out
                log.info("volume unmounted", volume=volume, mountpoint=str(mount.mountpoint))

    async def _mount(self, volume: str, nursery: trio.Nursery) -> _Mount:
        storage = self._storage()
        reason = fuse_unavailable()
        if reason is not None:
            raise VolumeMountError(f"cannot mount volume {volume!r}: {reason}")
        if self._mounts:
            raise VolumeMountError(f"this node already mounts volume {next(iter(self._mounts))!r}; pyfuse3 serves "
                                   "one FUSE mount per process, so a node mounts one volume at a time")
        if volume not in await storage.roots.volumes():
            raise VolumeMountError(f"volume {volume!r} does not exist; create it with `mycelium storage put FILE --volume {volume}`")
        try:
            await storage.roots.ensure_writer(volume)
            writable = True
        except RootConflict as exc:
            writable = False  # another node writes it: read-only here (the one-writer rule)
            log.warning("volume mounted read-only", volume=volume, reason=str(exc))
        base = self.root / volume
        mountpoint, staging = base / "mnt", base / "staging"
        await _unmount_stale(mountpoint)
        shutil.rmtree(staging, ignore_errors=True)  # copies of a crashed mount: never committed, never visible
        scope, fs = await nursery.start(self._serve, storage, volume, mountpoint, staging, writable)
        log.info("volume mounted", volume=volume, mountpoint=str(mountpoint), writable=writable)
        self._mounts[volume] = mount = _Mount(scope, fs, mountpoint)
        return mount

    async def _serve(self, storage: Any, volume: str, mountpoint: Path, staging: Path, writable: bool,
                     task_status=trio.TASK_STATUS_IGNORED) -> None:
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as n:
                fs = await n.start(partial(serve_volume, storage.node, volume, mountpoint, staging, writable=writable))
                if writable:
                    n.start_soon(self._renew, storage, volume)
                task_status.started((scope, fs))

    async def _renew(self, storage: Any, volume: str) -> None:
        while True:
            await trio.sleep(LEASE_S / 6)
            try:
                await storage.roots.ensure_writer(volume)  # renews when a third of the lease is left
            except RootConflict as exc:
                log.error("volume lease lost; closes of modified files will fail", volume=volume, error=str(exc))


async def _unmount_stale(mountpoint: Path) -> None:
    """A mount left by a killed daemon answers nothing (ENOTCONN): lazily detach it first."""
    if shutil.which("fusermount3") is not None and mountpoint.parent.is_dir():
        await trio.run_process(["fusermount3", "-u", "-z", str(mountpoint)], capture_stdout=True,
                               capture_stderr=True, check=False)
