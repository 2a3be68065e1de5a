"""`mycelium`: the node's local CLI. It talks only to the local daemon's control API.

Exit codes: 0 ok · 2 usage or bad input · 3 daemon not running · 4 daemon unreachable/unknown state.
Data goes to stdout, diagnostics to stderr; every status command has --json.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, NoReturn

import click

from mycelium import __version__
from mycelium.api import protocol
from mycelium.api.client import ClientError, ControlClient
from mycelium.cli import render
from mycelium.cli.lifecycle import run_foreground, start_detached, stop_daemon
from mycelium.config import ROLES, ConfigError, default_state_dir, load_config

EXIT_OK, EXIT_USAGE, EXIT_NOT_RUNNING, EXIT_UNREACHABLE = 0, 2, 3, 4


class Context:
    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir

    def client(self) -> ControlClient:
        return ControlClient(self.state_dir / "control.sock")


def fail(message: str, hint: str = "", code: int = EXIT_USAGE) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    if hint:
        click.echo(f"  hint: {hint}", err=True)
    sys.exit(code)


def call(ctx: Context, method: str, path: str, body: Any = None) -> Any:
    try:
        return ctx.client().request(method, path, body)
    except ClientError as exc:
        fail(exc.message, exc.hint, exc.exit_code)


def emit_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, sort_keys=True))


def parse_duration(text: str) -> int:
    """'90s', '30m', '1h', '7d' or plain seconds → seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    text = text.strip().lower()
    try:
        if text and text[-1] in units:
            value = int(text[:-1]) * units[text[-1]]
        else:
            value = int(text)
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a duration like 90s, 30m, 1h or 7d") from None
    if value <= 0:
        raise click.BadParameter("the duration must be positive")
    return value


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--state-dir", type=click.Path(path_type=Path, file_okay=False), envvar="MYCELIUM_STATE_DIR",
              help="Node state directory (default: /var/lib/mycelium as root, else the XDG data dir).")
@click.version_option(__version__, "-V", message="mycelium %(version)s")
@click.pass_context
def cli(click_ctx: click.Context, state_dir: Path | None) -> None:
    """Mycelium node: join a mesh, agree on spores, run services."""
    click_ctx.obj = Context((state_dir or default_state_dir()).expanduser().absolute())


# ------------------------------------------------------------------------------------ lifecycle
@cli.command()
@click.option("--detach", is_flag=True, help="Run in the background, logging to daemon.log in the state dir.")
@click.option("--join", "join_token", metavar="TOKEN", envvar="MYCELIUM_JOIN_TOKEN",
              help="Join the network this token invites to (env MYCELIUM_JOIN_TOKEN).")
@click.option("--listen", multiple=True, metavar="MULTIADDR", help="Mesh listen address (repeatable).")
@click.option("--bootstrap", multiple=True, metavar="MULTIADDR", help="Extra bootstrap peer address (repeatable).")
@click.option("--max-role", type=click.Choice(ROLES), help="Cap this node's role (default sclerotium).")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]))
@click.option("--ready-timeout", default=30, show_default=True, envvar="MYCELIUM_READY_TIMEOUT",
              help="With --detach: seconds to wait for ready (env MYCELIUM_READY_TIMEOUT; a slow Pi may need more).")
