"""The benchmark entry point still runs: `python -m bench smoke --json` (tiny parameters: one
daemon start, 3 in-process meshes, one validator, a 10-node simulation) exits 0 and prints only
well-formed figure lines. CI checks that the bench executes, never what the figures are."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
KEYS = {"figure", "value", "unit", "params", "baseline", "machine"}


def _run(*args: str, timeout: float, tmp: Path | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MYCELIUM")}
    if tmp is not None:  # the bench's state dirs go here, so only its own daemons are looked for
        env["TMPDIR"] = str(tmp)
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=env)


def _daemons_under(prefix: str) -> list[str]:
    out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if "mycelium" in line and prefix in line and "ps -eo" not in line]


def test_smoke_prints_well_formed_figures_and_leaves_no_daemon(tmp_path):
    res = _run("smoke", "--json", timeout=600, tmp=tmp_path)  # a hang guard, not a time budget
    assert res.returncode == 0, res.stderr[-3000:]
    lines = [line for line in res.stdout.splitlines() if line.strip()]
    figures = [json.loads(line) for line in lines]  # every stdout line is one JSON object
    names = {f["figure"] for f in figures}
    for expected in ("up_to_ready_p50", "cli_status_round_trip_p50", "latent_propagation_n3_p99",
                     "consensus_height_n1_p50", "consensus_ops_per_s_n1", "sim_virtual_to_real_ratio_n10",
                     "transfer_datachannel_1", "transfer_datachannel_pq_1", "transfer_plain_tcp",
                     "transfer_plain_tcp_2proc", "transfer_datachannel_2proc_1"):
        assert expected in names, f"{expected} missing from {sorted(names)}"
    for f in figures:
        assert set(f) == KEYS, f
        assert isinstance(f["figure"], str) and isinstance(f["unit"], str) and isinstance(f["params"], dict)
        assert f["value"] is None or isinstance(f["value"], (int, float)), f
        assert f["baseline"] is None or set(f["baseline"]) == {"name", "value", "unit"}, f
        assert {"cores", "ram_gib", "python", "platform"} <= set(f["machine"]), f
    assert figures[0]["machine"]["cores"] == os.cpu_count()
    assert _daemons_under(str(tmp_path)) == []  # every daemon the bench started is gone


def test_unknown_figure_is_a_usage_error():
    res = _run("no-such-figure", timeout=30)
    assert res.returncode == 2
    assert "invalid choice" in res.stderr


@pytest.mark.parametrize("values,q,expected", [([], 50, None), ([3.0], 99, 3.0), ([1.0, 2.0, 3.0, 4.0], 50, 2.5),
                                                ([1.0, 2.0, 3.0, 4.0], 100, 4.0), ([5.0, 1.0], 0, 1.0)])
def test_percentile(values, q, expected):
    from bench.report import percentile

    assert percentile(values, q) == expected


def test_pq_bench_interleaves_the_schemes_abba():
    from bench.pq import order

    assert order(1) == ["classic", "pq"]
    assert order(4) == ["classic", "pq", "pq", "classic"] * 2
    assert all(order(5).count(s) == 5 for s in ("classic", "pq"))
