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
from mycelium.release import rules
from mycelium.release.rollout import plan
from tests.unit.test_release_core import KEYS, genesis_net, network, op, publish


class FakeChain:
    """The ledger's chain as the agent reads it: height -> a link whose certificate holds `signers`."""

    def __init__(self) -> None:
        self.signers: dict[int, set] = {}

    def get(self, height):
        if height not in self.signers:
            return None
        return SimpleNamespace(certificate=SimpleNamespace(height=height, signatures=dict.fromkeys(self.signers[height])))


def make(tmp_path, head, *, auto=True, root=True, key=KEYS[0]):
    sent = []

    async def submit(op):
        sent.append(op.body)

    session = SimpleNamespace(cfg=SimpleNamespace(release=ReleaseSection(auto_upgrade=auto), state_dir=tmp_path),
                              ledger=SimpleNamespace(head=head, chain=FakeChain()), key=key,
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
    assert KEYS[0].node_id in p.validators()
    a.session.ledger.head = replace(p, height=p.height + 2)
    a.session.ledger.chain.signers = {p.height + 1: {"someone else"}, p.height + 2: {"someone else"}}
    run(a)
    assert switch.read_json(switch.health_path(tmp_path)) is None, "caught up, but this validator voted on nothing"
    a.session.ledger.chain.signers[p.height + 2].add(KEYS[0].node_id)
    run(a)
    marker = switch.read_json(switch.health_path(tmp_path))
    assert marker["version"] == __version__ and sent[-1]["state"] == "healthy"
    assert switch.read_json(switch.record_path(tmp_path))["state"] == "healthy"  # unsupervised: it says so itself


def _staging(tmp_path, monkeypatch):
    """An agent on a validator of a 3-node network (2 validators), whose _prepare makes the venv dir
    a real install would (the install itself is switch.install's, tested with real wheels)."""
    prepared = []

    async def prepare(self, head, target):
        venv = self.root / "venvs" / target
        venv.mkdir(parents=True)
        self._installed[target] = venv
        prepared.append(target)

    monkeypatch.setattr(ReleaseAgent, "_prepare", prepare)
    return prepared


def _healthy(p, key, target):
    return apply_batch(p, [op(key, rules.report_body(target, PROTOCOLS, "healthy", target)).to_wire()])


def test_a_release_is_installed_ahead_of_the_turn_only_once_the_canary_proved_it(tmp_path, monkeypatch):
    prepared = _staging(tmp_path, monkeypatch)
    target = f"{__version__}.1"
    published = apply_batch(network(3, 2), [publish(target).to_wire()])
    assert plan(published).canary == KEYS[2].node_id  # the hypha, the only non-validator
    proven = _healthy(published, KEYS[2], target)  # the canary runs it: the validators take turns, one at a time
    waiting = next(k for k in KEYS[:2] if plan(proven).nodes[k.node_id].action == "wait")
    a, sent = make(tmp_path, published, key=waiting)
    run(a)
    assert prepared == [] and sent == []  # the canary has not proved it yet: only the canary installs
    a.session.ledger.head = proven
    run(a, times=2)
    assert prepared == [target] and sent == []  # staged once; nothing reported: its turn has not come


def test_at_most_one_release_is_staged_and_a_failed_or_superseded_one_is_removed(tmp_path, monkeypatch):
    """The agent's per-release state has a bound (one staged venv) that the test reaches: each newer
    release replaces the staged one on disk and in memory; a failed release's venv goes too."""
    prepared = _staging(tmp_path, monkeypatch)
    a, _ = make(tmp_path, None, key=KEYS[1])
    p = network(3, 2)
    for minor in range(1, 5):
        target = f"{__version__}.{minor}"
        p = _healthy(apply_batch(p, [publish(target, min_from=__version__).to_wire()]), KEYS[2], target)
        assert plan(p).nodes[KEYS[1].node_id].action in ("wait", "upgrade")
        a.session.ledger.head = p
        run(a)
        assert list(a._installed) == [target]
        assert sorted(d.name for d in (a.root / "venvs").iterdir()) == [target]
    assert len(prepared) == 4
    p = apply_batch(p, [op(KEYS[0], rules.report_body(__version__, PROTOCOLS, "rolled_back", target, "x")).to_wire()])
    assert plan(p).failed
    a.session.ledger.head = p
    run(a)
    assert a._installed == {} and list((a.root / "venvs").iterdir()) == []


@pytest.fixture(autouse=True)
def _fast(monkeypatch):
    monkeypatch.setattr(agent_mod, "RESUBMIT_S", 60.0)
