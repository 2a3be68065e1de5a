"""CLI for self-upgrade: `mycelium release publish FILE.whl [--notes TEXT] [--min-from V]`,
`mycelium release status [--json]`, and the node + network versions `mycelium version` shows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from mycelium.api import protocol


def register(cli: click.Group) -> None:
    from mycelium.cli.main import call, emit_json, fail

    @cli.group()
    def release() -> None:
        """Publish a Mycelium release to the network and follow its rollout."""

    @release.command("publish")
    @click.argument("wheel", type=click.Path(path_type=Path, dir_okay=False))
    @click.option("--notes", default="", help="What changed (shown in `mycelium release status`).")
    @click.option("--min-from", "min_from", metavar="VERSION",
                  help="Oldest version that may upgrade to it by itself (default: the network's current version).")
    @click.pass_obj
    def publish(ctx: Any, wheel: Path, notes: str, min_from: str | None) -> None:
        """Publish WHEEL (admins only): the network installs it on every node, staged, peer to peer."""
        from mycelium.release.wheel import WheelError, inspect

        if not wheel.is_file():
            fail(f"{wheel} does not exist", "build a wheel with `pip wheel --no-deps -w dist .` in a checkout")
        try:
            info = inspect(wheel)  # refused here before the daemon is bothered
        except WheelError as exc:
            fail(str(exc), "publish a wheel of mycelium built with `pip wheel --no-deps -w dist .`")
        res = call(ctx, "POST", protocol.RELEASE_PUBLISH,
                   {"path": str(wheel.absolute()), "notes": notes, "min_from": min_from})
        click.echo(f"submitted: release {info.version} (sha256 {res['sha256'][:16]}…, {res['size']} bytes, "
                   f"upgrades nodes from {res['min_from']} on)")
        click.echo("  the rollout starts once it is decided; follow it with `mycelium release status`")

    @release.command("status")
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_obj
    def status(ctx: Any, as_json: bool) -> None:
        """The network's current and target versions, and where each node stands."""
        st = call(ctx, "GET", protocol.RELEASE_STATUS)
        if as_json:
            emit_json(st)
            return
        render_status(st)


def render_status(st: dict) -> None:
    me, rollout = st["node"], st["rollout"]
    click.echo(f"this node: {me['version']}" + (f"  (held back: {me['held_back']})" if me["held_back"] else "")
               + (f"  [{me['activity']}]" if me["activity"] not in ("idle", "not running") else ""))
    if rollout is None:
        click.echo("network: no Primary yet")
        return
    click.echo(f"network version: {rollout['network_version'] or 'unknown'}   target: {rollout['target'] or 'none published'}")
    if rollout["failed"]:
        click.echo(f"release {rollout['target']} FAILED, rollout stopped: {rollout['failed']}")
    if rollout["target"]:
        notes = st["published"].get(rollout["target"], {}).get("notes")
        if notes:
            click.echo(f"notes: {notes}")
    for node, p in rollout["nodes"].items():
        mark = " (canary)" if node == rollout["canary"] else ""
        click.echo(f"  {node[:16]}…{mark:9} {p['version'] or '?':10} {p['state']:12} {p['action']:8} {p['reason']}")


def network_versions(ctx: Any) -> dict | None:
    """The running node's and the network's versions (None: no daemon answers)."""
    from mycelium.api.client import ClientError

    try:
        st = ctx.client().request("GET", protocol.RELEASE_STATUS, timeout_s=2)
    except ClientError:
        return None
    rollout = st.get("rollout") or {}
    return {"node_version": st["node"]["version"], "network_version": rollout.get("network_version"),
            "target_version": rollout.get("target")}
