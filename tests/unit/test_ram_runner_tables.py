"""The Endophyte runner's per-name tables (notes, latency profile) follow the leases in the Primary:
an undeployed Endophyte leaves them, so a node that sees many Endophytes come and go keeps none."""

from __future__ import annotations

from types import SimpleNamespace

import trio

from mycelium.ram.runner import EndophyteRunner


def _runner(leases: dict, state_dir) -> EndophyteRunner:
    head = SimpleNamespace(params={"endophytes": leases})
    session = SimpleNamespace(ledger=SimpleNamespace(head=head), key=SimpleNamespace(node_id="me"),
                              cfg=SimpleNamespace(state_dir=state_dir))
    return EndophyteRunner(session)


def test_notes_and_latency_of_undeployed_endophytes_are_dropped(tmp_path) -> None:
    kept = {"primary": "elsewhere", "generation": 1, "backups": [], "spec": {}, "resumed_epoch": -1}
    runner = _runner({"kept": kept}, tmp_path)
    for name in ("kept", "gone7"):  # and their workdirs on disk: the undeployed one's go
        (tmp_path / "endophytes" / name / "g1").mkdir(parents=True)
    for i in range(1000):  # many Endophytes came and went
        runner.notes[f"gone{i}"] = "could not start: …"
        runner.latency[f"gone{i}"] = "lan"
    runner.notes["kept"], runner.latency["kept"] = "a note", "wan"
    trio.run(runner.converge)
    assert runner.notes == {"kept": "a note"} and runner.latency == {"kept": "wan"}
    assert [p.name for p in (tmp_path / "endophytes").iterdir()] == ["kept"]
