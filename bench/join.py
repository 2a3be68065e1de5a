"""Join latency on a network of real daemons, and Latent propagation among real daemons.

The founder runs `up --detach` and `network create`; the other nodes are started (`up --detach`,
each on its own personal network) before any timing. Then, one joiner at a time:

    t0 → `mycelium invite --json` on the founder → `mycelium join TOKEN` on the joiner →
    poll the joiner's /v1/status (ControlClient, every 20 ms) until it is `admitted` with a role.

Both CLI calls are inside the measured time (that is what a user waits for); their own start-up
is ~0.1 s each (see cli_status_round_trip). Once admitted, the joiner publishes its own Latent
node entry; we poll /v1/spores?kind=latent on every member and time from the first poll where the
joiner's own store holds its entry to the first poll where every member's store holds it. The
resolution is one polling round over all members (reported). The joiner's k-th join reaches
k+1 nodes, so N grows from 2 to the network size during the run.
"""

from __future__ import annotations

import json
import time

from mycelium.api import protocol

from bench.cluster import Cluster, wait_for
from bench.report import Figure, baseline, note, percentile, rounded

JOIN_TIMEOUT_S = 60.0


def build_network(cluster: Cluster, nodes: int) -> None:
    """Founder plus `nodes - 1` started daemons (not yet joined)."""
    founder = cluster.new()
    note(f"network: starting {nodes} daemons")
    founder.up()
    res = founder.cli("network", "create", "bench")
    if res.returncode != 0:
        raise RuntimeError(f"`network create` failed: {res.stderr}")
    wait_for(lambda: founder.status()["epoch"] >= 1, timeout_s=30, what="the founder's first height")
    for _ in range(nodes - 1):
        cluster.new().up()


def _holds_entry_of(d, author: str) -> bool:
    report = d.client.get(protocol.SPORES + "?kind=latent")
    return any(author in (store.get("by_author") or {}) for store in report.get("latent", []))


def _admitted_with_role(d) -> bool:
    st = d.status()
    return bool(st["admitted"] and st["role"] not in (None, "", "none"))


def join_all(cluster: Cluster) -> tuple[list[float], list[dict]]:
    """Join every non-founder in turn; (join latencies in s, propagation samples)."""
    founder, joiners = cluster.daemons[0], cluster.daemons[1:]
    joins: list[float] = []
    spreads: list[dict] = []
    for k, d in enumerate(joiners, start=1):
        t0, t0_wall = time.monotonic(), time.time()
        res = founder.cli("invite", "--uses", "1", "--ttl", "10m", "--json")
        if res.returncode != 0:
            raise RuntimeError(f"`invite` failed: {res.stderr}")
        token = json.loads(res.stdout)["token"]
        res = d.cli("join", token)
        if res.returncode != 0:
            raise RuntimeError(f"`join` failed: {res.stderr}")
        wait_for(lambda: _admitted_with_role(d), timeout_s=JOIN_TIMEOUT_S, interval_s=0.02,
                 what=f"joiner {k} to be a member with a role")
        joins.append(time.monotonic() - t0)
        note(f"join {k}: {joins[-1]:.2f} s")
        spread = _propagation(cluster.daemons[: k + 1], d)
        spread["join_steps_s"] = join_steps(d, t0_wall)
        spreads.append(spread)
    return joins, spreads


STEPS = {"switched network": "switched", "mesh.listening": "listening", "mesh.peer.admitted": "first_peer",
         "caught up": "caught_up"}


def join_steps(d, t0_wall: float) -> dict[str, float]:
    """Where a join's time went, from the joiner's own log: seconds after t0 of the first
    'switched network', 'mesh.listening', peer admitted, 'caught up', and the first decided height
    in which it has a role."""
    from datetime import datetime

    steps: dict[str, float] = {}
    path = d.state_dir / "daemon.log"
    for line in path.read_text(errors="replace").splitlines() if path.exists() else []:
        try:
            ev = json.loads(line)
            at = datetime.fromisoformat(ev["timestamp"].replace("Z", "+00:00")).timestamp() - t0_wall
        except (ValueError, KeyError, TypeError):
            continue
        if at < 0:
            continue
        name = STEPS.get(ev.get("event"))
        if ev.get("event") == "decided" and ev.get("role") and "member_with_role" not in steps and "caught_up" in steps:
            name = "member_with_role"
        if name and name not in steps:
            steps[name] = round(at, 3)
    return steps


def _propagation(members: list, author_daemon) -> dict:
    author = author_daemon.status()["node_id"]
    t_author = None
    rounds: list[float] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        t_round = time.monotonic()
        held = [_safe_holds(m, author) for m in members]
        rounds.append(time.monotonic() - t_round)
        if t_author is None and held[members.index(author_daemon)]:
            t_author = t_round
        if t_author is not None and all(held):
            return {"nodes": len(members), "spread_s": t_round - t_author, "round_s": sum(rounds) / len(rounds)}
        time.sleep(0.005)
    return {"nodes": len(members), "spread_s": None, "round_s": sum(rounds) / max(1, len(rounds))}


def _safe_holds(d, author: str) -> bool:
    try:
        return _holds_entry_of(d, author)
    except Exception:  # the daemon is busy switching sessions; counts as not (yet) holding it
        return False


def figures(cluster: Cluster, joins: list[float], spreads: list[dict], nodes: int) -> list[Figure]:
    params = {"nodes": nodes, "joins": len(joins), "heartbeat_env": cluster.env, "listen": "127.0.0.1 loopback",
              "method": "`invite` CLI on founder + `join` CLI on a running daemon, then /v1/status polled every 20 ms",
              "samples_s": [round(x, 3) for x in joins], "target_s": 2.0}
    params["steps_after_t0_s"] = [s.get("join_steps_s", {}) for s in spreads]
    out = [Figure("join_latency_p50", rounded(percentile(joins, 50)), "s", params),
           Figure("join_latency_p95", rounded(percentile(joins, 95)), "s", params)]
    ok = [s["spread_s"] for s in spreads if s["spread_s"] is not None]
    resolution = max((s["round_s"] for s in spreads), default=None)
    pparams = {"real_daemons": True, "nodes_per_sample": [s["nodes"] for s in spreads],
               "samples_s": [None if s["spread_s"] is None else round(s["spread_s"], 3) for s in spreads],
               "timed_out": len(spreads) - len(ok), "resolution_s": rounded(resolution, 3),
               "method": "joiner's own Latent node entry: first poll where its store holds it → first poll where "
                         "all members' stores hold it (GET /v1/spores?kind=latent on each member per round)"}
    out.append(Figure("latent_propagation_real_daemons_p50", rounded(percentile(ok, 50)), "s", pparams))
    out.append(Figure("latent_propagation_real_daemons_max", rounded(max(ok) if ok else None), "s", pparams))
    return out


def measure(*, nodes: int = 10, cluster: Cluster | None = None) -> list[Figure]:
    own = cluster is None
    cluster = cluster or Cluster()
    try:
        build_network(cluster, nodes)
        joins, spreads = join_all(cluster)
        return figures(cluster, joins, spreads, nodes)
    finally:
        if own:
            cluster.close()
