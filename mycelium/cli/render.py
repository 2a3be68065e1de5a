"""Human-readable output (rich). Machine-readable output is the --json DTO, never this."""

from __future__ import annotations

import time
from typing import Any

from functools import cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console


@cache
def _console() -> Console:
    """rich is imported at the first print, not with the CLI: `up`, the daemon process and every
    --json call do without it (~0.15 s and ~3 MiB)."""
    from rich.console import Console

    return Console(highlight=False, soft_wrap=True)


def _table() -> Any:
    from rich.table import Table

    return Table


def _ago(ts: float | None) -> str:
    if not ts:
        return "never"
    return _duration(max(0, int(time.time() - ts))) + " ago"


def _duration(seconds: int) -> str:
    """90061 → '1d1h', 3725 → '1h2m', 59 → '59s'."""
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size or (unit == "s" and not parts):
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return "".join(parts[:2])


def status(st: dict[str, Any]) -> None:
    t = _table().grid(padding=(0, 2))
    t.add_column(style="bold")
    t.add_column()
    role = st["role"]
    if st.get("role_reason"):
        role += f"  ({st['role_reason']})"
    if st.get("max_role") and st["max_role"] != "sclerotium":
        role += f"  [capped at {st['max_role']}]"
    net = f"{st['network_name']} ({st['network_id'][:16]})" + ("  personal" if st.get("personal_network") else "")
    t.add_row("node", st["node_id"])
    t.add_row("network", net)
    t.add_row("role", role)
    t.add_row("epoch", f"{st['epoch']}  primary {(st['primary_hash'] or '-')[:16]}")
    t.add_row("members", f"{st['members']}   validators {len(st['validators'])}   peers {st['peers']}")
    ro = "no" if not st["read_only"] else f"YES — {st.get('read_only_reason') or 'no quorum'}"
    t.add_row("read-only", ro)
    runtime = f"{st['runtime']}   services {st['services']}"
    if st.get("k3s"):  # K3s enabled: its state, or why the process runtime is used
        k = st["k3s"]
        runtime += f"\nk3s {k['mode']} {k['state']}"
        if k["cluster"].get("datastore"):
            runtime += f"   datastore {k['cluster']['datastore']}   servers {len(k['cluster'].get('servers', []))}"
        if k.get("replicas"):  # the handover (mycelium.runtime.k3s.handover)
            r = k["replicas"]
            runtime += f"\nreplicas here: {r['k3s']} on K3s, {r['process']} on process"
            runtime += f" ({r['handing_over']} handing over)" if r["handing_over"] else ""
    if st["runtime"] != "k3s" and st.get("k3s"):
        runtime += f"\n{st.get('runtime_reason', '')}"
    t.add_row("runtime", runtime)
    t.add_row("addresses", "\n".join(st["addresses"]) or "(not listening)")
    t.add_row("uptime", _duration(st["uptime_s"]))
    for name, sub in (st.get("subsystems") or {}).items():  # restarted on their own; the rest ran on
        t.add_row(f"restarted {name}", f"{sub['restarts']}×, last: {sub['last_error']}")
    bad = st.get("unusable")
    if bad:
        _console().print(f"[bold red]mycelium {st['version']} — not running its network: {bad['reason']}[/bold red]\n"
                      f"  what to do: {bad['fix']}")
    else:
        _console().print(f"[bold]mycelium {st['version']}[/bold] — running")
    _console().print(t)


def peers(res: dict[str, Any]) -> None:
    rows = res.get("peers", [])
    if not rows:
        _console().print("no peers")
        return
    t = _table()("node", "role", "connected", "latency", "last seen", "via", "addresses", box=None)
    for p in rows:
        lat = "-" if p.get("latency_ms") is None else f"{p['latency_ms']} ms"
        t.add_row(p["node_id"], p.get("role") or "?", "yes" if p.get("connected") else "no", lat,
                  _ago(p.get("last_seen")), "relay" if p.get("via_relay") else "direct", "\n".join(p.get("addresses", [])))
    _console().print(t)


def spores(res: dict[str, Any]) -> None:
    import json

    _console().print_json(json.dumps(res))


def endophytes(rows: list[dict[str, Any]]) -> None:
    t = _table()("endophyte", "gen", "primary", "backups (epoch)", "lag", "throughput", "throttle", "note", box=None)
    for r in rows:
        local = r.get("local") or {}
        lag = local.get("backups", {})
        backups = "\n".join(f"{b[-8:]} ({r['reports'].get(b, '-')})" for b in r["backups"]) or "-"
        lags = "\n".join(f"{v['lag_epochs']} ep / {v['lag_bytes']} B" for v in lag.values()) or "-"
        note = r.get("note") or (f"migrating to {r['migrating_to'][-8:]}" if r.get("migrating_to") else "")
        if r.get("lost_epochs"):
            note = (note + "; " if note else "") + f"{r['lost_epochs']} epochs lost in failovers"
        t.add_row(r["name"], str(r["generation"]), (r["primary"] or "-")[-8:], backups, lags,
                  f"{local['throughput_Bps']} B/s" if local else "-",
                  f"{local['throttle_pct']} % ({local['throttle']})" if local else "-", note or "-")
    _console().print(t)


def services(res: dict[str, Any]) -> None:
    if res.get("endophytes"):
        endophytes(res["endophytes"])
    rows = res.get("services", [])
    if not rows and res.get("endophytes"):
        return
    if not rows:
        _console().print("no services (deploy one with `mycelium deploy FILE`)")
        return
    t = _table()("service", "replicas", "placement", "endpoints", "health", box=None)
    for r in rows:
        why = {rep.get("node"): rep.get("message") for rep in (r.get("replicas") or []) if rep.get("message")}
        placed = "\n".join(f"{n[-8:]}: {st}" + (f" ({why[n]})" if n in why and st not in ("running", "healthy") else "")
                           for n, st in sorted(r.get("placement", {}).items())) or "-"
        t.add_row(r["name"], f"{r['running']}/{r['desired']}", placed, "\n".join(r.get("endpoints", [])) or "-",
                  r.get("health", "?"))
    _console().print(t)
