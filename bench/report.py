"""One benchmark figure = one JSON line: {"figure", "value", "unit", "params", "baseline", "machine"}.

`baseline` is the figure's floor or reference measured in the same run ({"name", "value", "unit"}),
or None when there is nothing sensible to compare with. `machine` says where it was measured.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import psutil


def machine() -> dict[str, Any]:
    """The machine a figure came from (load is the 1-minute average when the figure was taken)."""
    return {
        "cores": os.cpu_count(),
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_1m": round(os.getloadavg()[0], 2),
    }


def baseline(name: str, value: float | None, unit: str) -> dict[str, Any]:
    return {"name": name, "value": value, "unit": unit}


@dataclass
class Figure:
    figure: str
    value: float | None  # None only when the measurement could not be taken (params["error"] says why)
    unit: str
    params: dict[str, Any] = field(default_factory=dict)
    baseline: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {"figure": self.figure, "value": self.value, "unit": self.unit, "params": self.params,
                "baseline": self.baseline, "machine": machine()}


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (0–100) by linear interpolation between closest ranks; None if empty."""
    if not values:
        return None
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    pos = (len(ordered) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def rounded(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


class Emitter:
    """Prints figures as they are measured: JSON lines with --json, a readable line otherwise."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.count = 0

    def __call__(self, fig: Figure) -> None:
        self.count += 1
        if self.as_json:
            print(json.dumps(fig.to_json(), sort_keys=True), flush=True)
            return
        base = ""
        if fig.baseline is not None:
            base = f"   (baseline {fig.baseline['name']}: {fig.baseline['value']} {fig.baseline['unit']})"
        print(f"{fig.figure:<40} {fig.value} {fig.unit}{base}", flush=True)


def note(message: str) -> None:
    """Progress goes to stderr so stdout stays one JSON line per figure."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)
