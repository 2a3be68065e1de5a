"""Daemon memory: RSS/PSS of an idle daemon just after start, and of every daemon of a 10-node
network after it has run for a while; the baseline is a bare `python -c "import libp2p"` process
(what the interpreter plus py-libp2p cost before any code of ours runs).

Measured from outside with psutil.Process(pid).memory_full_info() (PSS needs /proc/<pid>/smaps,
so the same user). PSS splits shared pages between the processes sharing them, so on a machine
running ten daemons it is the fairer per-daemon share; RSS is what one daemon alone would cost.
"""

from __future__ import annotations

import subprocess
import sys
import time

import psutil

from bench.cluster import NO_MDNS_ENV, Cluster, wait_for
from bench.report import Figure, baseline, note, rounded

MIB = 2**20
SETTLE_S = 5.0  # after /ready: let start-up work (probe, first heights) finish before measuring


# the floors an idle daemon is compared with: what the interpreter and the imports alone cost
FLOORS = {
    "bare_python": "pass",
    "bare_import_libp2p": "import libp2p",  # py-libp2p in full, as any program importing it pays
    # what the daemon process imports before it is ready, with py-libp2p trimmed (mycelium.mesh.libp2p_trim)
    "daemon_imports": "import mycelium.cli.main, mycelium.cli.lifecycle, mycelium.daemon, mycelium.session, "
                      "mycelium.mesh.host",
}


def import_rss_mib(code: str) -> tuple[float, float]:
    """(RSS in MiB, wall seconds from spawn to done) of a python process that ran `code` and waits on stdin."""
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-c", f"import sys; {code}; print('ok', flush=True); sys.stdin.read()"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        if proc.stdout.readline().strip() != "ok":
            raise RuntimeError(f"the floor process `{code}` failed to start")
        wall_s = time.monotonic() - t0
        return psutil.Process(proc.pid).memory_info().rss / MIB, wall_s
    finally:
        proc.stdin.close()
        proc.wait(timeout=10)


def bare_libp2p_rss_mib() -> float:
    """RSS of a python process that has imported libp2p and is waiting on stdin."""
    return import_rss_mib(FLOORS["bare_import_libp2p"])[0]


def import_floors() -> list[Figure]:
    """RSS and spawn-to-imported wall time of each floor in FLOORS (one process each, measured once)."""
    figures = []
    for name, code in FLOORS.items():
        rss, wall_s = import_rss_mib(code)
        params = {"code": code, "method": "python -c CODE, then psutil RSS; wall time from spawn to imported"}
        figures += [Figure(f"{name}_rss", rounded(rss, 1), "MiB", params),
                    Figure(f"{name}_wall", rounded(wall_s), "s", params)]
    return figures


def daemon_memory_mib(pid: int) -> tuple[float, float]:
    info = psutil.Process(pid).memory_full_info()
    return info.rss / MIB, info.pss / MIB


def idle_after_start(*, settle_s: float = SETTLE_S) -> list[Figure]:
    libp2p_mib = bare_libp2p_rss_mib()
    with Cluster(env=NO_MDNS_ENV) as cluster:
        d = cluster.new()
        note("memory: one idle daemon")
        d.up()
        time.sleep(settle_s)
        rss, pss = daemon_memory_mib(d.pid())
    params = {"settle_s": settle_s, "env": NO_MDNS_ENV, "network": "personal single-node", "target_mib": 57.2}  # issue 15: 60 MB
    base = baseline("bare_import_libp2p_rss", rounded(libp2p_mib, 1), "MiB")
    return [Figure("daemon_idle_rss", rounded(rss, 1), "MiB", params, base),
            Figure("daemon_idle_pss", rounded(pss, 1), "MiB", params, base)]


def after_running(cluster: Cluster, *, minutes: float) -> list[Figure]:
    """Every daemon of a running network, `minutes` after the call (the network keeps working:
    heartbeat heights, Latent anti-entropy, pings)."""
    libp2p_mib = bare_libp2p_rss_mib()
    pids = [d.pid() for d in cluster.daemons if d.pid() is not None]
    before = [daemon_memory_mib(pid)[0] for pid in pids]
    note(f"memory: {len(pids)} daemons for {minutes} min")
    time.sleep(minutes * 60)
    wait_for(lambda: all(psutil.pid_exists(pid) for pid in pids), timeout_s=1, what="all daemons still alive")
    after = [daemon_memory_mib(pid) for pid in pids]
    rss = [r for r, _ in after]
    pss = [p for _, p in after]
    epoch = cluster.daemons[0].status()["epoch"]
    params = {"nodes": len(pids), "minutes": minutes, "heartbeat_env": cluster.env,
              "rss_at_start_of_wait_mib": [round(x, 1) for x in before],
              "rss_mib": [round(x, 1) for x in rss], "pss_mib": [round(x, 1) for x in pss],
              "epoch_at_end": epoch, "target_mib": 100}
    base = baseline("bare_import_libp2p_rss", rounded(libp2p_mib, 1), "MiB")
    return [Figure("daemon_rss_after_run_max", rounded(max(rss), 1), "MiB", params, base),
            Figure("daemon_rss_after_run_mean", rounded(sum(rss) / len(rss), 1), "MiB", params, base),
            Figure("daemon_pss_after_run_mean", rounded(sum(pss) / len(pss), 1), "MiB", params, base)]
