"""What the daemon holds for the views: the network gauges collector on /metrics, and the page's
web server — started on request (`mycelium ui`, or `mycelium up --ui`), once per daemon run, with
a random token drawn then (the URL printed carries it; a restarted daemon draws a new one)."""

from __future__ import annotations

import secrets
import sys
from typing import Any

import trio

from mycelium.netview.gauges import NetworkCollector
from mycelium.netview.web import WebServer, url_for
from mycelium.observability.logs import get_logger

log = get_logger("mycelium.netview")

DEFAULT_LISTEN = "127.0.0.1:0"  # loopback, a free port


class UiError(Exception):
    """The page cannot be served as asked (a bad --ui-listen, a taken port)."""


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = text, "0"
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise UiError(f"--ui-listen {text!r}: expected HOST:PORT (e.g. 127.0.0.1:8470, or 0.0.0.0:8470 for every "
                      "interface); PORT 0 picks a free one")
    return host, int(port)


class NetView:
    def __init__(self, node: Any) -> None:
        self.node = node
        self.web: WebServer | None = None
        self.listen: tuple[str, int] | None = None
        self._nursery: trio.Nursery | None = None
        self._lock = trio.Lock()
        node.metrics.registry.register(NetworkCollector(lambda: node.session))

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            listen = getattr(self.node, "ui_listen", None)  # `mycelium up --ui` in the foreground
            if listen:
                try:
                    info = await self.start_ui(listen)
                    print(f"network page: {info['url']}", file=sys.stderr, flush=True)
                except UiError as exc:
                    print(f"error: {exc}", file=sys.stderr, flush=True)
            await trio.sleep_forever()

    def snapshot(self) -> dict:
        from mycelium.netview.snapshot import gather

        return gather(self.node)

    def _metrics(self) -> tuple[str, bytes]:
        from mycelium.observability.metrics import CONTENT_TYPE

        return CONTENT_TYPE, self.node.metrics.exposition()

    async def start_ui(self, listen: str | None = None) -> dict:
        """Serve the page (idempotent: a second call returns the running one's URL). A different
        `listen` than the running one's is refused: one page per daemon."""
        host, port = parse_listen(listen or DEFAULT_LISTEN)
        async with self._lock:
            if self.web is not None:
                if listen is not None and (host, port) != self.listen and not (port == 0 and host == self.listen[0]):
                    raise UiError(f"the page is already served on {self.listen[0]}:{self.web.port}; "
                                  "restart the daemon to serve it elsewhere")
                return self.info()
            if self._nursery is None:
                raise UiError("the daemon is still starting; retry in a moment")
            web = WebServer(secrets.token_urlsafe(24), self.snapshot, self._metrics)
            try:
                await self._nursery.start(web.serve, host, port)
            except OSError as exc:
                raise UiError(f"cannot serve the page on {host}:{port}: {exc.strerror or exc}; "
                              "pick another with --ui-listen HOST:PORT") from None
            self.web, self.listen = web, (host, port)
            log.info("serving the network page", host=host, port=web.port)
            return self.info()

    def info(self) -> dict:
        web = self.web
        if web is None:
            return {"serving": False}
        host = self.listen[0]
        return {"serving": True, "host": host, "port": web.port, "token": web.token,
                "url": url_for(host, web.port, web.token), "loopback_only": host in ("127.0.0.1", "::1", "localhost")}
