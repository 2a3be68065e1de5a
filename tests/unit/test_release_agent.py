"""Issue 20: what the release agent reports and when it takes its turn, driven through its real
step() over a Primary (the session around it is a stub: a ledger head and a submit that records)."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import pytest
import trio

from mycelium import __version__
from mycelium.config import ReleaseSection
from mycelium.ledger.operations import apply_batch
from mycelium.release import agent as agent_mod
from mycelium.release import switch
from mycelium.release.agent import ReleaseAgent
from mycelium.release.versions import PROTOCOLS
from tests.unit.test_release_core import KEYS, genesis_net, network, publish


def make(tmp_path, head, *, auto=True, root=True):
    sent = []

    async def submit(op):
        sent.append(op.body)

    session = SimpleNamespace(cfg=SimpleNamespace(release=ReleaseSection(auto_upgrade=auto), state_dir=tmp_path),
                              ledger=SimpleNamespace(head=head), key=KEYS[0],
                              membership=SimpleNamespace(network_id=genesis_net()), submit=submit, mesh=None)
    a = ReleaseAgent(session)
    a.root = tmp_path / "prefix" if root else None
    return a, sent


def run(a, times=1):
    async def steps():
        for _ in range(times):
            await a.step()

    trio.run(steps)  # one run: one clock (trio's clock starts anew in every run)


def test_a_member_reports_what_it_runs(tmp_path):
    p = network(2, 2, report=False)
    a, sent = make(tmp_path, p)
    run(a, times=2)  # the second step: not again at once while the Primary does not show it yet
    assert sent == [{"action": "report", "version": __version__, "protocols": PROTOCOLS, "state": "running",
                     "target": "", "reason": ""}]


def test_opted_out_nodes_say_so_and_never_take_a_turn(tmp_path, monkeypatch):
    p = apply_batch(network(1, 1), [publish(f"{__version__}.1").to_wire()])
    taken = []
    monkeypatch.setattr(ReleaseAgent, "_take_turn", lambda self, *a: taken.append(a))
    a, sent = make(tmp_path, p, auto=False)
    run(a)
    assert sent[0]["state"] == "opted_out" and "auto_upgrade = false" in sent[0]["reason"] and not taken
    b, sent_b = make(tmp_path, p, root=False)
    run(b)
    assert sent_b[0]["state"] == "opted_out" and "install.sh" in sent_b[0]["reason"] and not taken


def test_a_node_that_rolled_back_reports_it_and_does_not_retry(tmp_path, monkeypatch):
    target = f"{__version__}.1"
    p = apply_batch(network(1, 1), [publish(target).to_wire()])
    switch.write_json(switch.record_path(tmp_path), {"version": target, "state": "rolled_back",
                                                     "reason": "its health check did not pass within 10 s"})
    taken = []

    async def take(self, *args):
        taken.append(args)

    monkeypatch.setattr(ReleaseAgent, "_take_turn", take)
    a, sent = make(tmp_path, p)
    run(a)
    assert sent[0]["state"] == "rolled_back" and sent[0]["target"] == target and "10 s" in sent[0]["reason"]
    assert not taken
    switch.record_path(tmp_path).unlink()  # without the record it is its turn (the canary of one)
    c, _ = make(tmp_path, p)
    run(c)
    assert len(taken) == 1


def test_on_trial_it_writes_the_health_marker_once_the_chain_moves(tmp_path):
    p = network(1, 1)
    switch.write_json(switch.record_path(tmp_path), {"version": __version__, "state": "trial"})
    a, sent = make(tmp_path, p)
    run(a)
    assert switch.read_json(switch.health_path(tmp_path)) is None and sent == []  # nothing decided since start
    a.session.ledger.head = replace(p, height=p.height + 2)
    run(a)
    marker = switch.read_json(switch.health_path(tmp_path))
    assert marker["version"] == __version__ and sent[-1]["state"] == "healthy"
    assert switch.read_json(switch.record_path(tmp_path))["state"] == "healthy"  # unsupervised: it says so itself


@pytest.fixture(autouse=True)
def _fast(monkeypatch):
    monkeypatch.setattr(agent_mod, "RESUBMIT_S", 60.0)
