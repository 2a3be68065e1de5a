"""Control-API handlers of the network views (mycelium.netview): the picture for `mycelium top`,
and starting the page's web server for `mycelium ui`."""

from __future__ import annotations

from typing import Any

from mycelium.api import protocol
from mycelium.api.server import ApiError, ControlServer, Request


def install_netview_routes(server: ControlServer, node: Any) -> None:
    async def netview(_req: Request) -> tuple[int, Any]:
        return 200, node.netview.snapshot()

    async def ui(req: Request) -> tuple[int, Any]:
        from mycelium.netview.service import UiError

        body = req.body if isinstance(req.body, dict) else {}
        listen = body.get("listen")
        if listen is not None and not isinstance(listen, str):
            raise ApiError(400, "bad_request", "listen must be a HOST:PORT string")
        try:
            return 200, await node.netview.start_ui(listen)
        except UiError as exc:
            raise ApiError(409, "ui_refused", str(exc), "see `mycelium ui --help`") from None

    server.route("GET", protocol.NETVIEW, netview)
    server.route("POST", protocol.UI, ui)
