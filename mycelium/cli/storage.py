"""`mycelium storage put|get|ls|rm|status`: files in the network's distributed store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from mycelium.api import protocol
from mycelium.api.client import ClientError, ControlClient

TRANSFER_TIMEOUT_S = 3600.0  # a put/get of a large file over a slow network


def _call(ctx: Any, method: str, path: str, body: Any = None, *, timeout_s: float = 60.0) -> Any:
    from mycelium.cli.main import fail

    client = ControlClient(ctx.state_dir / "control.sock", timeout_s=timeout_s)
    try:
        return client.request(method, path, body, timeout_s=timeout_s)
    except ClientError as exc:
        fail(exc.message, exc.hint, exc.exit_code)


def _emit(obj: Any) -> None:
    from mycelium.cli.main import emit_json

    emit_json(obj)


@click.group()
def storage() -> None:
    """Files in the network's encrypted, erasure-coded, self-repairing store."""


@storage.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--volume", default="default", show_default=True, help="Volume to put the file in.")
@click.option("--name", help="Name in the volume (default: the file's name).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def put(ctx: Any, file: Path, volume: str, name: str | None, as_json: bool) -> None:
    """Store FILE; returns once every chunk is fsynced on k+1 distinct devices and the root is decided."""
    body = {"volume": volume, "name": name or file.name, "path": str(file.resolve())}
    with _spinner(as_json, f"putting {file} ({file.stat().st_size} bytes)"):
        res = _call(ctx, "POST", protocol.STORAGE_PUT, body, timeout_s=TRANSFER_TIMEOUT_S)
    if as_json:
        _emit(res)
    else:
        code = "replicated" if res["k"] == 1 else f"{res['k']}-of-{res['n']}"
        click.echo(f"{res['volume']}:{res['name']} v{res['version']}  {res['size']} bytes, {res['chunks']} chunks, "
                   f"{code} ({res['n']} shares per chunk)")


@storage.command()
@click.argument("name")
@click.option("--volume", default="default", show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Where to write (default: ./NAME).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def get(ctx: Any, name: str, volume: str, output: Path | None, as_json: bool) -> None:
    """Fetch NAME; fails naming the unreadable byte ranges rather than writing wrong bytes."""
    dest = (output or Path(Path(name).name)).resolve()
    with _spinner(as_json, f"getting {volume}:{name}"):
        res = _call(ctx, "POST", protocol.STORAGE_GET, {"volume": volume, "name": name, "dest": str(dest)},
                    timeout_s=TRANSFER_TIMEOUT_S)
    if as_json:
        _emit(res)
    else:
        click.echo(f"{res['dest']}  {res['size']} bytes")


@storage.command()
@click.option("--volume", default="", help="Only this volume (default: all).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def ls(ctx: Any, volume: str, as_json: bool) -> None:
    """List the files of the volumes."""
    res = _call(ctx, "GET", f"{protocol.STORAGE_LS}?volume={volume}")
    if as_json:
        _emit(res)
        return
    for f in res["files"]:
        click.echo(f"{f['volume']}:{f['name']}  {f['size']} bytes  v{f['version']}  {f['chunks']} chunks")


@storage.command()
@click.argument("name")
@click.option("--volume", default="default", show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def rm(ctx: Any, name: str, volume: str, as_json: bool) -> None:
    """Remove NAME from the volume (its shares are no longer repaired)."""
    res = _call(ctx, "POST", protocol.STORAGE_RM, {"volume": volume, "name": name})
    if as_json:
        _emit(res)
    else:
        click.echo(f"removed {volume}:{name}")


@storage.command()
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def status(ctx: Any, as_json: bool) -> None:
    """Per volume: chunks, redundancy now vs wanted, missing shares, repair progress and decisions."""
    res = _call(ctx, "GET", protocol.STORAGE_STATUS)
    if as_json:
        _emit(res)
        return
    click.echo(f"devices: {len(res['devices'])}   FUSE: {res['fuse']}")
    st = res["store"]
    click.echo(f"this node: {st['shares']} shares, {st['used_bytes']} bytes, {st['corrupt_found']} corrupt found by scrub")
    gc = res["repair"].get("gc")
    if gc:
        click.echo(f"garbage: {gc['collected']} unreferenced shares deleted, {gc['candidates']} waiting out "
                   f"the {gc['grace_s']:.0f} s grace; key generations held: {res.get('key_generations')}")
    for name, v in res["volumes"].items():
        lease = (v["lease"] or "none")[:16]
        click.echo(f"volume {name}: seq {v['seq']}, writer lease {lease}")
        if "chunks" in v:
            click.echo(f"  {v['chunks']} chunks; shares {v['shares_healthy']}/{v['shares_wanted']} healthy, "
                       f"{v['shares_missing']} missing, {v['shares_waiting']} on silent devices, "
                       f"{v['chunks_lost']} chunks unreadable; repairs done {v['repairs_done']}, "
                       f"in flight {v['repairs_inflight']}")
    for d in res["repair"]["decisions"][-5:]:
        click.echo(f"  repair: {d['what']} {d['chunk']} {d['detail']}")


class _spinner:
    """A transient progress line on stderr for long transfers (nothing in --json mode)."""

    def __init__(self, quiet: bool, text: str) -> None:
        self.quiet, self.text = quiet, text
        self._status = None

    def __enter__(self):
        if not self.quiet:
            from rich.console import Console

            self._status = Console(stderr=True).status(self.text)
            self._status.__enter__()
        return self

    def __exit__(self, *exc):
        if self._status is not None:
            self._status.__exit__(*exc)
        return False
