"""python -m bench {all|smoke|startup|join|memory|propagation|consensus|sim}... [--json] [--long]

Measures for real on this machine (loopback only) and prints one line per figure — with --json one
JSON object per line: {"figure", "value", "unit", "params", "baseline", "machine"}. Progress goes to
stderr. Every daemon and subprocess started is stopped before exit, also on Ctrl-C or a failure.

    all          every figure below (idle's import floors included), sharing one 10-node daemon network for join and memory
    smoke        a tiny, fast variant of each kind of figure (CI checks that the bench still runs)
    startup      `up --detach` to /ready, CLI `status` and control API round trips
    join         invite → member with a role, 10 real daemons (+ Latent spread among them)
    memory       idle daemon RSS/PSS; every daemon of a 10-node network after --minutes
    idle         startup, the idle daemon's RSS/PSS and the import floors (bare python, libp2p, the daemon's imports)
    propagation  Latent spread to 10/25/50 in-process meshes, gossipsub one-hop floor
    consensus    height latency and operations/s at 1/4/7 validators, mesh rpc round trip
    sim          simulator virtual-to-real ratio at 100 and 1,000 nodes (bench/sim_speed.py)
    transfer     data channel throughput (1 and k stripes; classic and --pq in pairs) beside plain TCP, AEAD, libp2p
    pq           consensus height latency and certificate size, classic vs --pq, at --validators (same run)
    storage      put/get throughput and repair time per GiB beside TCP, AEAD, erasure coding, data channel
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import traceback

from bench.report import Emitter, Figure, note

FIGURES = ("startup", "idle", "join", "memory", "propagation", "consensus", "sim", "transfer", "pq", "storage")


def _quiet_logs() -> None:
    from mycelium.observability.logs import configure_logging, tame_library_loggers

    import mycelium.mesh.libp2p_setup  # noqa: F401  (imports libp2p trimmed and tames its loggers)

    configure_logging("critical", json=True)
    tame_library_loggers()
    logging.disable(logging.ERROR)  # libp2p teardown noise (add_conn after stop) in big in-process runs; failures are reported as figures


def run_figure(name: str, args: argparse.Namespace, emit: Emitter) -> None:
    if name == "startup":
        from bench import startup
        figs = startup.measure(calls=args.calls, starts=args.starts)
    elif name == "idle":
        from bench import memory, startup
        figs = [*memory.import_floors(), *startup.measure(calls=args.calls, starts=args.starts),
                *memory.idle_after_start()]
    elif name == "join":
        from bench import join
        figs = join.measure(nodes=args.nodes)
    elif name == "memory":
        from bench import join, memory
        from bench.cluster import Cluster
        figs = memory.idle_after_start()
        with Cluster() as cluster:
            join.build_network(cluster, args.nodes)
            join.join_all(cluster)
            figs += memory.after_running(cluster, minutes=args.minutes)
    elif name == "propagation":
        from bench import propagation
        figs = propagation.measure(sizes=tuple(args.sizes), updates=args.updates, floor_rounds=args.floor_rounds,
                                     settle_s=args.settle_s)
    elif name == "consensus":
        from bench import consensus
        figs = consensus.measure(validators=tuple(args.validators), seconds=args.consensus_s)
    elif name == "sim":
        from bench import sim
        figs = sim.measure(nodes=tuple(args.sim_nodes), virtual_s=args.sim_virtual_s)
    elif name == "pq":
        from bench import pq
        figs = (fig for n in args.validators for fig in pq.measure(validators=n, seconds=args.consensus_s))
    elif name == "transfer":
        from bench import transfer
        figs = transfer.measure(mib=args.transfer_mib, stripes=tuple(args.stripes))
    elif name == "storage":
        from bench import storage
        figs = storage.measure(mib=args.storage_mib, nodes=args.storage_nodes)
    else:
        raise ValueError(f"unknown figure {name!r}")
    for fig in figs:
        emit(fig)


def run_all(args: argparse.Namespace, emit: Emitter) -> list[str]:
    """Every figure; join and memory share one network (it is built once: ~1 min of the run)."""
    from bench import join, memory
    from bench.cluster import Cluster

    failed: list[str] = []

    def guarded(name: str, fn) -> None:
        try:
            fn()
        except Exception:  # one figure failing must not hide the others: report it, carry on
            failed.append(name)
            note(f"{name} FAILED:\n{traceback.format_exc()}")
            emit(Figure(f"{name}_failed", None, "", {"error": traceback.format_exc(limit=3)[-800:]}))

    def import_floors() -> None:  # what `idle` adds: bare python, import libp2p, the daemon's imports
        for fig in memory.import_floors():
            emit(fig)

    guarded("import_floors", import_floors)
    guarded("startup", lambda: run_figure("startup", args, emit))

    def network_figures() -> None:
        for fig in memory.idle_after_start():
            emit(fig)
        with Cluster() as cluster:
            join.build_network(cluster, args.nodes)
            joins, spreads = join.join_all(cluster)
            for fig in join.figures(cluster, joins, spreads, args.nodes):
                emit(fig)
            for fig in memory.after_running(cluster, minutes=args.minutes):
                emit(fig)

    guarded("join_and_memory", network_figures)
    for name in ("propagation", "consensus", "sim", "transfer", "pq", "storage"):
        guarded(name, lambda name=name: run_figure(name, args, emit))
    return failed


def apply_smoke(args: argparse.Namespace) -> None:
    """Tiny parameters: every code path once, in seconds."""
    args.calls, args.starts, args.sizes, args.updates, args.floor_rounds, args.settle_s = 3, 1, [3], 3, 3, 1.2
    args.validators, args.consensus_s = [1], 1.5
    args.sim_nodes, args.sim_virtual_s = [10], 10.0
    args.transfer_mib, args.stripes = 8, [1, 2]
    args.storage_mib, args.storage_nodes = 4, 3


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("figures", nargs="+", choices=("all", "smoke", *FIGURES), metavar="FIGURE",
                   help="all, smoke, or one or more of: " + ", ".join(FIGURES))
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--long", action="store_true", help="memory after 10 minutes instead of --minutes")
    p.add_argument("--minutes", type=float, default=1.0, help="memory: minutes the network runs (default %(default)s)")
    p.add_argument("--nodes", type=int, default=10, help="daemons in the join/memory network (default %(default)s)")
    p.add_argument("--calls", type=int, default=20, help="status round trips (default %(default)s)")
    p.add_argument("--starts", type=int, default=3, help="`up --detach` starts timed (default %(default)s)")
    p.add_argument("--updates", type=int, default=20, help="propagation: updates per size (default %(default)s)")
    p.add_argument("--floor-rounds", type=int, default=30, help="propagation: gossipsub one-hop samples")
    p.add_argument("--settle-s", type=float, default=2.5, help="propagation: wait for gossipsub to graft")
    p.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], default=[10, 25, 50],
                   help="propagation: in-process mesh sizes (default 10,25,50)")
    p.add_argument("--validators", type=lambda s: [int(x) for x in s.split(",")], default=[1, 4, 7],
                   help="consensus: validator counts (default 1,4,7)")
    p.add_argument("--consensus-s", type=float, default=20.0, help="consensus: seconds per validator count")
    p.add_argument("--sim-nodes", type=lambda s: [int(x) for x in s.split(",")], default=[100, 1000])
    p.add_argument("--sim-virtual-s", type=float, default=600.0, help="simulated seconds per run (default 10 min)")
    p.add_argument("--transfer-mib", type=int, default=256, help="transfer: MiB per measurement (default %(default)s)")
    p.add_argument("--storage-mib", type=int, default=64, help="storage: MiB put, read and repaired (default %(default)s)")
    p.add_argument("--storage-nodes", type=int, default=5, help="storage: in-process nodes (default %(default)s)")
    p.add_argument("--stripes", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2, 4],
                   help="transfer: data-channel stripe counts (default 1,2,4)")
    args = p.parse_args(argv)
    if args.long:
        args.minutes = 10.0
    _quiet_logs()
    emit = Emitter(args.json)
    t0 = time.monotonic()
    if "smoke" in args.figures:
        apply_smoke(args)
        for name in ("startup", "propagation", "consensus", "sim", "transfer"):
            run_figure(name, args, emit)
    elif "all" in args.figures:
        failed = run_all(args, emit)
        note(f"done in {time.monotonic() - t0:.0f} s; {emit.count} lines" + (f"; FAILED: {failed}" if failed else ""))
        return 1 if failed else 0
    else:
        for name in args.figures:
            run_figure(name, args, emit)
    note(f"done in {time.monotonic() - t0:.0f} s; {emit.count} lines")
    return 0


if __name__ == "__main__":
    sys.exit(main())
