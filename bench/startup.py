"""`mycelium up` to ready, and the CLI/control-API round trips.

- up_to_ready: wall time from launching `mycelium up --detach` to /ready answering 200 (polled by
  this process every 10 ms on the control socket), and to `up --detach` returning (it waits for
  /ready itself, then prints the status) — on a fresh state dir, so key generation and the personal
  network's genesis are included (that is what a first start costs).
- status round trip: `mycelium status --json` as a subprocess, p50 over `calls`; the baseline is
  the same request by a ControlClient in this process (no interpreter and import start-up).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

from mycelium.api import protocol

from bench.cluster import LISTEN, NO_MDNS_ENV, Cluster, wait_for
from bench.report import Figure, baseline, note, percentile, rounded


def measure(*, calls: int = 20, starts: int = 3) -> list[Figure]:
    ready_s: list[float] = []
    returned_s: list[float] = []
    figures: list[Figure] = []
    with Cluster(env=NO_MDNS_ENV) as cluster:
        for i in range(starts):
            d = cluster.new()
            note(f"startup: `up --detach` #{i + 1}")
            ready_at: list[float] = []
            t0 = time.monotonic()
            proc = subprocess.Popen([sys.executable, "-m", "mycelium", "--state-dir", str(d.state_dir), "up",
                                     "--detach", "--listen", LISTEN], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    env={**os.environ, **cluster.env})
            try:
                wait_for(lambda: d.client.get(protocol.READY) and ready_at.append(time.monotonic()) is None,
                         timeout_s=60, interval_s=0.01, what="/ready")
                proc.wait(timeout=60)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            t_returned = time.monotonic()
            if proc.returncode != 0:
                raise RuntimeError(f"`mycelium up --detach` exited {proc.returncode}: {proc.stderr.read().decode()}")
            ready_s.append(ready_at[0] - t0)
            returned_s.append(t_returned - t0)
        d = cluster.daemons[-1]
        cli_s, api_s = [], []
        for _ in range(calls):
            t0 = time.monotonic()
            res = d.cli("status", "--json")
            cli_s.append(time.monotonic() - t0)
            if res.returncode != 0:
                raise RuntimeError(f"`mycelium status` failed: {res.stderr}")
        for _ in range(calls):
            t0 = time.monotonic()
            d.client.get(protocol.STATUS)
            api_s.append(time.monotonic() - t0)
        api_p50 = percentile(api_s, 50)
        params = {"starts": starts, "env": cluster.env, "fresh_state_dir": True, "listen": LISTEN,
                  "method": "Popen(`up --detach`) while polling /ready every 10 ms over the control socket",
                  "target_s": 0.7}  # issue 15
        figures.append(Figure("up_to_ready_p50", rounded(percentile(ready_s, 50)), "s",
                              {**params, "samples_s": [round(x, 3) for x in ready_s]}))
        figures.append(Figure("up_detach_returns_p50", rounded(percentile(returned_s, 50)), "s",
                              {**params, "samples_s": [round(x, 3) for x in returned_s],
                               "note": "includes the status print `up --detach` does after ready"}))
        figures.append(Figure("cli_status_round_trip_p50", rounded(percentile(cli_s, 50)), "s",
                              {"calls": calls, "p95_s": rounded(percentile(cli_s, 95)),
                               "method": "subprocess `python -m mycelium status --json`, wall time"},
                              baseline("control_api_status_round_trip_p50", rounded(api_p50, 5), "s")))
        figures.append(Figure("control_api_status_round_trip_p50", rounded(api_p50, 5), "s",
                              {"calls": calls, "p95_s": rounded(percentile(api_s, 95), 5),
                               "method": "ControlClient.get('/v1/status') in the bench process"}))
    return figures
