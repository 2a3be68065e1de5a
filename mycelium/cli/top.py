"""`mycelium top`'s screen: the network picture (mycelium.netview.snapshot) as rich renderables."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

ROLE_STYLE = {"sclerotium": "magenta", "rhizomorph": "green", "hypha": "cyan"}
STATE_STYLE = {"self": "bold", "up": "green", "unreachable": "yellow", "dead": "red"}


def render(snap: dict | None, *, refresh: int, error: str | None = None) -> Group:
    stamp = time.strftime("%H:%M:%S")
    if snap is None:
        return Group(Text(f"mycelium top — refresh {refresh} at {stamp}", style="bold"),
                     Text(f"cannot reach the daemon: {error}", style="red"))
    node, cons = snap["node"], snap["consensus"]
    ro = Text(" READ-ONLY: " + (node.get("read_only_reason") or "no quorum"), style="bold red") if node["read_only"] else Text("")
    if node.get("unusable"):
        ro.append(f"  CANNOT RUN: {node['unusable']['reason']} — {node['unusable']['fix']}", style="bold red")
    rate = "-" if cons["heights_per_min"] is None else f"{cons['heights_per_min']}/min"
    head = Text.assemble((f"mycelium top — {node['network_name']}", "bold"),
                         f"   height {cons['height']} ({rate}, {cons['state']})   members {len(snap['members'])}"
                         f"   validators {len(cons['validators'])}   refresh {refresh} at {stamp}", ro)
    parts: list[Any] = [head, _members(snap), _rounds(cons)]
    if snap.get("services"):
        parts.append(_services(snap["services"]))
    if snap.get("endophytes"):
        parts.append(_endophytes(snap["endophytes"]))
    parts.append(_storage(snap.get("storage") or {}))
    return Group(*parts)


def _members(snap: dict) -> Panel:
    t = Table("node", "role", "state", "latency", "reported height", "trust", "report", box=None, pad_edge=False)
    for m in snap["members"]:
        role = Text(m["role"] + (" (validator)" if m["validator"] else ""), style=ROLE_STYLE.get(m["role"], ""))
        lat = "-" if m["latency_ms"] is None else f"{m['latency_ms']:.1f} ms"
        age = "-" if m["report_age_s"] is None else f"{m['report_age_s']:.0f}s ago" + (" (stale)" if m["report_stale"] else "")
        t.add_row(m["short"] + (" (this node)" if m["state"] == "self" else ""), role,
                  Text(m["state"], style=STATE_STYLE.get(m["state"], "")), lat,
                  "-" if m["epoch"] is None else str(m["epoch"]), f"{m['trust']:.2f}", age)
    links = ", ".join(f"{l['a'][-8:]}–{l['b'][-8:]}" + ("" if l["latency_ms"] is None else f" {l['latency_ms']:.1f}ms")
                      for l in snap["links"][:12]) or "none"
    return Panel(Group(t, Text(f"links: {links}", style="dim")), title="members", title_align="left")


def _rounds(cons: dict) -> Panel:
    t = Table("height", "time", "round", "members", "signed by", box=None, pad_edge=False)
    for r in cons["rounds"][:5]:
        t.add_row(str(r["height"]), time.strftime("%H:%M:%S", time.localtime(r["time_s"])) if r["time_s"] else "-",
                  str(r["round"]), str(r["members"]), " ".join(r["signers"]))
    return Panel(t, title="last rounds", title_align="left")


def _services(rows: list[dict]) -> Panel:
    t = Table("service", "replicas", "health", "placement", "endpoints", box=None, pad_edge=False)
    for r in rows:
        placed = " ".join(f"{n[-8:]}:{st}" for n, st in sorted(r.get("placement", {}).items())) or "-"
        t.add_row(r["name"], f"{r['running']}/{r['desired']}", r.get("health", "?"), placed,
                  " ".join(r.get("endpoints", [])) or "-")
    return Panel(t, title="services", title_align="left")


def _endophytes(rows: list[dict]) -> Panel:
    t = Table("endophyte", "gen", "primary", "backups", box=None, pad_edge=False)
    for r in rows:
        t.add_row(r["name"], str(r["generation"]), (r.get("primary") or "-")[-8:],
                  " ".join(b[-8:] for b in r.get("backups", [])) or "-")
    return Panel(t, title="endophytes", title_align="left")


def _storage(st: dict) -> Panel:
    if "unavailable" in st:
        return Panel(Text(f"storage: {st['unavailable']}", style="dim"), title="storage", title_align="left")
    store = st.get("store", {})
    vols = st.get("volumes", {})
    line = (f"volumes {len(vols)}   shares here {store.get('shares', 0)}   used {store.get('used_bytes', 0)} B   "
            f"devices {len(st.get('devices', []))}")
    return Panel(Text(line), title="storage", title_align="left")
