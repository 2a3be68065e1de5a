"""`mycelium ui` (the network page, served by the local daemon) and `mycelium top` (the same
picture in the terminal, rich's Live view), plus the `up --ui` options."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import click

from mycelium.api import protocol
from mycelium.api.client import ClientError

UI_LISTEN_HELP = ("Serve the page on HOST:PORT (default 127.0.0.1 and a free port). Another interface "
                  "(e.g. 0.0.0.0:8470) is reachable by others on the LAN: its data still needs the token.")


def start_ui(call: Any, ctx: Any, listen: str | None) -> dict:
    return call(ctx, "POST", protocol.UI, {"listen": listen} if listen else {})


def print_ui(info: dict) -> None:
    click.echo(f"network page: {info['url']}")
    where = "this machine only" if info.get("loopback_only") else f"{info['host']} (others on that network too)"
    click.echo(f"# served by the daemon on {where}, port {info['port']}; the token in the URL is needed "
               "for its data and changes when the daemon restarts", err=True)


def _write_secret(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, text.encode() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def register(cli: click.Group, call: Any, emit_json: Any) -> None:
    @cli.command()
    @click.option("--listen", "listen", metavar="HOST:PORT", help=UI_LISTEN_HELP)
    @click.option("--open", "open_browser", is_flag=True, help="Open it in this machine's web browser.")
    @click.option("--json", "as_json", is_flag=True, help="Print url, host, port and token as JSON.")
    @click.option("--token-file", type=click.Path(dir_okay=False, path_type=Path),
                  help="Also write the token to this file (0600), e.g. for Prometheus' credentials_file.")
    @click.pass_obj
    def ui(ctx: Any, listen: str | None, open_browser: bool, as_json: bool, token_file: Path | None) -> None:
        """Print the URL of the network page (the daemon starts serving it if it was not)."""
        info = start_ui(call, ctx, listen)
        if token_file is not None:
            _write_secret(token_file, info["token"])
        emit_json(info) if as_json else print_ui(info)
        if open_browser:
            import webbrowser

            webbrowser.open(info["url"])

    @cli.command()
    @click.option("--interval", default=1.0, show_default=True, type=click.FloatRange(0.2, 60),
                  help="Seconds between refreshes.")
    @click.option("--once", is_flag=True, help="Print the picture once and exit (no live view).")
    @click.pass_obj
    def top(ctx: Any, interval: float, once: bool) -> None:
        """The network at a glance in the terminal, refreshed live (Ctrl-C to quit)."""
        from rich.console import Console
        from rich.live import Live

        from mycelium.cli.top import render

        console = Console()
        first = call(ctx, "GET", protocol.NETVIEW)  # no daemon: exit 3 with the command that starts one
        if once:
            console.print(render(first, refresh=1))
            return
        client = ctx.client()
        refresh = 0
        try:
            with Live(console=console, screen=True, auto_refresh=False) as live:
                while True:
                    refresh += 1
                    try:  # the daemon may restart under us: say so and keep trying
                        view = render(first if refresh == 1 else client.get(protocol.NETVIEW), refresh=refresh)
                    except ClientError as exc:
                        view = render(None, refresh=refresh, error=exc.message)
                    live.update(view, refresh=True)
                    time.sleep(interval)
        except KeyboardInterrupt:
            pass
