"""Simulator speed: bench/sim_speed.py's measurements (virtual-to-real ratio, wall time, events/s)
at 100 and 1,000 nodes, as Figures. The target is 1,000 nodes x 10 virtual minutes in <= 60 s of
wall time on 2 cores, i.e. a ratio >= 10 at 1,000 nodes."""

from __future__ import annotations

from collections.abc import Iterator

from bench.report import Figure, baseline, note
from bench.sim_speed import measure as sim_measure


def measure(*, nodes: tuple[int, ...] = (100, 1000), virtual_s: float = 600.0, protocol: str = "register",
            seed: int = 1) -> Iterator[Figure]:
    """Figures as each size is measured (a generator: a later failure keeps the earlier lines)."""
    for n in nodes:
        note(f"sim: {n} nodes x {virtual_s:.0f} virtual s")
        rows = {row["figure"]: row for row in sim_measure(protocol, n, virtual_s, seed)}
        ratio = rows["sim_virtual_to_real_ratio"]
        params = {**ratio["params"], "wall_s": rows["sim_wall_time"]["value"],
                  "events_per_s": rows["sim_events_per_second"]["value"], "source": "bench/sim_speed.py",
                  "target": "ratio >= 10 at 1,000 nodes (1,000 nodes x 600 virtual s in <= 60 s)"}
        yield Figure(f"sim_virtual_to_real_ratio_n{n}", ratio["value"], "x", params, baseline("real_time", 1.0, "x"))
        yield Figure(f"sim_wall_time_n{n}", rows["sim_wall_time"]["value"], "s", params)
