"""Post-quantum cost: consensus height latency and quorum-certificate size, classic vs --pq, in the
same run (bench.consensus.run_consensus with the same n, load and duration for both schemes).

Method: as bench/consensus.py (n in-process Mesh hosts, the daemon's ConsensusCore + ConsensusDriver
+ PeerQueues over mesh rpc, a saturated toy LedgerApp); the only difference between the two runs is
the network's signature scheme: Ed25519 (64 B) or hybrid Ed25519 + ML-DSA-65 (3 373 B; sign ≈ 5–7 ms,
verify ≈ 1 ms here). Certificate size = canonical bytes of the decided QuorumCertificate.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator

import trio

from bench.consensus import run_consensus
from bench.report import Figure, note, percentile, rounded


def measure(*, validators: int = 4, seconds: float = 20.0, warmup: int = 2, rtt_calls: int = 20,
            batch: int = 16) -> Iterator[Figure]:
    """`batch` ops per height: small, so the figure shows what signatures cost per height rather than
    the toy ledger's throughput (bench consensus measures that)."""
    results = {}
    for scheme, pq in (("classic", False), ("pq", True)):
        note(f"pq: {validators} validator(s), {scheme}, {seconds:.0f} s")
        with tempfile.TemporaryDirectory(prefix="mb-pq-") as tmp:
            results[scheme] = trio.run(lambda: run_consensus(validators, seconds, warmup, rtt_calls, tmp, pq=pq,
                                                             batch=batch))
    classic_p50 = percentile(results["classic"]["intervals"], 50)
    for scheme, res in results.items():
        p50 = percentile(res["intervals"], 50)
        params = {"validators": validators, "run_s": seconds, "heights_decided": res["heights"],
                  "heights_measured": len(res["intervals"]), "p95_s": rounded(percentile(res["intervals"], 95)),
                  "batch_ops": batch,
                  "scheme": "ed25519" if scheme == "classic" else "ed25519+ml-dsa-65",
                  "method": "bench.consensus.run_consensus, same run for both schemes (see bench/pq.py)"}
        if scheme == "pq" and classic_p50 and p50:
            params["ratio_to_classic"] = rounded(p50 / classic_p50, 2)
        yield Figure(f"pq_consensus_height_{scheme}_n{validators}_p50", rounded(p50), "s", params, None)
        sizes = res["certificate_bytes"]
        yield Figure(f"pq_certificate_{scheme}_n{validators}_bytes", max(sizes) if sizes else None, "B",
                     {**params, "certificates": len(sizes)}, None)
