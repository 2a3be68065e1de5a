"""Control-API handlers for self-upgrade: `release publish` and `release status` (mycelium.release)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio

from mycelium import __version__
from mycelium.api import protocol
from mycelium.api.governance_routes import _body, _head
from mycelium.api.server import ApiError, ControlServer, Request


def install_release_routes(server: ControlServer, node: Any) -> None:
    async def publish(req: Request) -> tuple[int, Any]:
        from mycelium.daemon import SessionNotRunning
        from mycelium.release.agent import publish as prepare
        from mycelium.release.wheel import WheelError
        from mycelium.roles.readonly import ReadOnlyMode

        body = _body(req)
        path, notes, min_from = body.get("path"), body.get("notes", ""), body.get("min_from")
        if not (isinstance(path, str) and Path(path).is_absolute()):
            raise ApiError(400, "bad_request", f"path must be the absolute path of a wheel, got {path!r}",
                           "mycelium release publish ./dist/mycelium-X.Y.Z-py3-none-any.whl")
        if not isinstance(notes, str) or not (min_from is None or isinstance(min_from, str)):
            raise ApiError(400, "bad_request", "notes and min_from must be text")
        session = node.session
        if session is None:
            raise SessionNotRunning()
        if node.read_only():
            raise ReadOnlyMode(f"this node is in read-only mode ({node.read_only_reason()}), so it publishes nothing")
        _head(node)
        try:
            prepared = await trio.to_thread.run_sync(prepare, node, path, notes, min_from)
        except WheelError as exc:
            raise ApiError(400, "bad_wheel", str(exc), "build one with `pip wheel --no-deps .` in a checkout") from None
        await session.submit(prepared.pop("op"))
        return 202, {"status": "submitted", **prepared}

    async def status(_req: Request) -> tuple[int, Any]:
        return 200, release_status(node)

    server.route("POST", protocol.RELEASE_PUBLISH, publish)
    server.route("GET", protocol.RELEASE_STATUS, status)


def release_status(node: Any) -> dict:
    """`mycelium release status --json` (a schema we own)."""
    from mycelium.release import switch
    from mycelium.release.rollout import plan
    from mycelium.release.rules import state_of

    head = node.ledger.head
    agent = getattr(node.session, "release", None) if node.session is not None else None
    me = {"id": node.key.node_id, "version": __version__, "auto_upgrade": node.cfg.release.auto_upgrade,
          "held_back": agent.why_not() if agent else None, "activity": agent.activity if agent else "not running",
          "switch": switch.read_json(switch.record_path(node.cfg.state_dir))}
    if head is None:
        return {"node": me, "rollout": None, "published": {}}
    published = {v: {k: r[k] for k in ("sha256", "size", "min_from", "notes", "author", "t")}
                 for v, r in state_of(head.params)["published"].items()}
    return {"node": me, "rollout": plan(head).to_wire(), "published": published}
