"""Endophyte leases through the real ledger apply: deploy places primary + backups on distinct nodes,
backups report, a dead primary fails over to the newest reported epoch (one primary per generation)."""

from __future__ import annotations

from mycelium.ledger.operations import (OperationError, alive_operation, apply_batch, check_operation,
                                        clock_operation, endophyte_operation)
from tests.unit.test_operations import T0, _join, _keys, founded  # noqa: F401 — the fixture

SPEC = {"process": {"command": ["python3", "examples/endophyte_counter.py"]}, "backups": 2}


def test_endophyte_lease_and_failover_through_the_ledger(founded) -> None:  # noqa: F811
    founder, p = founded
    keys = _keys(3)
    p, _ = _join(p, founder, keys, T0 + 1)
    by_id = {k.node_id: k for k in [founder, *keys]}
    deploy = endophyte_operation(founder, p.network_id, {"action": "deploy", "name": "w", "spec": SPEC}, now_s=T0 + 2)
    bad = endophyte_operation(keys[0], p.network_id, {"action": "deploy", "name": "w", "spec": SPEC}, now_s=T0 + 2)
    try:
        check_operation(bad, p, now_s=T0 + 2)
        raise AssertionError("a non-admin deployed")
    except OperationError as exc:
        assert "not an admin" in str(exc)
    p = apply_batch(p, [clock_operation(founder, p.network_id, now_s=T0 + 2).to_wire(), deploy.to_wire()])
    rec = p.params["endophytes"]["w"]
    assert rec["generation"] == 1 and len(rec["backups"]) == 2 and rec["primary"] not in rec["backups"]
    b1, b2 = rec["backups"]
    reports = [endophyte_operation(by_id[b], p.network_id, {"action": "report", "name": "w", "generation": 1,
                                                            "epoch": e}, now_s=T0 + 3).to_wire()
               for b, e in ((b1, 4), (b2, 6))]
    p = apply_batch(p, [clock_operation(founder, p.network_id, now_s=T0 + 3).to_wire(), *reports])
    assert p.params["endophytes"]["w"]["reports"] == {b1: [1, 4], b2: [1, 6]}
    # the primary falls silent past dead_after_s while the others keep saying they are alive
    primary = rec["primary"]
    assert primary != founder.node_id  # placement is deterministic here; the founder sets the clock below
    t = T0 + 40
    batch = [clock_operation(founder, p.network_id, now_s=t).to_wire()]
    batch += [alive_operation(k, p.network_id, now_s=t).to_wire() for k in [founder, *keys] if k.node_id != primary]
    p = apply_batch(p, batch)
    after = p.params["endophytes"]["w"]
    assert after["generation"] == 2 and after["primary"] == b2 and after["resumed_epoch"] == 6
    assert primary not in after["backups"] and b2 not in after["backups"]