@click.option("--wait", is_flag=True, help="With --detach --join: show progress until admitted (up to 120 s).")
@click.option("--ui", is_flag=True, help="Also serve the network page (`mycelium ui`) and print its URL.")
@click.option("--ui-listen", metavar="HOST:PORT", help="With --ui: where (default 127.0.0.1, a free port).")
@click.pass_obj
def up(ctx: Context, detach: bool, join_token: str | None, listen: tuple[str, ...], bootstrap: tuple[str, ...],
       max_role: str | None, log_level: str | None, ready_timeout: int, wait: bool, ui: bool,
       ui_listen: str | None) -> None:
    """Run the node (foreground unless --detach)."""
    overrides = {"node": {"listen": listen or None, "bootstrap": bootstrap or None, "max_role": max_role},
                 "log": {"level": log_level}}
    try:
        cfg = load_config(ctx.state_dir, overrides=overrides)
    except ConfigError as exc:
        fail(str(exc), f"edit {ctx.state_dir / 'config.toml'} or the flag named above")
    if join_token:
        from mycelium.identity import JoinToken, TokenError

        try:
            JoinToken.decode(join_token)
        except TokenError as exc:
            fail(f"cannot join: {exc}", "ask a member of the network for a fresh token: `mycelium invite`")
    if detach:
        up_args = [*(f"--listen={a}" for a in listen), *(f"--bootstrap={a}" for a in bootstrap)]
        up_args += [f"--max-role={max_role}"] if max_role else []
        up_args += [f"--log-level={log_level}"] if log_level else []
        code, message = start_detached(cfg, up_args, join_token, ready_timeout)
        if code != EXIT_OK:
            fail(message, code=code)
        click.echo(message)
        ctx_status = call(ctx, "GET", protocol.STATUS)
        render.status(ctx_status)
        if ui or ui_listen:
            _views.print_ui(_views.start_ui(call, ctx, ui_listen))
        if wait and join_token:
            _wait_admitted(ctx, 120)
        return
    sys.exit(run_foreground(cfg, join_token, (ui_listen or "127.0.0.1:0") if ui or ui_listen else None))


@cli.command()
@click.option("--timeout", default=30, show_default=True, help="Seconds to wait for a clean stop.")
@click.pass_obj
def down(ctx: Context, timeout: int) -> None:
    """Stop the node (state is flushed first)."""
    code, message = stop_daemon(ctx.client(), ctx.state_dir, timeout)
    (click.echo if code == EXIT_OK else lambda m: click.echo(m, err=True))(message)
    sys.exit(code)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the status DTO as JSON (schema in README).")
@click.pass_obj
def status(ctx: Context, as_json: bool) -> None:
    """Show what this node is and what it sees."""
    st = call(ctx, "GET", protocol.STATUS)
    emit_json(st) if as_json else render.status(st)


@cli.command()
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def version(ctx: Context, as_json: bool) -> None:
    """Print the CLI's version, and the running node's and its network's (when a daemon answers)."""
    from mycelium.cli.release import network_versions

    info = {"version": __version__, "api_version": protocol.API_VERSION, "python": sys.version.split()[0]}
    running = network_versions(ctx)
    info.update(running or {"node_version": None, "network_version": None, "target_version": None})
    if as_json:
        emit_json(info)
        return
    click.echo(f"mycelium {__version__} (control API v{protocol.API_VERSION})")
    if running:
        target = running["target_version"]
        click.echo(f"node: {running['node_version']}   network: {running['network_version'] or 'unknown'}"
                   + (f"   release target: {target}" if target and target != running["network_version"] else ""))


# ------------------------------------------------------------------------------------ membership
@cli.group()
def network() -> None:
    """Create and inspect networks."""


