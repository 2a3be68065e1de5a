"""CLI commands for governance: `admin add|remove NODE`, `network set KEY=VALUE…`, `network show`,
`invite list`, `invite revoke ID`, `remove NODE`. Each is a signed consensus operation; the daemon
checks it against the current Primary first, so a wrong one is refused and changes nothing."""

from __future__ import annotations

from typing import Any

import click

from mycelium.api import protocol


def register(cli: click.Group, network: click.Group, invite: click.Group) -> None:
    from mycelium.cli.main import call, emit_json, fail

    @cli.group()
    def admin() -> None:
        """Add or remove network admins (they may deploy, change parameters, remove members)."""

    @admin.command("add")
    @click.argument("node")
    @click.pass_obj
    def admin_add(ctx: Any, node: str) -> None:
        """Make member NODE (id or unique prefix) an admin."""
        res = call(ctx, "POST", protocol.ADMIN, {"action": "add", "node": node})
        click.echo(f"submitted: {res['node'][:16]}… becomes an admin once decided (`mycelium network show`)")

    @admin.command("remove")
    @click.argument("node")
    @click.pass_obj
    def admin_remove(ctx: Any, node: str) -> None:
        """Take the admin right from NODE (the last admin cannot be removed)."""
        res = call(ctx, "POST", protocol.ADMIN, {"action": "remove", "node": node})
        click.echo(f"submitted: {res['node'][:16]}… is no longer an admin once decided")

    @network.command("set")
    @click.argument("assignments", nargs=-1, required=True, metavar="KEY=VALUE...")
    @click.pass_obj
    def network_set(ctx: Any, assignments: tuple[str, ...]) -> None:
        """Change network parameters by consensus (admins only); bounds in `mycelium network show`."""
        changes: dict[str, int] = {}
        for item in assignments:
            key, sep, value = item.partition("=")
            if not sep or not key:
                fail(f"{item!r} is not KEY=VALUE", "e.g. `mycelium network set heartbeat_s=5 dead_after_s=60`")
            try:
                changes[key] = int(value)
            except ValueError:
                fail(f"{key} must be an integer, got {value!r}", "parameters are whole numbers (seconds, counts)")
        res = call(ctx, "POST", protocol.NETWORK_SET, {"set": changes})
        click.echo("submitted: " + ", ".join(f"{k}={v}" for k, v in sorted(res["set"].items()))
                   + " (in effect once decided; check `mycelium network show`)")

    @network.command("show")
    @click.option("--json", "as_json", is_flag=True, help="Print the network DTO as JSON.")
    @click.pass_obj
    def network_show(ctx: Any, as_json: bool) -> None:
        """Show the network's scheme, admins, parameters (with bounds) and secret generation."""
        res = call(ctx, "GET", protocol.NETWORK_SHOW)
        if as_json:
            emit_json(res)
            return
        scheme = "post-quantum (Ed25519 + ML-DSA-65)" if res["post_quantum"] else "classic (Ed25519)"
        click.echo(f"network {res['network_name']} ({res['network_id'][:16]}), {scheme}")
        click.echo(f"  height {res['height']}, {res['members']} member(s), secret generation "
                   f"{res['secret_generation']}" + (" — rekey due" if res["rekey_due"] else ""))
        click.echo("  admins: " + (", ".join(a[:16] + "…" for a in res["admins"]) or "none"))
        for key, value in sorted(res["params"].items()):
            b = res["bounds"][key]
            click.echo(f"  {key:<18} {value:>8}   [{b['min']}–{b['max']}]  {b['meaning']}")

    @invite.command("list")
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_obj
    def invite_list(ctx: Any, as_json: bool) -> None:
        """List the invites this node issued, with their state (valid, used, expired, revoked)."""
        res = call(ctx, "GET", protocol.INVITES)
        if as_json:
            emit_json(res)
            return
        if not res["invites"]:
            click.echo("no invites issued by this node (`mycelium invite` makes one)")
        for row in res["invites"]:
            click.echo(f"{row['id']}  {row['state']:<8} used {row['used']}/{row['uses']}  expires_s {row['expires_s']}")

    @invite.command("revoke")
    @click.argument("invite_id", metavar="ID")
    @click.pass_obj
    def invite_revoke(ctx: Any, invite_id: str) -> None:
        """Revoke invite ID (admins only): joins with it are refused from then on."""
        res = call(ctx, "POST", protocol.INVITE_REVOKE, {"id": invite_id})
        click.echo(f"submitted: invite {res['id']} is revoked once decided")

    @cli.command("remove")
    @click.argument("node")
    @click.pass_obj
    def remove(ctx: Any, node: str) -> None:
        """Remove member NODE (admins only); the network secret then rotates so it cannot come back."""
        res = call(ctx, "POST", protocol.REMOVE, {"node": node})
        click.echo(f"submitted: {res['node'][:16]}… is removed once decided; {res['rekey']}")
