"""Post-quantum cost: consensus height latency and quorum-certificate size, classic vs --pq, in the
same run, interleaved.

Method: as bench/consensus.py (n in-process Mesh hosts, the daemon's ConsensusCore + ConsensusDriver
+ PeerQueues over mesh rpc, a saturated toy LedgerApp); the only difference between the two schemes
is the network's signature scheme: Ed25519 (64 B) or hybrid Ed25519 + ML-DSA-65 (3 373 B; sign
≈ 5–7 ms, verify ≈ 1 ms here). Certificate size = canonical bytes of the decided QuorumCertificate.

Interleaving: the `seconds` each scheme gets are cut into `rounds` short runs taken alternately
(classic, pq, pq, classic, classic, pq, …: ABBA, so neither scheme always goes first), so on a shared
machine both see the same load; the heights of a scheme's rounds are pooled (each round drops its
own `warmup` heights). The 1-minute load average is sampled before and after every round and
reported beside the figures (params "load_1m": min / max over the scheme's rounds).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator

import trio

from bench.consensus import run_consensus
from bench.report import Figure, note, percentile, rounded

SCHEMES = ("classic", "pq")


def order(rounds: int) -> list[str]:
    """ABBA order of `rounds` runs per scheme: classic, pq, pq, classic, … (each scheme `rounds` times)."""
    out: list[str] = []
    for r in range(rounds):
        out += list(SCHEMES) if r % 2 == 0 else list(reversed(SCHEMES))
    return out


def measure(*, validators: int = 4, seconds: float = 20.0, warmup: int = 2, batch: int = 16,
            rounds: int = 4) -> Iterator[Figure]:
    """`batch` ops per height: small, so the figure shows what signatures cost per height rather than
    the toy ledger's throughput (bench consensus measures that). `seconds` per scheme in all."""
    rounds = max(1, rounds)
    pooled = {s: {"intervals": [], "certificate_bytes": [], "heights": 0, "load": []} for s in SCHEMES}
    for i, scheme in enumerate(order(rounds)):
        load_before = os.getloadavg()[0]
        note(f"pq: {validators} validator(s), {scheme}, round {i // 2 + 1}/{rounds}, {seconds / rounds:.1f} s, "
             f"load {load_before:.2f}")
        with tempfile.TemporaryDirectory(prefix="mb-pq-") as tmp:
            res = trio.run(lambda: run_consensus(validators, seconds / rounds, warmup, 0, tmp, pq=scheme == "pq",
                                                 batch=batch))
        acc = pooled[scheme]
        acc["intervals"] += res["intervals"]
        acc["certificate_bytes"] += res["certificate_bytes"]
        acc["heights"] += res["heights"]
        acc["load"] += [load_before, os.getloadavg()[0]]
    classic_p50 = percentile(pooled["classic"]["intervals"], 50)
    for scheme, acc in pooled.items():
        p50 = percentile(acc["intervals"], 50)
        params = {"validators": validators, "run_s": seconds, "rounds": rounds, "order": "ABBA interleaved",
                  "heights_decided": acc["heights"], "heights_measured": len(acc["intervals"]),
                  "p95_s": rounded(percentile(acc["intervals"], 95)), "batch_ops": batch,
                  "load_1m": [round(min(acc["load"]), 2), round(max(acc["load"]), 2)],
                  "scheme": "ed25519" if scheme == "classic" else "ed25519+ml-dsa-65",
                  "method": "bench.consensus.run_consensus, both schemes interleaved in one run (see bench/pq.py)"}
        if scheme == "pq" and classic_p50 and p50:
            params["ratio_to_classic"] = rounded(p50 / classic_p50, 2)
        yield Figure(f"pq_consensus_height_{scheme}_n{validators}_p50", rounded(p50), "s", params, None)
        sizes = acc["certificate_bytes"]
        yield Figure(f"pq_certificate_{scheme}_n{validators}_bytes", max(sizes) if sizes else None, "B",
                     {**params, "certificates": len(sizes)}, None)
