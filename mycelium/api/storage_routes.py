"""Control-API handlers for `mycelium storage …` (the CLI and the daemon share one machine: files
are passed by path, the daemon reads or writes them itself)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import trio

from mycelium.api import protocol
from mycelium.api.server import ApiError, ControlServer, Request

MAX_PUT_BYTES = 64 << 30  # = catalog.MAX_CHUNKS_PER_FILE × chunks.CHUNK_BYTES; puts are streamed, not held whole


def install_storage_routes(server: ControlServer, node: Any) -> None:
    def storage():
        session = node.session
        svc = getattr(session, "storage", None) if session else None
        if svc is None:
            reason = getattr(session, "storage_unavailable", None) or "the node's network session is not running yet"
            raise ApiError(503, "storage_unavailable", reason, "retry in a moment; `mycelium status` shows the session")
        return svc

    def names(body: dict, *need: str) -> list[str]:
        out = []
        for key in need:
            v = body.get(key)
            if not isinstance(v, str) or not v:
                raise ApiError(400, "bad_request", f"storage request needs {key}")
            out.append(v)
        return out

    async def guarded(coro):
        from mycelium.storage.catalog import CatalogError
        from mycelium.storage.node import MissingRanges, NoSuchFile, PutFailed
        from mycelium.storage.roots import RootConflict
        from mycelium.storage.volumes import VolumeOpError

        try:
            return await coro
        except NoSuchFile as exc:
            raise ApiError(404, "no_such_file", str(exc)) from None
        except MissingRanges as exc:
            raise ApiError(409, "missing_ranges", str(exc), "shares are lost or their holders down; "
                           "`mycelium storage status` shows repair progress") from None
        except PutFailed as exc:
            raise ApiError(409, "put_failed", str(exc), "nothing was written; retry when more devices are up") from None
        except (RootConflict, CatalogError, VolumeOpError) as exc:
            raise ApiError(409, "refused", str(exc)) from None

    async def put(req: Request) -> tuple[int, Any]:
        body = req.body if isinstance(req.body, dict) else {}
        volume, name, path = names(body, "volume", "name", "path")
        p = Path(path)
        if not p.is_absolute() or not p.is_file():
            raise ApiError(400, "bad_request", f"{path} is not an absolute path to a readable file")
        if p.stat().st_size > MAX_PUT_BYTES:
            raise ApiError(400, "too_large", f"{path} is over {MAX_PUT_BYTES} bytes, the limit of one put")
        return 200, await guarded(storage().put(volume, name, p))  # streamed: read chunk by chunk

    async def get(req: Request) -> tuple[int, Any]:
        body = req.body if isinstance(req.body, dict) else {}
        volume, name, dest = names(body, "volume", "name", "dest")
        data = await guarded(storage().node.get_file(volume, name))
        await trio.to_thread.run_sync(_write_atomic, Path(dest), data)
        return 200, {"volume": volume, "name": name, "size": len(data), "dest": dest}

    async def ls(req: Request) -> tuple[int, Any]:
        volume = req.query.get("volume", "")
        svc = storage()
        vols = [volume] if volume else await svc.roots.volumes()
        out = []
        for v in vols:
            for e in await guarded(svc.node.list_files(v)):
                out.append({"volume": v, "name": e.path, "size": e.size, "version": e.version,
                            "chunks": len(e.chunks), "mtime_ms": e.mtime_ms})
        return 200, {"files": out}

    async def rm(req: Request) -> tuple[int, Any]:
        body = req.body if isinstance(req.body, dict) else {}
        volume, name = names(body, "volume", "name")
        await guarded(storage().remove(volume, name))
        return 200, {"volume": volume, "name": name, "removed": True}

    async def status(_req: Request) -> tuple[int, Any]:
        return 200, storage().status()

    server.route("POST", protocol.STORAGE_PUT, put)
    server.route("POST", protocol.STORAGE_GET, get)
    server.route("GET", protocol.STORAGE_LS, ls)
    server.route("POST", protocol.STORAGE_RM, rm)
    server.route("GET", protocol.STORAGE_STATUS, status)


def _write_atomic(dest: Path, data: bytes) -> None:
    tmp = dest.with_name(f".{dest.name}.mycelium-tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, dest)
