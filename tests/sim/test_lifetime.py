"""A network's lifetime on the real ledger (mycelium.sim.lifetime): crashes of hours to days, a small
history (pruned every few hours), an attacker replaying applied operations every height, a device
joining late by state sync — every replay refused, the joiner admitted, one identical Primary."""

import pytest

from mycelium.sim.lifetime import Lifetime, LifetimeConfig


def _check(report):
    assert report.ok, report
    assert report.replays_applied == 0 and report.replays_refused > 0
    assert report.state_syncs > 0  # someone was offline longer than the history, or the joiner started bare
    assert report.joiner_admitted and report.identical_at_end


def test_two_days_with_churn_replays_and_a_late_joiner():
    report = Lifetime(LifetimeConfig(days=2, seed=1)).run()
    _check(report)
    assert report.epochs >= 2  # validator-set changes happened (joins warming up, dead seats replaced)


# Seed 1 in every run (about a minute of wall time; the suite runs it beside the real-daemon tests),
# more seeds with --slow.
@pytest.mark.parametrize("seed", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_thirty_days_a_device_joins_on_day_30(seed):
    report = Lifetime(LifetimeConfig(days=31, seed=seed, join_day=30)).run()
    _check(report)
    assert report.joined_day >= 30


def test_a_validator_that_keeps_withholding_is_replaced_and_honest_trust_never_falls_below_the_prior():
    report = Lifetime(LifetimeConfig(days=1, seed=1, withholder=2, join_day=0.5)).run()
    _check(report)
    assert report.withholder_replaced_day is not None  # cut at every height it was up, until its seat moved
    assert report.lowest_honest_validator_trust_ppm >= 500_000  # absence never cuts; honest ones only gain
