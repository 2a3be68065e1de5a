"""`python -m mycelium.sim`: run one simulation and print its summary.

    python -m mycelium.sim --nodes 50 --seed 7 --duration 600 [--faults PLAN] [--json] [--protocol latent]

Same seed + same code = the same output, byte for byte, except the wall-clock line ("real seconds",
or the "real_s" JSON field); `--no-timing` leaves that out. Exit codes: 0 all invariants held,
1 an invariant was violated or a core crashed (the seed and replay command are printed),
2 bad arguments or fault plan.
"""

from __future__ import annotations

import argparse
import json
import sys

from mycelium.sim.network import SimConfigError
from mycelium.sim.protocols import PROTOCOLS
from mycelium.sim.run import NETWORKS, RunConfig, build_world, render_text, run


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m mycelium.sim", description="Deterministic network simulation of Mycelium protocol cores.")
    d = RunConfig()
    p.add_argument("--protocol", default=d.protocol, help=f"scenario to run: {', '.join(sorted(PROTOCOLS))} (default {d.protocol})")
    p.add_argument("--nodes", type=int, default=d.nodes, help=f"number of simulated nodes (default {d.nodes})")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of the run's one RNG (default %(default)s)")
    p.add_argument("--duration", type=float, default=d.duration_s, help="virtual seconds with faults (default %(default)s)")
    p.add_argument("--tail", type=float, default=d.tail_s, help="fault-free virtual seconds before liveness checks (default %(default)s)")
    p.add_argument("--faults", metavar="PLAN", help="JSON fault plan, or 'none'; default: generated from the seed")
    p.add_argument("--no-byzantine", action="store_true", help="generated plans get no Byzantine nodes")
    p.add_argument("--network", default=d.network, choices=sorted(NETWORKS), help="base network preset (default %(default)s)")
    p.add_argument("--wire", action="store_true", help="send every message as bytes through the protocol codec")
    p.add_argument("--check-every", type=int, default=d.check_every, help="events between safety checks (default %(default)s)")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.add_argument("--no-timing", action="store_true", help="omit wall-clock time, so output is byte-identical across runs")
    p.add_argument("--print-plan", action="store_true", help="print the fault plan this run would use (JSON) and exit")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    config = RunConfig(
        protocol=args.protocol, nodes=args.nodes, seed=args.seed, duration_s=args.duration, tail_s=args.tail,
        faults=args.faults, byzantine=not args.no_byzantine, network=args.network, wire=args.wire,
        check_every=args.check_every,
    )
    try:
        if args.print_plan:
            _, _, nemesis = build_world(config)
            print(json.dumps(nemesis.plan.to_json(), indent=1, sort_keys=True))
            return 0
        result = run(config)
    except SimConfigError as exc:
        print(f"mycelium.sim: {exc}", file=sys.stderr)
        return 2
    real_s = None if args.no_timing else result.real_s
    if args.json:
        out = dict(result.summary)
        if real_s is not None:
            out["real_s"] = round(real_s, 3)
        print(json.dumps(out, sort_keys=True))
    else:
        print(render_text(result.summary, real_s))
    if result.failure is not None:
        print(result.failure, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