@network.command("create")
@click.argument("name")
@click.option("--pq", is_flag=True, help="Post-quantum: hybrid Ed25519 + ML-DSA-65 signatures, fixed for the network's life.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def network_create(ctx: Context, name: str, pq: bool, as_json: bool) -> None:
    """Found a new network NAME with this node as its first sclerotium."""
    res = call(ctx, "POST", protocol.NETWORK_CREATE, {"name": name, "pq": pq})
    kind = " (post-quantum: Ed25519 + ML-DSA-65)" if pq else ""
    emit_json(res) if as_json else click.echo(
        f"created network {res['network_name']} ({res['network_id'][:16]}){kind}; "
        "invite others with `mycelium invite`")


@cli.group(invoke_without_command=True)
@click.option("--ttl", default="1h", show_default=True, help="How long the token stays valid (90s, 30m, 1h, 7d).")
@click.option("--uses", default=1, show_default=True, type=click.IntRange(1, 1000), help="How many nodes may join with it.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def invite(click_ctx: click.Context, ttl: str, uses: int, as_json: bool) -> None:
    """Print a join token for another device (`invite list`, `invite revoke ID`: see below)."""
    if click_ctx.invoked_subcommand is not None:
        return
    ctx = click_ctx.obj
    res = call(ctx, "POST", protocol.INVITE, {"ttl_s": parse_duration(ttl), "uses": uses})
    if as_json:
        emit_json(res)
        return
    click.echo(res["token"])
    click.echo(f"# valid for {ttl}, {uses} use(s). On the new device: ./install.sh --join <token>"
               f"  (or: mycelium join <token>)", err=True)


@cli.command()
@click.argument("token")
@click.option("--wait", is_flag=True, help="Show progress until this node is admitted (or the timeout).")
@click.option("--timeout", default=120, show_default=True, help="Seconds to wait with --wait.")
@click.pass_obj
def join(ctx: Context, token: str, wait: bool, timeout: int) -> None:
    """Join the network TOKEN invites to (the daemon must be running)."""
    res = call(ctx, "POST", protocol.JOIN, {"token": token})
    click.echo(f"joining network {res['network_name']} ({res['network_id'][:16]}); "
               + ("waiting for admission" if wait else "watch `mycelium status` for admission"))
    if wait:
        _wait_admitted(ctx, timeout)


def _wait_admitted(ctx: Context, timeout: int) -> None:
    import time

    from mycelium.cli.progress import JOIN_DONE, join_stage

    deadline, shown, line = time.monotonic() + timeout, None, ""
    while time.monotonic() < deadline:
        stage, line = join_stage(call(ctx, "GET", protocol.STATUS))
        if stage != shown:
            (click.echo if stage == JOIN_DONE else lambda m: click.echo(f"  {m}", err=True))(line)
            shown = stage
        if stage == JOIN_DONE:
            return
        time.sleep(0.5)
    fail(f"not admitted after {timeout} s (last: {line})",
         "the network's validators decide joins: `mycelium status` shows this node's view; "
         "an expired or revoked invite is refused (ask for a fresh one)", code=4)


@cli.command()
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_obj
def leave(ctx: Context, yes: bool) -> None:
    """Leave the network and fall back to a personal single-node network."""
    if not yes and not click.confirm("Leave the network? This node forgets its network secret and chain", err=True):
        fail("not confirmed", "re-run with --yes to skip the question")
    res = call(ctx, "POST", protocol.LEAVE)
    click.echo(f"left; now on personal network {res['network_name']}")


# ------------------------------------------------------------------------------------ later issues
@cli.command()
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def peers(ctx: Context, as_json: bool) -> None:
    """List mesh peers: id, addresses, role, connected, latency, last seen."""
    res = call(ctx, "GET", protocol.PEERS)
    emit_json(res) if as_json else render.peers(res)


@cli.command()
@click.argument("kind", required=False, type=click.Choice(["primary", "seed", "latent"]))
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def spores(ctx: Context, kind: str | None, as_json: bool) -> None:
    """Show the Primary, Seed and Latent spores this node holds."""
    res = call(ctx, "GET", protocol.SPORES + (f"?kind={kind}" if kind else ""))
    emit_json(res) if as_json else render.spores(res)


@cli.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--wait", is_flag=True, help="Wait until every desired replica runs (or the timeout).")
@click.option("--timeout", default=120, show_default=True, help="Seconds to wait with --wait.")
@click.pass_obj
def deploy(ctx: Context, file: Path, wait: bool, timeout: int) -> None:
    """Deploy (or update) the service described by the spore manifest FILE."""
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"cannot read {file}: {exc}")
    # absolute: the daemon (another cwd) reads the manifest's `source:` files next to it
    res = call(ctx, "POST", protocol.DEPLOY, {"manifest": text, "file": str(file.resolve())})
    click.echo(f"submitted {res['service']} (version {res['version']}); `mycelium services` shows it")
    if wait:
        _wait_running(ctx, res["service"], timeout)


def _wait_running(ctx: Context, name: str, timeout: int) -> None:
    import time

    from mycelium.cli.progress import deploy_line

    deadline = time.monotonic() + timeout
    row, shown = None, None
    while time.monotonic() < deadline:
        rows = {r["name"]: r for r in call(ctx, "GET", protocol.SERVICES)["services"]}
        row = rows.get(name)
        ready = row.get("up_to_date", row["running"]) if row else 0  # during an update: the new version
        line = deploy_line(name, row)
        if line != shown:
            click.echo(f"  {line}", err=True)  # progress: replicas coming up, per node
            shown = line
        if row and row["desired"] and ready >= row["desired"]:
            click.echo(f"{name}: {ready}/{row['desired']} replicas running the deployed version")
            return
        time.sleep(0.5)
    got = f"{row['running']}/{row['desired']}" if row else "not yet in the Primary"
    fail(f"{name} is not fully running after {timeout} s ({got})",
         f"see `mycelium services` and `mycelium logs {name}`", code=4)


@cli.command()
@click.argument("name")
@click.pass_obj
def undeploy(ctx: Context, name: str) -> None:
    """Remove service NAME from the network (its replicas stop everywhere)."""
    call(ctx, "POST", protocol.UNDEPLOY, {"name": name})
    click.echo(f"submitted removal of {name}")


@cli.command()
@click.argument("name")
@click.option("--to", "to", required=True, help="The backup node (id or its last characters) to move the primary to.")
@click.pass_obj
def migrate(ctx: Context, name: str, to: str) -> None:
    """Move Endophyte NAME's primary to one of its backups (converge, stop-and-copy, resume there)."""
    res = call(ctx, "POST", protocol.MIGRATE, {"name": name, "to": to})
    click.echo(f"submitted migration of {name} to {res['to'][-8:]}; `mycelium services` shows the new primary")


@cli.command()
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def services(ctx: Context, as_json: bool) -> None:
    """List services: desired and running replicas, placement, endpoints, health."""
    res = call(ctx, "GET", protocol.SERVICES)
    emit_json(res) if as_json else render.services(res)


@cli.command()
@click.argument("name")
@click.option("-n", "--lines", default=200, show_default=True, help="How many recent lines.")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines (Ctrl-C to stop).")
@click.option("--node", "node_id", metavar="ID", help="The replica on this member (id, or ≥ 6 of its first or last characters).")
@click.pass_obj
def logs(ctx: Context, name: str, lines: int, follow: bool, node_id: str | None) -> None:
    """Show the output of service NAME's replica on this node (or on --node ID)."""
    import time
    from urllib.parse import quote

    seen: list[str] = []
    where = f"&node={quote(node_id)}" if node_id else ""
    while True:
        got = call(ctx, "GET", f"{protocol.LOGS}?name={quote(name)}&lines={lines}{where}")["lines"]
        start = _new_lines_start(seen, got)
        for line in got[start:]:
            click.echo(line)
        seen = got
        if not follow:
            return
        time.sleep(1)


def _new_lines_start(old: list[str], new: list[str]) -> int:
    """Where the lines not printed yet begin in `new` (the longest suffix of `old` that prefixes `new`)."""
    for k in range(min(len(old), len(new)), 0, -1):
        if old[-k:] == new[:k]:
            return k
    return 0


@cli.command()
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def resolve(ctx: Context, name: str, as_json: bool) -> None:
    """Print the endpoints (host:port) where service NAME answers."""
    res = call(ctx, "GET", f"{protocol.RESOLVE}?name={name}")
    if as_json:
        emit_json(res)
    elif not res["endpoints"]:
        fail(f"no healthy endpoint of {name} is known", f"see `mycelium services`", code=4)
    else:
        for ep in res["endpoints"]:
            click.echo(ep)


from mycelium.cli import governance as _governance  # noqa: E402  (registers admin, network set/show, remove …)

_governance.register(cli, network, invite)

from mycelium.cli import release as _release  # noqa: E402  (release publish|status)

_release.register(cli)

from mycelium.cli.storage import storage as _storage  # noqa: E402  (the group uses helpers defined above)
from mycelium.cli import views as _views  # noqa: E402  (ui, top)

_views.register(cli, call, emit_json)

cli.add_command(_storage)


def main() -> None:
    cli(prog_name="mycelium")
