"""How fast the simulator runs: virtual seconds simulated per real second.

    python -m bench.sim_speed [--nodes 100,1000] [--duration 600] [--protocol register] [--seed 1]

Prints one JSON line per figure: {"figure": ..., "value": ..., "unit": ..., "params": {...}}.
The target (issue #5) is 1,000 nodes x 10 virtual minutes in under a minute on 2 cores, i.e. a
ratio above 10 at 1,000 nodes. Each run is fault-free (a fault plan changes the work, not the
engine): 90% writing phase + 10% quiet tail, with the usual invariant checks (every 10,000 events).
"""

from __future__ import annotations

import argparse
import json
import sys

from mycelium.sim.run import RunConfig, run


def measure(protocol: str, nodes: int, duration_s: float, seed: int) -> list[dict]:
    result = run(RunConfig(protocol=protocol, nodes=nodes, seed=seed, duration_s=duration_s * 0.9,
                           tail_s=duration_s * 0.1, faults="none", check_every=10_000))
    if result.failure is not None:
        print(result.failure, file=sys.stderr)
    params = {"protocol": protocol, "nodes": nodes, "virtual_s": duration_s, "seed": seed,
              "result": result.summary["result"]}
    events = result.summary["events"]
    real_s = result.real_s
    return [
        {"figure": "sim_virtual_to_real_ratio", "value": round(duration_s / real_s, 2), "unit": "x", "params": params},
        {"figure": "sim_wall_time", "value": round(real_s, 3), "unit": "s", "params": params},
        {"figure": "sim_events_per_second", "value": round(events / real_s), "unit": "events/s", "params": params},
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.sim_speed", description=__doc__.splitlines()[0])
    p.add_argument("--nodes", default="100,1000", help="comma-separated node counts (default %(default)s)")
    p.add_argument("--duration", type=float, default=600.0, help="virtual seconds per run (default %(default)s)")
    p.add_argument("--protocol", default="register", help="scenario to run (default %(default)s)")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    try:
        counts = [int(n) for n in args.nodes.split(",")]
    except ValueError:
        p.error(f"--nodes must be comma-separated integers, got {args.nodes!r}")
    for n in counts:
        for figure in measure(args.protocol, n, args.duration, args.seed):
            print(json.dumps(figure, sort_keys=True), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
