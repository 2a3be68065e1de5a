"""Redundant execution: k assignees, commit-reveal, majority wins, nobody can copy or evict alone."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mycelium.testing.localnet import localnet_key
from mycelium.consensus.redundant import (
    Participant, Refused, Tally, TaskCommitment, TaskError, TaskReveal, make_task,
)
from mycelium.consensus.trust import Outcome

NET = "net-r"
KEYS = {k.node_id: k for k in (localnet_key(7, i) for i in range(8))}
SUBJECT = sorted(KEYS)[0]
CANDIDATES = sorted(KEYS)[1:]


def task(k=5, epoch=1):
    return make_task({"alive": SUBJECT}, epoch, CANDIDATES, k)


def participants(t):
    return {n: Participant(KEYS[n], NET) for n in t.assignees}


def tally(t):
    return Tally(t, NET, commit_deadline=10.0, reveal_deadline=20.0)


def test_assignment_is_deterministic_sized_and_varies_with_the_question():
    a, b = task(), task()
    assert a == b and len(a.assignees) == 5 and set(a.assignees) <= set(CANDIDATES)
    assert SUBJECT not in a.assignees
    assert {task(epoch=e).assignees for e in range(6)} != {a.assignees}, "assignees rotate between epochs"
    with pytest.raises(TaskError):
        make_task("q", 1, CANDIDATES, 99)
    with pytest.raises(TaskError):
        make_task(1.5, 1, CANDIDATES, 1)


def test_majority_wins_and_dissenters_and_withholders_are_reported():
    t = task()
    ps, tl = participants(t), tally(t)
    answers = dict(zip(t.assignees, [True, True, True, False, True]))
    liar = t.assignees[3]
    silent = t.assignees[4]
    for node, p in ps.items():
        assert tl.add_commitment(p.commit(t, answers[node]), 1.0) is None
    assert tl.reveals_open(1.0), "every assignee committed: reveals may start"
    for node, p in ps.items():
        if node != silent:
            assert tl.add_reveal(p.reveal(t), 2.0) is None
    assert tl.verdict(2.0) is None, "one reveal missing and the deadline not reached"
    verdict = tl.verdict(20.0)
    assert verdict.decided and verdict.result is True
    assert verdict.dissented == {liar} and verdict.withheld == {silent}
    outcomes = verdict.trust_outcomes()
    assert outcomes[liar] is Outcome.DISSENT and outcomes[silent] is Outcome.WITHHELD
    assert sum(o is Outcome.AGREE for o in outcomes.values()) == 3


def test_copying_is_impossible_commitments_close_before_reveals():
    t = task()
    ps, tl = participants(t), tally(t)
    early = t.assignees[0]
    tl.add_commitment(ps[early].commit(t, True), 1.0)
    assert tl.add_reveal(ps[early].reveal(t), 1.5) is Refused.EARLY_REVEAL
    assert not tl.reveals_open(5.0)
    assert tl.reveals_open(10.0), "the commit deadline passed"
    copier = t.assignees[1]
    assert tl.add_commitment(ps[copier].commit(t, True), 11.0) is Refused.LATE_COMMITMENT
    assert tl.add_reveal(ps[copier].reveal(t), 11.0) is Refused.NO_COMMITMENT


def test_a_single_node_cannot_evict_another():
    t = task(k=3)
    ps, tl = participants(t), tally(t)
    votes = dict(zip(t.assignees, [False, True, True]))  # one accuser says "dead"
    for n, p in ps.items():
        tl.add_commitment(p.commit(t, votes[n]), 1.0)
    for p in ps.values():
        tl.add_reveal(p.reveal(t), 2.0)
    assert tl.verdict(2.0).result is True


def test_no_strict_majority_means_no_verdict_and_no_dissent_penalty():
    t = task(k=4)
    ps, tl = participants(t), tally(t)
    for n, v in zip(t.assignees, [True, True, False, False]):
        tl.add_commitment(ps[n].commit(t, v), 1.0)
    for p in ps.values():
        tl.add_reveal(p.reveal(t), 2.0)
    verdict = tl.verdict(2.0)
    assert not verdict.decided and verdict.result is None
    assert verdict.trust_outcomes() == {}


def test_forged_wrong_and_mismatched_messages_are_refused():
    t = task()
    ps, tl = participants(t), tally(t)
    a, b = t.assignees[0], t.assignees[1]
    outsider = next(n for n in CANDIDATES if n not in t.assignees)
    good = ps[a].commit(t, True)
    assert tl.add_commitment(TaskCommitment(good.task_id, good.commitment, b, good.signature), 1.0) is Refused.BAD_SIGNATURE
    assert tl.add_commitment(Participant(KEYS[outsider], NET).commit(t, True), 1.0) is Refused.NOT_ASSIGNED
    assert tl.add_commitment(ps[a].commit(task(epoch=9), True), 1.0) in (Refused.WRONG_TASK, Refused.NOT_ASSIGNED)
    assert tl.add_commitment(good, 1.0) is None
    assert tl.add_commitment(good, 1.0) is Refused.DUPLICATE
    assert tl.add_commitment("junk", 1.0) is Refused.MALFORMED
    reveal = ps[a].reveal(t)
    tl.reveals_open(10.0)
    switched = Participant(KEYS[a], NET)
    switched.results[t.task_id] = False  # claims another result than it committed to
    assert tl.add_reveal(switched.reveal(t), 11.0) is Refused.MISMATCH
    assert tl.add_reveal(reveal, 11.0) is Refused.DUPLICATE, "one chance to open a commitment"
    assert tl.add_reveal(TaskReveal(t.task_id, 1.5, b"n", a, b"s"), 11.0) is Refused.MALFORMED
    assert a in tl.verdict(20.0).withheld


@settings(max_examples=60, deadline=None)
@given(answers=st.lists(st.booleans(), min_size=5, max_size=5), shown=st.lists(st.booleans(), min_size=5, max_size=5))
def test_verdict_is_the_strict_majority_of_opened_reveals(answers, shown):
    t = task()
    ps, tl = participants(t), tally(t)
    for n, v in zip(t.assignees, answers):
        tl.add_commitment(ps[n].commit(t, v), 1.0)
    revealed = [v for n, v, s in zip(t.assignees, answers, shown) if s]
    for n, s in zip(t.assignees, shown):
        if s:
            tl.add_reveal(ps[n].reveal(t), 2.0)
    verdict = tl.verdict(20.0)
    for value in (True, False):
        if 2 * revealed.count(value) > 5:
            assert verdict.decided and verdict.result is value
    if all(2 * revealed.count(v) <= 5 for v in (True, False)):
        assert not verdict.decided
    assert len(verdict.withheld) == shown.count(False)
