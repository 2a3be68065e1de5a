"""Volumes in the Primary: declarations, writer leases and roots (pure rules the ledger applies).

The Primary's params["volumes"] maps a volume name to
    {"key": "network" | "admin", "lease": node id or "", "lease_until_s": int, "root": root wire or None}
and the `volume` operation moves it, with body["action"] one of (append only):
    declare  {name, key}          an admin declares a volume (idempotent; key mode fixed at first declare)
    lease    {name}               a member takes the writer lease for itself: granted when the volume
                                  has no lease, the lease expired (Primary time), or it renews its own;
                                  an admin may take it over (body "force": True) — the old writer's
                                  next commit is refused
    release  {name}               the holder gives the lease back
    root     {name, root, expect_seq}   the lease holder moves the root by one (compare-and-set)

Nothing here reads a clock: `now_s` is the Primary's time.
"""

from __future__ import annotations

import re
from typing import Any

from mycelium.storage.catalog import CatalogError, VolumeRoot
from mycelium.storage.roots import RootConflict, check_commit

VOLUMES = "volumes"  # Primary params key
ACTIONS = ("declare", "lease", "release", "root")  # append only
KEY_MODES = ("network", "admin")
LEASE_S = 120  # a writer renews its lease at a third of this; a dead writer's volume frees after it
MAX_VOLUMES = 256  # volumes per network (the Primary stays small)
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")


class VolumeOpError(ValueError):
    """A volume operation that may not be applied; the message says why."""


def check_name(name: Any) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise VolumeOpError(f"volume name {name!r} must be 1-63 of a-z 0-9 . _ - (starting alphanumeric)")
    return name


def check(author: str, body: dict, volumes: dict, *, admins: list, members: dict, now_s: int) -> None:
    action = body.get("action")
    if action not in ACTIONS:
        raise VolumeOpError(f"volume action must be one of {ACTIONS}, got {action!r}")
    if author not in members:
        raise VolumeOpError(f"{author[:16]} is not a member")
    name = check_name(body.get("name"))
    vol = volumes.get(name)
    if action == "declare":
        if author not in admins:
            raise VolumeOpError(f"{author[:16]} is not an admin, so it cannot declare volumes")
        if body.get("key", "network") not in KEY_MODES:
            raise VolumeOpError(f"volume key mode must be one of {KEY_MODES}")
        if vol is None and len(volumes) >= MAX_VOLUMES:
            raise VolumeOpError(f"the network holds {MAX_VOLUMES} volumes, its limit")
        return
    if vol is None:
        raise VolumeOpError(f"no volume {name!r} is declared; declare it first (`mycelium storage put` does)")
    holder, until = vol.get("lease", ""), vol.get("lease_until_s", 0)
    held_by_other = holder and holder != author and until > now_s
    if action == "lease":
        if held_by_other and not (body.get("force") is True and author in admins):
            raise VolumeOpError(f"volume {name!r} is leased to {holder[:16]} until Primary time {until}")
    elif action == "release":
        if holder != author:
            raise VolumeOpError(f"{author[:16]} does not hold the lease of {name!r}")
    elif action == "root":
        if holder != author or until <= now_s:
            raise VolumeOpError(f"{author[:16]} does not hold a live lease of {name!r}; take it with a lease first")
        try:
            root = VolumeRoot.from_wire(body.get("root"))
        except CatalogError as exc:
            raise VolumeOpError(str(exc)) from exc
        if root.volume != name:
            raise VolumeOpError("root names another volume")
        current = VolumeRoot.from_wire(vol["root"]) if vol.get("root") else None
        expect = body.get("expect_seq")
        if not isinstance(expect, int) or isinstance(expect, bool):
            raise VolumeOpError("root needs an integer expect_seq")
        try:
            check_commit(current, author, root, expect)
        except RootConflict as exc:
            raise VolumeOpError(str(exc)) from exc


def apply(author: str, body: dict, volumes: dict, *, now_s: int) -> dict:
    """The next params["volumes"] (call only after `check` passed)."""
    out = dict(volumes)
    name, action = body["name"], body["action"]
    vol = dict(out.get(name) or {"key": body.get("key", "network"), "lease": "", "lease_until_s": 0, "root": None})
    if action == "lease":
        vol["lease"], vol["lease_until_s"] = author, now_s + LEASE_S
    elif action == "release":
        vol["lease"], vol["lease_until_s"] = "", 0
    elif action == "root":
        vol["root"] = body["root"]
        vol["lease_until_s"] = max(vol["lease_until_s"], now_s + LEASE_S)  # a commit renews the lease
    out[name] = vol
    return dict(sorted(out.items()))
